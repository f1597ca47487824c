"""PatchEAD (patch-exclusive anomaly detection), Eq. 1-4, on the engine's tiled all-pairs machinery.

Every query patch j gets, per reference image i, a cosine distance to that image's patches
(Eq. 1-2), then the mean over K_P selected references (Eq. 3); the image score is the mean of its
top rho L patch scores (Eq. 4). References are the other images of the batch (batch zero-shot,
K_P = max(1, 0.3 N)) or N normal prompts (few-shot, K_P = 1). In batch mode, known-good references
may also join every batch as reference-only members, as in MuSc (``musc``): each image is compared
with the other N - 1 images and the R references, K_P = max(1, 0.3 (N + R - 1)) over that union,
and the references' own scores (each against the others, itself left out) are returned apart.

The text says "the patch with the maximum distance" and "the top K_P highest-scoring images",
which contradicts its own nearest-neighbour motivation (an anomalous patch is one with no close
match in normal images). Both choices are parameters (``patch_match``, ``image_selection``); the
default is the nearest-neighbour reading. It differs from MuSc's mutual scoring only in these two
rules and the distance (cosine instead of Euclidean on unit vectors, no LNAMD), so it runs through
the same ``msm`` functions and costs the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..settings import PatchEADConfig
from .alignment import align_batch, align_to, patch_coverage, rotated_180, to_original_frames
from .backbones import Backbone
from .features import Features
from .foreground import apply_foreground
from .msm import reference_similarities, top_image_similarities
from .scores import AlignmentReport, BatchScores
from .subsets import split_by_max_size
from .timing import StageTimes


def unit_tokens(stage: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) features -> (N, h*w, C) unit patch tokens (raw embeddings, no aggregation)."""
    return F.normalize(stage.float().flatten(2).transpose(1, 2), dim=-1)


def patch_scores(z: torch.Tensor, cfg: PatchEADConfig, reference: torch.Tensor | None = None,
                 device: torch.device | str | None = None, turned: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1-3 for one feature level: queries (N, M, C) unit tokens -> (N, M) patch scores m_j.

    Without ``reference`` every image is scored against the other N-1 images (batch mode).
    ``turned`` holds the tokens of the references' 180-degree copies (batch mode: of the N images):
    each reference image then offers its copy's patches too, and still counts once among the K_P.
    """
    rules = {"patch_match": cfg.patch_match, "image_selection": cfg.image_selection}
    if reference is None:
        k = max(1, int(cfg.image_fraction * (z.shape[0] - 1)))
        if turned is None:
            best = top_image_similarities(z, k, device=device, **rules)
        else:  # each image against the others with their copies, never against its own copy
            both = torch.cat([z, turned], dim=1)
            others = ~torch.eye(len(z), dtype=torch.bool)
            best = torch.cat([reference_similarities(z[i:i + 1], both[others[i]], k, device=device, **rules)
                              for i in range(len(z))])
    else:
        k = min(cfg.fewshot_images, reference.shape[0])
        refs = reference if turned is None else torch.cat([reference, turned], dim=1)
        best = reference_similarities(z, refs, k, device=device, **rules)
    return (1.0 - best).mean(dim=2)  # cosine distance, Eq. 1, of the kept similarities


def image_scores(patches: torch.Tensor, top_fraction: float) -> torch.Tensor:
    """Eq. 4: (N, M) patch scores -> (N,) mean of each image's top max(1, rho M) patch scores."""
    k = max(1, int(top_fraction * patches.shape[1]))
    return torch.topk(patches, k, dim=1).values.mean(dim=1)


def score_patchead(features: Features, cfg: PatchEADConfig, reference: Features | None = None,
                   device: torch.device | str | None = None, turned: Features | None = None,
                   patch_weights: torch.Tensor | None = None) -> BatchScores:
    """PatchEAD scores of N images: per-patch maps (N, h, w) and image scores (raw and final equal).

    Batch mode scores seeded random batches of at most ``batch_size`` images, with ``reference`` (when
    given) as reference-only members of every batch; few-shot mode scores every image against
    ``reference``. Several feature levels are averaged, as MuSc does.
    ``turned``: features of the references' 180-degree copies (batch mode: of the N images).
    ``patch_weights`` (N, h, w) multiply the patch scores before image scores (alignment: 0 where a
    warp filled the patch in).
    """
    n = len(features)
    _, _, h, w = features.stages[0].shape
    if cfg.mode == "fewshot" and reference is None:
        raise ValueError("few-shot PatchEAD needs reference (normal prompt) features")
    shared = reference if cfg.mode == "batch" else None  # reference-only members of every batch
    r = 0 if shared is None else len(shared)
    if cfg.mode == "batch" and n + r < 2:
        raise ValueError(f"batch zero-shot PatchEAD needs at least 2 images, got {n}")
    if shared is not None and turned is not None:
        raise ValueError("batch PatchEAD with references does not take 180-degree copies (alignment)")
    batches = [torch.arange(n)] if cfg.mode == "fewshot" or n < 2 else [
        torch.as_tensor(b) for b in split_by_max_size(n, cfg.batch_size, cfg.seed)]
    members = features if shared is None else Features.cat([features, shared])
    total = torch.zeros(n + r * len(batches), h * w)  # the scored images, then each batch's references
    for level, stage in enumerate(members.stages):
        z = unit_tokens(stage)
        ref = unit_tokens(reference.stages[level]) if cfg.mode == "fewshot" else None
        copies = None if turned is None else unit_tokens(turned.stages[level])
        for b, batch in enumerate(batches):
            batch_copies = copies[batch] if copies is not None and ref is None else copies  # few-shot: the prompts'
            scored = patch_scores(z[torch.cat([batch, torch.arange(n, n + r)])], cfg, ref, device, batch_copies).cpu()
            total[batch] += scored[:len(batch)]
            total[n + b * r:n + (b + 1) * r] += scored[len(batch):]
    total = (total / len(members.stages)).view(-1, h, w)
    patches = apply_foreground(total[:n], features, cfg.foreground)
    if patch_weights is not None:
        patches = patches * patch_weights
    scores = image_scores(patches.flatten(1), cfg.top_patch_fraction)
    if shared is None:
        return BatchScores(patches, scores, scores)
    known_good = torch.cat([apply_foreground(part, shared, cfg.foreground) for part in total[n:].split(r)])
    return BatchScores(patches, scores, scores,
                       reference_scores=image_scores(known_good.flatten(1), cfg.top_patch_fraction))


def score_images(backbone: Backbone, images: Sequence[np.ndarray] | np.ndarray, cfg: PatchEADConfig,
                 references: np.ndarray | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 timings: StageTimes | None = None) -> BatchScores:
    """PatchEAD(+) from uint8 images (N, S, S, 3): extraction, optional alignment, scoring.

    With ``cfg.align``, batch mode warps every image onto the batch's reference (within the limits of
    ``cfg.alignment``; refused fits keep their image) and scores each against the others and their
    180-degree copies (never against its own copy, which would hide its defects); patches the warp
    filled in are left out and the maps are moved back onto the input images. Few-shot mode warps
    the references onto each query and lets each offer its 180-degree copy's patches too. The copies
    are offered only when alignment accepted a fit (a batch, a query): where nothing was aligned,
    nothing says parts lie turned, and the scores are those without alignment (on textures the
    extra references cost up to 3 image AUROC). The result's ``alignment`` reports the fits.
    ``progress(phase, done, total)`` reports the "features" phase of the queries; ``timings`` collects
    the "align", "extract" and "scoring" stages.
    """
    timings = timings if timings is not None else StageTimes()

    def extract(batch: Sequence[np.ndarray] | np.ndarray, report: Callable[[int], None] | None = None) -> Features:
        with timings.stage("extract", backbone.device):
            return backbone.extract_all(batch, report)

    def score(*args, **kwargs) -> BatchScores:
        with timings.stage("scoring", backbone.device):
            return score_patchead(*args, **kwargs)

    if not cfg.align:
        extract_progress = None if progress is None else (lambda done: progress("features", done, len(images)))
        return score(extract(images, extract_progress), cfg, None if references is None else extract(references))

    def copies(aligned: list[np.ndarray], report: AlignmentReport) -> Features | None:
        return extract([rotated_180(a) for a in aligned]) if report.aligned else None

    if references is None:
        with timings.stage("align"):
            alignments, report = align_batch(list(images), cfg.alignment)
            aligned = [a.image for a in alignments]
        features = extract(aligned)
        result = score(features, cfg, turned=copies(aligned, report),
                       patch_weights=patch_coverage(alignments, tuple(features.stages[0].shape[-2:])))
        return to_original_frames(result, alignments, report)
    parts, reports = [], []
    for done, query in enumerate(images, start=1):
        with timings.stage("align"):
            alignments, report = align_to(list(references), query, cfg.alignment)
            aligned = [a.image for a in alignments]
            reports.append(report)
        parts.append(score(extract(query[None]), cfg, extract(aligned), turned=copies(aligned, report)))
        if progress is not None:
            progress("features", done, len(images))
    scores = torch.cat([p.image_scores for p in parts])
    return BatchScores(torch.cat([p.patch_scores for p in parts]), scores, scores,
                       alignment=AlignmentReport.merge(reports))
