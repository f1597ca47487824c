"""Matching contract: which patches of the other images each patch is compared with in mutual scoring.

Full matching (MuSc, Eq. 1) compares a patch with every patch of every other image (``msm``). A
matcher takes unit tokens (N, M, C) on an (h, w) grid, the resolved ``MatchChoice`` and the scorer's
settings, and returns patch scores (N, M). ``choose_matching`` turns ``musc.match_radius`` into the
choice for one batch. A new matcher is one entry in ``MATCHERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..settings import MuscConfig
from .msm import mutual_scores


@dataclass(frozen=True)
class MatchChoice:
    """The matching one batch was scored with: ``radius`` grid cells around each patch's own position
    (None: every patch of the other images)."""

    radius: int | None = None

    @property
    def matcher(self) -> str:
        return "full" if self.radius is None else "windowed"


Matcher = Callable[[torch.Tensor, tuple[int, int], MatchChoice, MuscConfig, torch.device], torch.Tensor]


def _full(z: torch.Tensor, grid: tuple[int, int], choice: MatchChoice, cfg: MuscConfig,
          device: torch.device) -> torch.Tensor:
    return mutual_scores(z, cfg.topmin_max, cfg.topmin_min, cfg.tile_images, cfg.memory_budget_mb,
                         cfg.matmul_precision, device)


MATCHERS: dict[str, Matcher] = {"full": _full}


def choose_matching(cfg: MuscConfig) -> MatchChoice:
    """The matching of one batch under ``cfg``."""
    return MatchChoice()


def match(z: torch.Tensor, grid: tuple[int, int], choice: MatchChoice, cfg: MuscConfig,
          device: torch.device) -> torch.Tensor:
    """Patch scores (N, M) of unit tokens (N, M, C) on the ``grid`` under ``choice``."""
    return MATCHERS[choice.matcher](z, grid, choice, cfg, device)
