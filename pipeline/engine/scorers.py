"""The one dispatch from a scorer's settings to its code: MuSc or PatchEAD, on features or on images.

A registry keyed by the settings type (as timm keys models by name), so the evaluation command and
the nightly job never branch on the scorer themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..settings import MuscConfig, PatchEADConfig
from . import musc, patchead
from .backbones import Backbone
from .features import Features
from .maps import image_scores
from .musc import ImageScore
from .scores import BatchScores
from .timing import StageTimes

ScorerSettings = MuscConfig | PatchEADConfig
Progress = Callable[[str, int, int], None]
Images = Sequence[np.ndarray] | np.ndarray


@dataclass(frozen=True)
class Scorer:
    """A zero-shot scorer's two entry points."""

    on_features: Callable[[Features, ScorerSettings, torch.device | str, Features | None], BatchScores]
    on_images: Callable[[Backbone, Images, ScorerSettings, np.ndarray | None, Progress | None, ImageScore | None,
                          StageTimes | None], BatchScores]


def _musc_on_images(backbone: Backbone, images: Images, cfg: MuscConfig, references: np.ndarray | None,
                    progress: Progress | None, image_score: ImageScore | None,
                    timings: StageTimes | None) -> BatchScores:
    return musc.score_images(backbone, images, cfg, progress, image_score or image_scores, timings, references)


def _patchead_on_images(backbone: Backbone, images: Images, cfg: PatchEADConfig, references: np.ndarray | None,
                        progress: Progress | None, image_score: ImageScore | None,
                        timings: StageTimes | None) -> BatchScores:
    if image_score is not None:
        raise ValueError("PatchEAD's image score is its own (Eq. 4, the mean of the top patch scores)")
    return patchead.score_images(backbone, images, cfg, references, progress, timings)


SCORERS: dict[type, Scorer] = {
    # the job's subsets: RsCIN on the raw score scale, so scores of different subsets of a group compare
    MuscConfig: Scorer(lambda f, cfg, device, refs: musc.score_features(f, cfg, device, keep_scale=True,
                                                                         references=refs), _musc_on_images),
    PatchEADConfig: Scorer(lambda f, cfg, device, refs: patchead.score_patchead(f, cfg, refs, device=device),
                           _patchead_on_images),
}


def _scorer(settings: ScorerSettings) -> Scorer:
    try:
        return SCORERS[type(settings)]
    except KeyError:
        raise TypeError(f"no scorer is registered for {type(settings).__name__}") from None


def score_features(features: Features, settings: ScorerSettings, device: torch.device | str = "cpu",
                   references: Features | None = None) -> BatchScores:
    """Score the already extracted features of one batch (the nightly job's subsets), with the
    group's ``references`` as reference-only members when given."""
    return _scorer(settings).on_features(features, settings, device, references)


def score_images(backbone: Backbone, images: Images, settings: ScorerSettings,
                 references: np.ndarray | None = None, progress: Progress | None = None,
                 image_score: ImageScore | None = None, timings: StageTimes | None = None) -> BatchScores:
    """Extract and score one batch of uint8 images (evaluation), with the scorer's own options
    (alignment; ``references``: PatchEAD few-shot's prompts, or reference-only members of the batch for
    MuSc and batch PatchEAD); ``progress(phase, done, total)`` as it goes.

    ``image_score`` replaces MuSc's raw image score (the max patch score) with another function of
    the patch scores, before RsCIN; ``timings`` collects the scorer's stages.
    """
    return _scorer(settings).on_images(backbone, images, settings, references, progress, image_score, timings)
