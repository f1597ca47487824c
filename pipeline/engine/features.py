"""The one feature contract every backbone fulfils and every scorer reads.

``Features`` holds per-stage patch grids (B, C, h, w) on one common grid, a unit image embedding
(B, D) for RsCIN and, for ViTs, the last layer's CLS-to-patch attention (foreground masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Features:
    """Multi-stage patch features and image embeddings of a batch of images."""

    stages: list[torch.Tensor]  # each (B, C_l, h, w), one common grid
    embedding: torch.Tensor  # (B, D), unit length
    # (B, h, w): last-layer CLS-to-patch attention averaged over heads (ViTs only; foreground masks)
    attention: torch.Tensor | None = None

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Features:
        attention = None if self.attention is None else self.attention.to(device, dtype)
        return Features([s.to(device, dtype) for s in self.stages], self.embedding.to(device, dtype), attention)

    @staticmethod
    def cat(parts: Sequence[Features]) -> Features:
        if not parts:
            raise ValueError("no features to concatenate")
        n_stages = len(parts[0].stages)
        grids = {tuple(p.stages[0].shape[-2:]) for p in parts}
        if len(grids) > 1:  # mutual scoring compares patches of one grid (windowed matching: cell by cell)
            a, b = sorted(grids)[:2]
            raise ValueError(f"features on different patch grids ({a[0]}x{a[1]} and {b[0]}x{b[1]}) cannot be "
                             "scored together: extract every image of a batch at one image size")
        has_attention = all(p.attention is not None for p in parts)
        return Features(
            [torch.cat([p.stages[i] for p in parts]) for i in range(n_stages)],
            torch.cat([p.embedding for p in parts]),
            torch.cat([p.attention for p in parts]) if has_attention else None,
        )

    def select(self, index: torch.Tensor) -> Features:
        """The features of the images at ``index``."""
        return Features([s[index] for s in self.stages], self.embedding[index],
                        None if self.attention is None else self.attention[index])

    def __len__(self) -> int:
        return self.embedding.shape[0]
