"""Aggregation contract: one stage's patch grid -> the unit tokens that mutual scoring compares.

An aggregation yields one token set per mutual-scoring pass: LNAMD (MuSc, Sec. 3.1) one per degree r,
so a stage costs len(degrees) all-pairs passes; SNAMD (MuSc-V2) one fused set, so a stage costs one.
A new aggregation is one entry in ``AGGREGATIONS``, not a branch in ``musc``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ..settings import MuscConfig
from .lnamd import lnamd
from .snamd import snamd


@dataclass(frozen=True)
class Aggregation:
    """``tokens(stage (N, C, H, W), settings)`` yields unit tokens (N, H*W, C), one per mutual-scoring
    pass; ``passes(degrees)`` says how many it yields (progress totals, the cost model)."""

    tokens: Callable[[torch.Tensor, MuscConfig], Iterator[torch.Tensor]]
    passes: Callable[[Sequence[int]], int]


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
