"""RsCIN: re-scoring with constrained image-level neighbourhoods (MuSc, Sec. 3.3, Eq. 4-5).

A max-of-patches image score is sensitive to local noise, while the global embeddings of two
images that look alike barely move. Each image's score is therefore smoothed over its k most
similar images, for a few small windows k, so an image is called normal only if it and its nearest
neighbours all score low.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def rscin(scores: torch.Tensor, embeddings: torch.Tensor, windows: Sequence[int],
          normalise: bool = True) -> torch.Tensor:
    """Re-score image scores (N,) with unit embeddings (N, D) over kNN windows; returns (N,).

    W = F F^T. For each window k: keep each row's k largest entries (the image itself included),
    row-normalise, and apply to the min-max normalised scores. The result is the mean over windows;
    k = 1 returns the normalised scores themselves, which is Eq. 5's "+ C" term. Windows larger than
    N are clipped to N.

    ``normalise=False`` smooths the scores on their own scale instead. Every smoothing row sums to
    one, so min-max before or after is the same affine map and the order is identical; what changes
    is that scores of different subsets of a group stay comparable (the nightly job needs this).
    """
    if scores.ndim != 1 or embeddings.ndim != 2 or embeddings.shape[0] != scores.shape[0]:
        raise ValueError(f"expected scores (N,) and embeddings (N, D), got {tuple(scores.shape)} and {tuple(embeddings.shape)}")
    if not windows:
        raise ValueError("RsCIN needs at least one window")
    n = scores.shape[0]
    c = scores.double()
    if normalise:
        span = c.max() - c.min()
        c = (c - c.min()) / span if span > 0 else torch.zeros_like(c)
    w = embeddings.double() @ embeddings.double().T
    smoothed = []
    for k in windows:
        k = min(k, n)
        top = torch.topk(w, k, dim=1).indices
        masked = torch.zeros_like(w).scatter_(1, top, w.gather(1, top))
        smoothed.append((masked @ c) / masked.sum(dim=1))
    return torch.stack(smoothed).mean(dim=0).to(scores.dtype)
