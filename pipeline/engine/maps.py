"""Anomaly maps and image scores from patch scores (MuSc, Sec. 3.2 end)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (N, H, W) maps, truncated at 4 sigma, edge-replicate padding."""
    if sigma <= 0:
        return maps
    radius = max(1, math.ceil(4 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = maps.unsqueeze(1)
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return out.squeeze(1)


def anomaly_maps(patch_scores: torch.Tensor, image_size: int | tuple[int, int], sigma: float = 4.0,
                 align_corners: bool = False) -> torch.Tensor:
    """Patch-score grids (N, h, w) -> pixel maps (N, H, W): bilinear upsampling, then optional smoothing.

    ``align_corners=False`` (default) treats each patch score as the value at its patch's centre, so
    the map lines up with the image; True pins the grid's corner patches to the corner pixels, which
    stretches the map by half a patch towards each border (the published MuSc code's choice).
    """
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    maps = F.interpolate(patch_scores.float().unsqueeze(1), size=size, mode="bilinear", align_corners=align_corners)
    return gaussian_blur(maps.squeeze(1), sigma)


def image_scores(patch_scores: torch.Tensor) -> torch.Tensor:
    """Image score c_i = max over the image's patch scores."""
    return patch_scores.flatten(1).amax(dim=1)
