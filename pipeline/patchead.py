"""PatchEAD (patch-exclusive anomaly detection), Eq. 1-4, on the engine's tiled all-pairs machinery.

Every query patch j gets, per reference image i, a cosine distance to that image's patches
(Eq. 1-2), then the mean over K_P selected references (Eq. 3); the image score is the mean of its
top rho L patch scores (Eq. 4). References are the other images of the batch (batch zero-shot,
K_P = max(1, 0.3 N)) or N normal prompts (few-shot, K_P = 1).

The text says "the patch with the maximum distance" and "the top K_P highest-scoring images",
which contradicts its own nearest-neighbour motivation (an anomalous patch is one with no close
match in normal images). Both choices are parameters (``patch_match``, ``image_selection``); the
default is the nearest-neighbour reading. It differs from MuSc's mutual scoring only in these two
rules and the distance (cosine instead of Euclidean on unit vectors, no LNAMD), so it runs through
the same ``msm`` functions and costs the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backbones import Features
from .config import PatchEADConfig
from .foreground import apply_foreground
from .msm import reference_similarities, top_image_similarities
from .musc import MuscResult
from .subsets import split_by_max_size


def unit_tokens(stage: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) features -> (N, h*w, C) unit patch tokens (raw embeddings, no aggregation)."""
    return F.normalize(stage.float().flatten(2).transpose(1, 2), dim=-1)


def patch_scores(z: torch.Tensor, cfg: PatchEADConfig, reference: torch.Tensor | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Eq. 1-3 for one feature level: queries (N, M, C) unit tokens -> (N, M) patch scores m_j.

    Without ``reference`` every image is scored against the other N-1 images (batch mode).
    """
    rules = {"patch_match": cfg.patch_match, "image_selection": cfg.image_selection}
    if reference is None:
        k = max(1, int(cfg.image_fraction * (z.shape[0] - 1)))
        best = top_image_similarities(z, k, device=device, **rules)
    else:
        k = min(cfg.fewshot_images, reference.shape[0])
        best = reference_similarities(z, reference, k, device=device, **rules)
    return (1.0 - best).mean(dim=2)  # cosine distance, Eq. 1, of the kept similarities


def image_scores(patches: torch.Tensor, top_fraction: float) -> torch.Tensor:
    """Eq. 4: (N, M) patch scores -> (N,) mean of each image's top max(1, rho M) patch scores."""
    k = max(1, int(top_fraction * patches.shape[1]))
    return torch.topk(patches, k, dim=1).values.mean(dim=1)


def score_patchead(features: Features, cfg: PatchEADConfig, reference: Features | None = None,
                   device: torch.device | str | None = None) -> MuscResult:
    """PatchEAD scores of N images: per-patch maps (N, h, w) and image scores (raw and final equal).

    Batch mode scores seeded random batches of at most ``batch_size`` images; few-shot mode scores
    every image against ``reference``. Several feature levels are averaged, as MuSc does.
    """
    n = len(features)
    _, _, h, w = features.stages[0].shape
    if cfg.mode == "fewshot" and reference is None:
        raise ValueError("few-shot PatchEAD needs reference (normal prompt) features")
    if cfg.mode == "batch" and n < 2:
        raise ValueError(f"batch zero-shot PatchEAD needs at least 2 images, got {n}")
    batches = [torch.arange(n)] if cfg.mode == "fewshot" else [
        torch.as_tensor(b) for b in split_by_max_size(n, cfg.batch_size, cfg.seed)]
    total = torch.zeros(n, h * w)
    for level, stage in enumerate(features.stages):
        z = unit_tokens(stage)
        ref = unit_tokens(reference.stages[level]) if cfg.mode == "fewshot" else None
        for batch in batches:
            total[batch] += patch_scores(z[batch], cfg, ref, device).cpu()
    patches = apply_foreground((total / len(features.stages)).view(n, h, w), features, cfg.foreground)
    scores = image_scores(patches.flatten(1), cfg.top_patch_fraction)
    return MuscResult(patches, scores, scores)

