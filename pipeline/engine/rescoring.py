"""Re-scoring contract: raw image scores -> final image scores, from what the batch's images look like.

RsCIN (MuSc, Sec. 3.3) smooths each image's score over its most similar images by the global
embedding. A re-scorer gets a ``RescoringInputs`` and the settings; a new one is one entry in
``RESCORERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..settings import MuscConfig
from .features import Features
from .rscin import rscin


@dataclass(frozen=True)
class RescoringInputs:
    """What a re-scorer may read about the batch's N + R members.

    ``tokens(stage)`` gives that stage's aggregated unit tokens (N + R, M, C) again (computed on
    demand: only a re-scorer that reads patch tokens pays for them).
    """

    raw: torch.Tensor  # (N + R,) raw image scores
    patch: torch.Tensor  # (N + R, h, w) patch scores
    members: Features
    tokens: Callable[[int], torch.Tensor]


Rescorer = Callable[[RescoringInputs, MuscConfig, bool], torch.Tensor]


def _rscin(inputs: RescoringInputs, cfg: MuscConfig, normalise: bool) -> torch.Tensor:
    return rscin(inputs.raw, inputs.members.embedding.float().cpu(), cfg.rscin_windows, normalise=normalise)


RESCORERS: dict[str, Rescorer] = {"rscin": _rscin}


def rescore(name: str, inputs: RescoringInputs, cfg: MuscConfig, normalise: bool) -> torch.Tensor:
    """Final image scores (N + R,); the raw scores themselves when re-scoring is off (no windows)."""
    if not cfg.rscin_windows:
        return inputs.raw
    try:
        rescorer = RESCORERS[name]
    except KeyError:
        raise ValueError(f"unknown re-scoring {name!r}; registered: {sorted(RESCORERS)}") from None
    return rescorer(inputs, cfg, normalise)
