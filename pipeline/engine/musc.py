"""The MuSc scorer: features of a batch of unlabeled images -> patch scores, image scores.

Three contracts, each a registry of its own module: the aggregation (``aggregation``: LNAMD, one
pass per degree) gives each stage's token sets, the matching (``matching``: full, or windowed around
each patch's position) scores each set against the other images, and the passes are averaged (Eq. 3);
the image score is the max patch score, re-scored (``rescoring``: RsCIN).

References (known-good images of the product) may join a batch as reference-only members. Every
member, reference or not, is scored exactly as MuSc scores a batch member: its patch distances to
the N + R - 1 other members, the interval average over the smallest ``floor(X (N + R - 1))`` of
them (``msm.interval_bounds`` of the union), the max patch, RsCIN over all N + R embeddings. Only the
N scored images' results are returned as scores; the references' own results are their
leave-one-out scores (``BatchScores.reference_scores``), on the same scale because each was scored
against the same number of others.

Why the union and not two separate averages: MuSc hides a defect that look-alikes on other images
fill the averaged interval with (D look-alikes >= k = X (N - 1), e.g. the same defect on a third of
a batch). Adding R references leaves D unchanged and raises k by X R, so a shared defect is caught
again while D < X (N + R - 1); normal patches, which match normal images and references alike,
hardly move. Past that bound (many defective parts, few references) references no longer help:
the README's reference benchmark shows where.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..settings import MuscConfig
from .alignment import align_batch, patch_coverage, to_original_frames
from .backbones import Backbone
from .features import Features
from .aggregation import aggregation
from .foreground import apply_foreground
from .maps import image_scores
from .matching import choose_matching, match
from .rescoring import RescoringInputs, rescore
from .scores import BatchScores
from .timing import StageTimes

ImageScore = Callable[[torch.Tensor], torch.Tensor]


def score_features(
    features: Features,
    cfg: MuscConfig,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    keep_scale: bool = False,
    patch_weights: torch.Tensor | None = None,
    image_score: ImageScore = image_scores,
    timings: StageTimes | None = None,
    references: Features | None = None,
) -> BatchScores:
    """Run MuSc on the features of N images (N + R >= 2 with R ``references``); results are on the CPU.

    ``progress(done, total)`` counts mutual-scoring passes. ``keep_scale`` re-scores on the raw
    score scale instead of the paper's min-max normalised one (same order within the batch;
    comparable across batches, see ``rscin``). ``patch_weights`` (N, h, w) multiply the patch
    scores before image scores (alignment: 0 where a warp filled the patch in). ``image_score``
    turns the (N, h, w) patch scores into the raw image scores RsCIN re-scores (default: the max
    patch score; an evaluation protocol may take the max of its upsampled maps instead).
    ``timings`` collects the "aggregate", "msm", "maps" (image scores) and "rescoring" stages.
    ``references``: known-good images that join the batch as reference-only members (module
    docstring); ``patch_weights`` cover the N scored images only.
    """
    n = len(features)
    if n < 1 or n + (len(references) if references is not None else 0) < 2:
        raise ValueError(f"MuSc scores images against each other and needs at least 2 images, got {n}")
    device = torch.device(device) if device is not None else features.embedding.device
    timings = timings if timings is not None else StageTimes()
    members = features if references is None else Features.cat([features, references.to(features.embedding.device)])
    count = len(members)
    _, _, h, w = features.stages[0].shape
    aggregate = aggregation(cfg.aggregation)
    choice = choose_matching(cfg, members.stages[-1], device)
    total = torch.zeros(count, h * w, device=device)
    passes = len(members.stages) * aggregate.passes(cfg.aggregation_degrees)
    done = 0
    for stage in members.stages:
        tokens = aggregate.tokens(stage.to(device), cfg)
        while True:
            with timings.stage("aggregate", device):
                z = next(tokens, None)
            if z is None:
                break
            with timings.stage("msm", device):
                total += match(z, (h, w), choice, cfg, device)
            done += 1
            if progress is not None:
                progress(done, passes)
    patch = apply_foreground((total / passes).view(count, h, w).cpu(), members, cfg.foreground)
    if patch_weights is not None:
        patch[:n] *= patch_weights
    with timings.stage("maps"):
        raw = image_score(patch)
    with timings.stage("rescoring"):
        def stage_tokens(index: int) -> torch.Tensor:
            return aggregate.fused(members.stages[index].to(device), cfg)
        inputs = RescoringInputs(raw, patch, members, stage_tokens)
        final = rescore(cfg.rescoring, inputs, cfg, normalise=not keep_scale)
    return BatchScores(patch[:n], raw[:n], final[:n], reference_scores=None if references is None else final[n:],
                       matching=choice)


def score_images(backbone: Backbone, images: Sequence[np.ndarray] | np.ndarray, cfg: MuscConfig,
                 progress: Callable[[str, int, int], None] | None = None,
                 image_score: ImageScore = image_scores, timings: StageTimes | None = None,
                 references: Sequence[np.ndarray] | np.ndarray | None = None) -> BatchScores:
    """MuSc from uint8 images (N, S, S, 3): extraction, optional alignment, scoring.

    ``images`` may be a lazy sequence (images still being read): extraction takes them in order.
    With ``cfg.align`` the images are warped onto the batch's reference before extraction (fits
    ``cfg.alignment`` refuses leave their image as it is; the result's ``alignment`` reports them);
    patches a warp filled in get weight 0 before image scores and RsCIN, and the maps are moved back
    onto the input images. ``progress(phase, done, total)`` reports the "features" and "scoring" phases;
    ``timings`` collects "align", "extract" and the stages of ``score_features``. ``references``
    (uint8, known-good) join the batch as reference-only members; not with alignment.
    """
    timings = timings if timings is not None else StageTimes()
    extract_progress = None if progress is None else (lambda done: progress("features", done, len(images)))
    score_progress = None if progress is None else (lambda done, total: progress("scoring", done, total))
    if not cfg.align:
        with timings.stage("extract", backbone.device):
            features = backbone.extract_all(images, extract_progress)
            known_good = None if references is None else backbone.extract_all(references)
        return score_features(features, cfg, backbone.device, score_progress, image_score=image_score,
                              timings=timings, references=known_good)
    if references is not None:
        raise ValueError("MuSc with alignment warps a batch onto its first image; references are not supported there")
    with timings.stage("align"):
        alignments, report = align_batch(list(images), cfg.alignment)
    with timings.stage("extract", backbone.device):
        features = backbone.extract_all([a.image for a in alignments], extract_progress)
    weights = patch_coverage(alignments, tuple(features.stages[0].shape[-2:]))
    result = score_features(features, cfg, backbone.device, score_progress, patch_weights=weights,
                            image_score=image_score, timings=timings)
    return to_original_frames(result, alignments, report)
