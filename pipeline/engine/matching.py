"""Matching contract: which patches of the other images each patch is compared with in mutual scoring.

Full matching (MuSc, Eq. 1) compares a patch with every patch of every other image (``msm``);
windowed matching only with those within ``radius`` grid cells of its own position (``windowed_msm``:
fixtured parts). A matcher takes unit tokens (N, M, C) on an (h, w) grid, the resolved
``MatchChoice`` and the scorer's settings, and returns patch scores (N, M). A new matcher is one
entry in ``MATCHERS``.

``choose_matching`` turns ``musc.match_radius`` into the choice for one batch. ``auto`` decides
without labels whether the batch is aligned enough for a radius: on a few images of the batch, full
matching's nearest patch of each patch in each other image, and how far (Chebyshev, in grid cells)
it lies from the patch's own position. When the parts sit in the same place, nearly all nearest
patches lie at (or next to) the same cell, and a radius loses nothing a look-alike elsewhere would
give; when the pose varies, they scatter. The smallest candidate radius within which at least
``min_aligned_fraction`` of them lie is chosen, else full matching.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..settings import MuscConfig
from .msm import mutual_scores, resolve_matmul_dtype
from .windowed_msm import windowed_mutual_scores


@dataclass(frozen=True)
class MatchChoice:
    """The matching one batch was scored with: ``radius`` grid cells around each patch's own position
    (None: every patch of the other images). ``aligned_fraction`` (``auto`` only): per candidate radius,
    the fraction of the sampled nearest patches that lay within it; ``sampled``: images it was measured on."""

    radius: int | None = None
    aligned_fraction: dict[int, float] | None = None
    sampled: int = 0

    @property
    def matcher(self) -> str:
        return "full" if self.radius is None else "windowed"

    def as_dict(self) -> dict[str, object]:
        """The choice for ``metrics.json`` and the job's group summary."""
        out: dict[str, object] = {"matcher": self.matcher, "radius": self.radius}
        if self.aligned_fraction is not None:
            out["aligned_fraction"] = {str(r): round(f, 4) for r, f in self.aligned_fraction.items()}
            out["sampled_images"] = self.sampled
        return out

    def line(self) -> str:
        """One console line, e.g. "matching: radius 1 (auto: within 0/1/2 cells 0.81/0.97/0.99 of 6 images)"."""
        what = "full" if self.radius is None else f"radius {self.radius}"
        if self.aligned_fraction is None:
            return f"matching: {what}"
        cells = "/".join(str(r) for r in self.aligned_fraction)
        fractions = "/".join(f"{f:.2f}" for f in self.aligned_fraction.values())
        return f"matching: {what} (auto: nearest patches within {cells} cells {fractions} of {self.sampled} images)"


Matcher = Callable[[torch.Tensor, tuple[int, int], MatchChoice, MuscConfig, torch.device], torch.Tensor]


def _full(z: torch.Tensor, grid: tuple[int, int], choice: MatchChoice, cfg: MuscConfig,
          device: torch.device) -> torch.Tensor:
    return mutual_scores(z, cfg.topmin_max, cfg.topmin_min, cfg.tile_images, cfg.memory_budget_mb,
                         cfg.matmul_precision, device)


def _windowed(z: torch.Tensor, grid: tuple[int, int], choice: MatchChoice, cfg: MuscConfig,
              device: torch.device) -> torch.Tensor:
    return windowed_mutual_scores(z, grid, choice.radius, cfg.topmin_max, cfg.topmin_min, cfg.tile_images,
                                  cfg.memory_budget_mb, cfg.matmul_precision, device)


MATCHERS: dict[str, Matcher] = {"full": _full, "windowed": _windowed}


def nearest_displacement_fractions(stage: torch.Tensor, radii: list[int], sample: int,
                                   matmul_precision: str = "auto",
                                   device: torch.device | str | None = None) -> tuple[dict[int, float], int]:
    """Per radius, the fraction of full matching's nearest patches that lie within it of the patch's
    own cell, over every ordered pair of ``sample`` images evenly spaced over the batch (one stage's
    raw features (N, C, h, w), as unit tokens). Each unordered pair is one matmul: its row maxima
    are one direction, its column maxima the other. Returns the fractions and the images used."""
    n, _, h, w = stage.shape
    device = torch.device(device) if device is not None else stage.device
    picked = torch.linspace(0, n - 1, min(sample, n)).round().long().unique()
    z = F.normalize(stage[picked].to(device).flatten(2).transpose(1, 2).float(), dim=-1)
    z = z.to(resolve_matmul_dtype(matmul_precision, device))
    rows = torch.arange(h * w, device=device) // w
    cols = torch.arange(h * w, device=device) % w
    distances = []
    for a in range(len(z)):
        for b in range(a + 1, len(z)):
            sim = z[a] @ z[b].T
            for nearest in (sim.argmax(dim=1), sim.argmax(dim=0)):  # a's patches in b, b's in a
                distances.append(torch.maximum((rows - rows[nearest]).abs(), (cols - cols[nearest]).abs()))
    d = torch.cat(distances)
    return {r: float((d <= r).float().mean()) for r in radii}, len(z)


def choose_matching(cfg: MuscConfig, stage: torch.Tensor | None = None,
                    device: torch.device | str | None = None) -> MatchChoice:
    """The matching of one batch under ``cfg``; ``auto`` measures it on ``stage`` (N, C, h, w), the
    raw features of one stage of the batch's members."""
    if cfg.match_radius != "auto":
        return MatchChoice(cfg.match_radius)
    if stage is None:
        raise ValueError("match_radius 'auto' measures the batch: pass one stage's features")
    auto = cfg.auto_match
    fractions, sampled = nearest_displacement_fractions(stage, auto.radii, auto.sample_images,
                                                        cfg.matmul_precision, device)
    safe = [r for r in auto.radii if fractions[r] >= auto.min_aligned_fraction]
    return MatchChoice(min(safe) if safe else None, fractions, sampled)


def match(z: torch.Tensor, grid: tuple[int, int], choice: MatchChoice, cfg: MuscConfig,
          device: torch.device) -> torch.Tensor:
    """Patch scores (N, M) of unit tokens (N, M, C) on the ``grid`` under ``choice``."""
    return MATCHERS[choice.matcher](z, grid, choice, cfg, device)
