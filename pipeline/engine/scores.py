"""The one result type of every zero-shot scorer: what a batch of images scored."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BatchScores:
    """Scores of one batch (a subset) of images, on the CPU.

    ``image_scores_raw`` is the scorer's own image score (MuSc: the max patch score; PatchEAD: the
    mean of the top patches); ``image_scores`` is the final one (MuSc: after RsCIN; equal to raw
    when there is no re-scoring).
    """

    patch_scores: torch.Tensor  # (N, h, w) fp32
    image_scores_raw: torch.Tensor  # (N,)
    image_scores: torch.Tensor  # (N,)
