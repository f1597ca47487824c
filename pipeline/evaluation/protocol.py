"""Evaluation protocols: the choices between patch scores and the metrics table on which published
evaluations differ, each a named, fixed set.

``project`` (the default) holds this project's corrected choices; ``paper`` reproduces the published
MuSc code (xrli-U/MuSc), so a run with the paper's backbone and weights gives the paper's table.
On identical patch scores the two differ in:

1. upsampling: bilinear with ``align_corners=False`` (a patch score sits at its patch's centre) or
   ``True`` (corner patches pinned to the corner pixels: the map is stretched by half a patch);
2. smoothing: a Gaussian of the scorer's ``gaussian_sigma``, or none (the published code has none);
3. MuSc's image score (before RsCIN): the max over the patch grid, or the max of the upsampled map
   (with align_corners=True the map misses interior grid points, so it is lower);
4. masks: nearest neighbour (the true defect area), or bilinear on the stored grey values keeping
   the pixels that stay 255 (MVTec AD, BTAD, MPDD: eroded) or that are above 0 (VisA: dilated);
5. AU-PRO: every histogram threshold up to FPR 0.3, divided by 0.3, or the published 200-threshold
   integration (``metrics.published_au_pro``).

Both keep the same pixel AUROC / AP / F1-max (binned, ``metrics.PixelMetrics``) and image metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..data.images import MaskResize
from ..engine.maps import anomaly_maps
from ..engine.musc import ImageScore
from .metrics import AuProRule

ProtocolName = Literal["project", "paper"]


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol: how maps, image scores, masks and AU-PRO are made."""

    name: ProtocolName
    align_corners: bool  # of the bilinear map upsampling
    smoothing: bool  # apply the scorer's gaussian_sigma to the maps
    image_score_from_map: bool  # MuSc's raw image score: max of the map (True) or of the patch grid
    masks: MaskResize  # MVTec AD, BTAD, MPDD
    visa_masks: MaskResize
    au_pro: AuProRule
    summary: str  # one line for the results tables

    def maps(self, patch_scores: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
        """(N, h, w) patch scores -> (N, size, size) anomaly maps under this protocol."""
        return anomaly_maps(patch_scores, size, sigma if self.smoothing else 0.0, self.align_corners)

    def image_score(self, size: int, sigma: float) -> ImageScore | None:
        """MuSc's raw image score under this protocol; None leaves the scorer's own (max patch score)."""
        if not self.image_score_from_map:
            return None
        return lambda patch_scores: self.maps(patch_scores, size, sigma).flatten(1).amax(dim=1)

    def mask_resampling(self, layout: str) -> MaskResize:
        """How the ground-truth masks of a dataset layout are resized to the maps."""
        return self.visa_masks if layout == "visa" else self.masks


PROTOCOLS: dict[str, Protocol] = {
    "project": Protocol(
        "project", align_corners=False, smoothing=True, image_score_from_map=False, masks="nearest",
        visa_masks="nearest", au_pro="histogram",
        summary="maps bilinear (align_corners=False) + Gaussian smoothing, image score = max patch score, "
                "masks nearest, AU-PRO over all thresholds to FPR 0.3 / 0.3"),
    "paper": Protocol(
        "paper", align_corners=True, smoothing=False, image_score_from_map=True, masks="bilinear_full",
        visa_masks="bilinear_any", au_pro="published",
        summary="published MuSc code: maps bilinear (align_corners=True), no smoothing, image score = max of "
                "the map, masks bilinear kept at 255 (VisA: > 0), AU-PRO over 200 thresholds, FPR < 0.3 "
                "rescaled to [0, 1]"),
}
