"""The one result type of every zero-shot scorer: what a batch of images scored, and how it was aligned."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .matching import MatchChoice

# |angle| bins (degrees) of the accepted fits in reports
ANGLE_BINS = (0, 5, 15, 45, 90, 180)


@dataclass(frozen=True)
class AlignmentReport:
    """What alignment did to a batch (or a whole run, ``merge``): images warped, fits refused (by the
    check that refused them: inliers, inlier_ratio, scale, angle, no_gain; batch: accepted, but too
    few of the batch were), images with nothing to fit (too few keypoints or matches), and the
    angles of the warps. A reference is not counted."""

    aligned: int = 0
    skipped: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    angles: tuple[float, ...] = ()

    @classmethod
    def of(cls, outcomes: Sequence[tuple[str, float]]) -> AlignmentReport:
        """From (outcome, angle) per fitted image; outcome "aligned", "skipped" or a refusing check."""
        counts = Counter(outcome for outcome, _ in outcomes)
        return cls(counts.pop("aligned", 0), counts.pop("skipped", 0), dict(sorted(counts.items())),
                   tuple(angle for outcome, angle in outcomes if outcome == "aligned"))

    @classmethod
    def merge(cls, reports: Iterable[AlignmentReport]) -> AlignmentReport:
        reports = list(reports)
        rejected = Counter()
        for r in reports:
            rejected.update(r.rejected)
        return cls(sum(r.aligned for r in reports), sum(r.skipped for r in reports), dict(sorted(rejected.items())),
                   tuple(a for r in reports for a in r.angles))

    def angle_histogram(self) -> dict[str, int]:
        """Accepted fits per |angle| bin, e.g. {"0-5": 12, "5-15": 3, ...}."""
        counts, _ = np.histogram(np.abs(self.angles), bins=ANGLE_BINS)
        return {f"{lo}-{hi}": int(c) for lo, hi, c in zip(ANGLE_BINS, ANGLE_BINS[1:], counts)}

    def as_dict(self) -> dict[str, object]:
        """The report for ``metrics.json``."""
        return {"aligned": self.aligned, "rejected": sum(self.rejected.values()), "rejected_by": self.rejected,
                "skipped": self.skipped, "angle_histogram": self.angle_histogram()}

    def line(self) -> str:
        """One console line, e.g. "alignment: 17 aligned, 3 rejected (angle 2, no_gain 1), 1 skipped; ..."."""
        why = ", ".join(f"{k} {v}" for k, v in self.rejected.items())
        angles = ", ".join(f"{k} {v}" for k, v in self.angle_histogram().items())
        return (f"alignment: {self.aligned} aligned, {sum(self.rejected.values())} rejected"
                f"{f' ({why})' if why else ''}, {self.skipped} skipped; |angle| in degrees {angles}")


@dataclass
class BatchScores:
    """Scores of one batch (a subset) of images, on the CPU.

    ``image_scores_raw`` is the scorer's own image score (MuSc: the max patch score; PatchEAD: the
    mean of the top patches); ``image_scores`` is the final one (MuSc: after RsCIN; equal to raw
    when there is no re-scoring). ``alignment`` says what alignment did (None: not asked for).
    ``reference_scores`` are the final scores of the batch's reference-only members (known-good
    images scored as if they were one of the batch, themselves left out): never rows, but what a
    flag threshold calibrated on the references reads. ``matching`` is the matching MuSc chose for
    the batch (``match_radius``, with ``auto``'s statistic).
    """

    patch_scores: torch.Tensor  # (N, h, w) fp32
    image_scores_raw: torch.Tensor  # (N,)
    image_scores: torch.Tensor  # (N,)
    alignment: AlignmentReport | None = None
    reference_scores: torch.Tensor | None = None  # (R,) MuSc; (R x batches,) PatchEAD; None without references
    matching: MatchChoice | None = None  # MuSc: the batch's matching (match_radius); None: PatchEAD
