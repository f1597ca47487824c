"""The MuSc scorer: features of a batch of unlabeled images -> patch scores, image scores.

LNAMD (``lnamd``) and mutual scoring (``msm``) run for every (stage, degree) pair and are averaged
(Eq. 3); the image score is the max patch score, re-scored by RsCIN (``rscin``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .anomaly_maps import image_scores
from .backbones import Features
from .config import MuscConfig
from .foreground import apply_foreground
from .lnamd import lnamd
from .msm import mutual_scores
from .rscin import rscin


@dataclass
class MuscResult:
    """Scores of one batch (subset) of images."""

    patch_scores: torch.Tensor  # (N, h, w) fp32: mean interval-averaged distance per patch
    image_scores_raw: torch.Tensor  # (N,) max patch score
    image_scores: torch.Tensor  # (N,) after RsCIN (equal to raw when RsCIN is disabled)


def score_features(
    features: Features,
    cfg: MuscConfig,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    keep_scale: bool = False,
    patch_weights: torch.Tensor | None = None,
) -> MuscResult:
    """Run MuSc on the features of N >= 2 images; results are on the CPU.

    ``progress(done, total)`` counts (stage, degree) pairs. ``keep_scale`` re-scores on the raw
    score scale instead of the paper's min-max normalised one (same order within the batch;
    comparable across batches, see ``rscin``). ``patch_weights`` (N, h, w) multiply the patch
    scores before image scores (alignment: 0 where a warp filled the patch in).
    """
    n = len(features)
    if n < 2:
        raise ValueError(f"MuSc scores images against each other and needs at least 2 images, got {n}")
    device = torch.device(device) if device is not None else features.embedding.device
    _, _, h, w = features.stages[0].shape
    total = torch.zeros(n, h * w, device=device)
    pairs = [(stage, r) for stage in features.stages for r in cfg.aggregation_degrees]
    for done, (stage, degree) in enumerate(pairs, start=1):
        z = lnamd(stage.to(device), degree)
        total += mutual_scores(
            z, cfg.topmin_max, cfg.topmin_min, cfg.tile_images, cfg.memory_budget_mb, cfg.matmul_precision, device
        )
        if progress is not None:
            progress(done, len(pairs))
    patch = apply_foreground((total / len(pairs)).view(n, h, w).cpu(), features, cfg.foreground)
    if patch_weights is not None:
        patch = patch * patch_weights
    raw = image_scores(patch)
    final = rscin(raw, features.embedding.float().cpu(), cfg.rscin_windows, normalise=not keep_scale) if cfg.rscin_windows else raw
    return MuscResult(patch, raw, final)
