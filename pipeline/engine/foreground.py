"""Foreground masks from a ViT's attention (PatchEAD+ visual prompt), for any patch scorer.

Background patches (a table, a conveyor belt) vary from photo to photo, so zero-shot scorers call
them anomalous. The last layer's CLS token attends mostly to the object: normalised to [0, 1] per
image, patches above a small threshold are foreground; the others keep only a fraction of their
score. The scorer multiplies its patch scores by these weights before taking image scores.
"""

from __future__ import annotations

import torch

from ..settings import ForegroundConfig
from .features import Features


def foreground_weights(attention: torch.Tensor, threshold: float = 0.05, background_weight: float = 0.5) -> torch.Tensor:
    """(B, h, w) attention -> (B, h, w) weights: 1 where the min-max normalised attention exceeds
    ``threshold``, ``background_weight`` elsewhere (a constant map is all foreground)."""
    flat = attention.flatten(1).float()
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    normalised = torch.where(high > low, (flat - low) / (high - low).clamp_min(1e-12), torch.ones_like(flat))
    weights = torch.where(normalised > threshold, 1.0, background_weight)
    return weights.view_as(attention)


def apply_foreground(patch_scores: torch.Tensor, features: Features, cfg: ForegroundConfig) -> torch.Tensor:
    """Patch scores (B, h, w) weighted by the foreground mask when enabled."""
    if not cfg.enabled:
        return patch_scores
    if features.attention is None:
        raise ValueError("the foreground mask needs a ViT backbone (CLS attention); this backbone has none")
    if features.attention.shape != patch_scores.shape:
        raise ValueError(f"attention {tuple(features.attention.shape)} and patch scores "
                         f"{tuple(patch_scores.shape)} are on different grids")
    return patch_scores * foreground_weights(features.attention, cfg.threshold, cfg.background_weight)
