"""Re-scoring contract: raw image scores -> final image scores, from what the batch's images look like.

RsCIN (MuSc, Sec. 3.3) smooths each image's score over its most similar images by the global
embedding; RsCon (MuSc-V2) does the same smoothing by each image's anomaly-salient token. A re-scorer
is one entry in ``RESCORERS``: which windows it reads and how it re-scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..settings import MuscConfig
from .features import Features
from .rscin import rscin

# RsCon's stage: the second-to-last, as the published code takes (ViT layers 3, 7, 11 -> 7): the last
# stage is the most global (images of one product look alike there), the earlier ones see texture.
SALIENT_STAGE = -2


@dataclass(frozen=True)
class RescoringInputs:
    """What a re-scorer may read about the batch's N + R members.

    ``tokens(stage)`` gives that stage's aggregated unit tokens (N + R, M, C), one fused set
    (``Aggregation.fused``), computed on demand: only a re-scorer that reads patch tokens pays for them.
    """

    raw: torch.Tensor  # (N + R,) raw image scores
    patch: torch.Tensor  # (N + R, h, w) patch scores
    members: Features
    tokens: Callable[[int], torch.Tensor]


@dataclass(frozen=True)
class Rescorer:
    """``windows(settings)``: the kNN windows it smooths over (null or []: re-scoring off);
    ``rescore(inputs, windows, normalise)``: final scores (N + R,)."""

    windows: Callable[[MuscConfig], list[int] | None]
    rescore: Callable[[RescoringInputs, Sequence[int], bool], torch.Tensor]


def salient_tokens(inputs: RescoringInputs, stage: int = SALIENT_STAGE) -> torch.Tensor:
    """Each member's anomaly-salient feature (N + R, C): its ``stage`` token at its highest-scoring patch
    (with a single stage, that one)."""
    tokens = inputs.tokens(stage % len(inputs.members.stages))
    best = inputs.patch.flatten(1).argmax(dim=1).to(tokens.device)
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), best]


def _rscin(inputs: RescoringInputs, windows: Sequence[int], normalise: bool) -> torch.Tensor:
    return rscin(inputs.raw, inputs.members.embedding.float().cpu(), windows, normalise=normalise)


def _rscon(inputs: RescoringInputs, windows: Sequence[int], normalise: bool) -> torch.Tensor:
    # the published code always adds window 1 (the image's own score is one of the averaged terms)
    windows = list(windows) if 1 in windows else [*windows, 1]
    return rscin(inputs.raw, salient_tokens(inputs).float().cpu(), windows, normalise=normalise)


RESCORERS: dict[str, Rescorer] = {
    "rscin": Rescorer(lambda cfg: cfg.rscin_windows, _rscin),
    "rscon": Rescorer(lambda cfg: cfg.rscon_windows, _rscon),
}


def rescore(name: str, inputs: RescoringInputs, cfg: MuscConfig, normalise: bool) -> torch.Tensor:
    """Final image scores (N + R,); the raw scores themselves when re-scoring is off (no windows)."""
    try:
        rescorer = RESCORERS[name]
    except KeyError:
        raise ValueError(f"unknown re-scoring {name!r}; registered: {sorted(RESCORERS)}") from None
    windows = rescorer.windows(cfg)
    return rescorer.rescore(inputs, windows, normalise) if windows else inputs.raw
