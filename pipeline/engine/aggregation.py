"""Aggregation contract: one stage's patch grid -> the unit tokens that mutual scoring compares.

An aggregation yields one token set per mutual-scoring pass: LNAMD (MuSc, Sec. 3.1) one per degree r,
so a stage costs len(degrees) all-pairs passes; SNAMD (MuSc-V2) one fused set, so a stage costs one.
A new aggregation is one entry in ``AGGREGATIONS``, not a branch in ``musc``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..settings import MuscConfig
from .lnamd import lnamd
from .snamd import snamd


@dataclass(frozen=True)
class Aggregation:
    """``tokens(stage (N, C, H, W), settings)`` yields unit tokens (N, H*W, C), one per mutual-scoring
    pass; ``passes(degrees)`` says how many it yields (progress totals, the cost model)."""

    tokens: Callable[[torch.Tensor, MuscConfig], Iterator[torch.Tensor]]
    passes: Callable[[Sequence[int]], int]

    def fused(self, stage: torch.Tensor, cfg: MuscConfig) -> torch.Tensor:
        """One unit token set (N, H*W, C) for the stage: the mean of its passes' tokens, L2-normalised
        (SNAMD's own set; LNAMD's degrees averaged). What a re-scorer reads of a stage's patches."""
        total: torch.Tensor | None = None
        for z in self.tokens(stage, cfg):
            total = z if total is None else total.add_(z)
        return F.normalize(total, dim=-1)


def _lnamd_tokens(stage: torch.Tensor, cfg: MuscConfig) -> Iterator[torch.Tensor]:
    for degree in cfg.aggregation_degrees:
        yield lnamd(stage, degree)


def _snamd_tokens(stage: torch.Tensor, cfg: MuscConfig) -> Iterator[torch.Tensor]:
    yield snamd(stage, cfg.aggregation_degrees, cfg.snamd_temperature)


AGGREGATIONS: dict[str, Aggregation] = {
    "lnamd": Aggregation(_lnamd_tokens, len),  # one pass per degree, averaged by Eq. 3
    "snamd": Aggregation(_snamd_tokens, lambda degrees: 1),  # the degrees fused before scoring
}


def aggregation(name: str) -> Aggregation:
    """The registered aggregation called ``name``."""
    try:
        return AGGREGATIONS[name]
    except KeyError:
        raise ValueError(f"unknown aggregation {name!r}; registered: {sorted(AGGREGATIONS)}") from None
