"""The one result type of every zero-shot scorer: what a batch of images scored."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BatchScores:
    """Scores of one batch (a subset) of images, on the CPU.

    ``image_scores_raw`` is the scorer's own image score (MuSc: the max patch score; PatchEAD: the
    mean of the top patches); ``image_scores`` is the final one (MuSc: after RsCIN; equal to raw
    when there is no re-scoring). ``reference_scores`` are the final scores of the batch's
    reference-only members (known-good images scored as if they were one of the batch, themselves
    left out): never rows, but what a flag threshold calibrated on the references reads.
    """

    patch_scores: torch.Tensor  # (N, h, w) fp32
    image_scores_raw: torch.Tensor  # (N,)
    image_scores: torch.Tensor  # (N,)
    reference_scores: torch.Tensor | None = None  # (R,) MuSc; (R x batches,) PatchEAD; None without references
