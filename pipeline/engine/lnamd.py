"""LNAMD: Local Neighborhood Aggregation with Multiple Degrees (MuSc, Sec. 3.1).

A patch token alone sees one patch; averaging it with its r x r neighbours lets defects of
different sizes stand out at different degrees r. Per stage: LayerNorm over (C, H, W) without
affine parameters, average each token with its r x r neighbourhood (stride 1, zero padding r//2,
padded zeros counted, i.e. ``avg_pool2d(count_include_pad=True)``), then L2-normalise each token so
mutual scoring can use dot products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lnamd(stage: torch.Tensor, degree: int) -> torch.Tensor:
    """Aggregate one stage's feature grid (N, C, H, W) at degree r -> unit tokens (N, H*W, C), fp32."""
    if stage.ndim != 4:
        raise ValueError(f"expected a feature grid (N, C, H, W), got shape {tuple(stage.shape)}")
    if degree < 1 or degree % 2 == 0:
        raise ValueError(f"aggregation degree must be an odd positive integer, got {degree}")
    x = stage.float()
    x = F.layer_norm(x, x.shape[1:])
    if degree > 1:
        x = F.avg_pool2d(x, kernel_size=degree, stride=1, padding=degree // 2, count_include_pad=True)
    x = x.flatten(2).transpose(1, 2)
    return F.normalize(x, dim=-1)
