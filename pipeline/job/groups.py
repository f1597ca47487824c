"""The nightly job's last stage: per-group statistics once every scored batch of a group exists.

For one group this ranks the scores, applies the flag policy, draws heat maps on one colour scale,
computes the engine's metrics when the inputs carry labels, and writes the group's rows of the
scores table: one row per input image of the group, scored or not (decode errors, groups too small
to compare). The group's summary object is written last and is the group's completion marker: a
re-run skips groups that have one, and a retried task rewrites the same objects.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.images import UnreadableImage, fetch_image, fetch_mask, resize_mask
from ..engine.maps import anomaly_maps
from ..evaluation.metrics import PixelMetrics, image_metrics, metrics_row
from ..reporting.heatmaps import Caption, HeatmapRenderer
from ..storage import read_bytes, write_bytes
from .faults import crash_point
from .flagging import FlagRule, rank_in_group
from .layout import RunLayout
from .scored import ScoredBatch, read_scored_batch
from .scores_table import (
    STATUS_GROUP_TOO_SMALL,
    STATUS_HEATMAP_ERROR,
    STATUS_OK,
    STATUS_SUBSET_TOO_SMALL,
    write_group_scores,
)

MAP_CHUNK = 32  # images upsampled to full-size maps at a time


@dataclass(frozen=True)
class GroupContext:
    """What every group task of a run shares."""

    layout: RunLayout
    config_hash: str
    backbone: str  # the model's identifier (family/name@size)
    scores_meaningful: bool
    image_size: int
    gaussian_sigma: float
    heatmaps: str  # flagged | all | none
    flag: FlagRule
    storage_options: dict[str, Any] | None = None
    heatmaps_at: str = "model"  # model | full: drawn at the model's input size or the photo's own
    resize: int | None = None  # images were resized to this, then centre-cropped to image_size (Dinomaly)


def _group_metrics(results: list[ScoredBatch], records: dict[str, dict], ctx: GroupContext,
                   score_range: tuple[float, float], warnings: list[str]) -> dict[str, float] | None:
    """The engine's metrics row for the group, or None without labels on every scored image of both kinds.

    An image whose mask cannot be read is left out of the pixel metrics, with a warning: its row and
    the image metrics do not need the mask."""
    uris = [u for r in results for u in r.uris]
    labels = [records[u]["label"] for u in uris]
    if any(label is None for label in labels) or len(set(labels)) < 2:
        return None
    image = image_metrics(np.concatenate([r.score for r in results]), np.array(labels))
    if not any(records[u]["label"] == 1 and records[u]["mask_uri"] for u in uris):
        return metrics_row(image, None)
    acc = PixelMetrics(score_range)
    size = ctx.image_size
    for r in results:
        for start in range(0, len(r.uris), MAP_CHUNK):
            chunk = r.uris[start:start + MAP_CHUNK]
            maps = anomaly_maps(torch.from_numpy(r.patch_scores[start:start + MAP_CHUNK]), size, ctx.gaussian_sigma)
            masks = np.zeros((len(chunk), size, size), dtype=bool)
            readable = np.ones(len(chunk), dtype=bool)
            for i, uri in enumerate(chunk):
                mask_uri = records[uri]["mask_uri"]
                if mask_uri:
                    try:
                        masks[i] = resize_mask(fetch_mask(mask_uri, ctx.storage_options), size, ctx.resize)
                    except UnreadableImage as err:
                        readable[i] = False
                        warnings.append(f"mask {mask_uri} of {uri} ({err}): left out of the pixel metrics")
            if readable.any():
                acc.update(maps.numpy()[readable], masks[readable])
    pixel = acc.compute() if acc.anomalous.any() else None
    return metrics_row(image, pixel)


def draw_heatmap(uri: str, mask_uri: str | None, patch_scores: np.ndarray, caption: Caption, ctx: GroupContext,
                 renderers: dict[tuple[int, int], HeatmapRenderer], scale: tuple[float, float]) -> bytes:
    """One image's heat map at the model's input size, or at the photo's own size with
    ``heatmaps_at: full`` (the map upsampled and smoothed to match; not for centre-cropped inputs).
    Raises UnreadableImage when the photo is gone or no longer decodes."""
    full = ctx.heatmaps_at == "full" and ctx.resize is None
    so = ctx.storage_options
    image = fetch_image(uri, storage_options=so) if full else fetch_image(uri, ctx.image_size, ctx.resize, so)
    height, width = image.shape[:2]
    sigma = ctx.gaussian_sigma * (height / ctx.image_size if full else 1.0)
    heat = anomaly_maps(torch.from_numpy(patch_scores[None]), (height, width), sigma)[0].numpy()
    mask = None
    try:
        raw = fetch_mask(mask_uri, so) if mask_uri else None
    except UnreadableImage:  # the metrics already warned about it; the map is drawn without an outline
        raw = None
    if raw is not None:
        mask = (resize_mask(raw, ctx.image_size, ctx.resize) if not full
                else raw if raw.shape == (height, width)
                else np.asarray(Image.fromarray(raw).resize((width, height), Image.Resampling.NEAREST)))
    if (height, width) not in renderers:
        renderers[(height, width)] = HeatmapRenderer(height, width, *scale)
    return renderers[(height, width)].render(image, heat, caption, mask)


def finalise_group(group: str, records: list[dict[str, Any]], sources: list[str], ctx: GroupContext,
                   embedding: dict[str, Any] | None = None) -> dict:
    """Rank, flag, draw and write one group; ``records`` are the shard rows of all its inputs,
    ``sources`` the objects of its scored batches and ``embedding`` the moments of its images'
    embeddings (``drift.EmbeddingMoments``; None for a trained detector), kept for later nights."""
    start = time.perf_counter()
    by_uri = {r["uri"]: r for r in records}
    batches = [read_scored_batch(s, ctx.storage_options) for s in sources]
    results = [b for b in batches if b.uris]
    use = next((b.references for b in batches if b.references is not None), None)  # the same in every subset
    scored_uris = [u for r in results for u in r.uris]
    scores = np.concatenate([r.score for r in results]) if results else np.zeros(0)
    reference_scores = np.concatenate([r.reference_scores for r in results]) if results else np.zeros(0)
    rows: dict[str, dict[str, Any]] = {}
    now = datetime.now(timezone.utc)
    common = {"backbone": ctx.backbone, "scores_meaningful": ctx.scores_meaningful, "config_hash": ctx.config_hash,
              "run_id": ctx.layout.run_id}
    metrics = None
    warnings: list[str] = [] if use is None else use.warnings()
    if results:
        ranks, percentiles = rank_in_group(scores)
        flags = ctx.flag.apply(scores, reference_scores)
        patches = np.concatenate([r.patch_scores for r in results])
        # maps are convex combinations of patch scores, so this range holds every map pixel
        vmin, vmax = float(patches.min()), float(patches.max())
        metrics = _group_metrics(results, by_uri, ctx, (vmin, vmax if vmax > vmin else vmin + 1.0), warnings)
        renderers: dict[tuple[int, int], HeatmapRenderer] = {}  # one per image size: the group's scale
        i = 0
        for r in results:
            for j, uri in enumerate(r.uris):
                map_uri, status, error = None, STATUS_OK, None
                if ctx.heatmaps == "all" or (ctx.heatmaps == "flagged" and flags[i]):
                    caption = Caption.flagged(group, PurePosixPath(uri).name, float(scores[i]), int(ranks[i]),
                                              len(scores), bool(flags[i]), ctx.flag.label)
                    try:
                        png = draw_heatmap(uri, by_uri[uri]["mask_uri"], r.patch_scores[j], caption, ctx,
                                           renderers, (vmin, vmax))
                    except UnreadableImage as err:  # deleted or replaced since it was scored
                        status, error = STATUS_HEATMAP_ERROR, f"scored, but no heat map: {err}"
                    else:
                        map_uri = ctx.layout.heatmap(group, uri)
                        write_bytes(map_uri, png, ctx.storage_options)
                rows[uri] = {
                    "subset_id": r.subset_id, "subset_size": len(r.uris) if r.subset_id is not None else None,
                    "score_raw": float(r.score_raw[j]),
                    "score": float(scores[i]), "rank_in_group": int(ranks[i]),
                    "percentile_in_group": float(percentiles[i]), "is_anomaly": bool(flags[i]),
                    "flag_policy": ctx.flag.label, "map_uri": map_uri, "scored_at": r.scored_at,
                    "status": status, "error": error, "match_radius": (r.matching or {}).get("radius"),
                }
                i += 1
    crash_point("finalise_group")
    readable = sum(1 for r in records if r["status"] == STATUS_OK)
    out = []
    for record in sorted(records, key=lambda r: r["uri"]):
        row = rows.get(record["uri"])
        if row is None:
            status, error = record["status"], record["error"]
            if status == STATUS_OK and readable < 2:
                status = STATUS_GROUP_TOO_SMALL
                error = (f"group has {readable} readable image(s) and no usable references; MuSc compares images "
                         "and needs at least 2")
            elif status == STATUS_OK:
                status = STATUS_SUBSET_TOO_SMALL
                error = ("the other images of its subset did not decode and it has no usable references; MuSc "
                         "compares images and needs at least 2")
            row = {"status": status, "error": error, "scored_at": now}
        out.append({**row, **common, "uri": record["uri"], "label": record["label"]})
    scores_uri = write_group_scores(ctx.layout.scores(group), out, ctx.storage_options)
    statuses: dict[str, int] = {}
    for row in out:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    summary = {
        "group": group, "inputs": len(out), "scored": len(scored_uris), "statuses": statuses,
        "flagged": int(sum(1 for row in out if row.get("is_anomaly"))), "subsets": len(results),
        "metrics": metrics, "warnings": [f"group {group!r}: {w}" for w in warnings], "scores_uri": scores_uri,
        "seconds": time.perf_counter() - start,
        "score_range": [vmin, vmax] if results else None,  # the heat maps' colour scale
        # the references' leave-one-out scores (one per reference per subset): what good parts score tonight
        "reference_scores": [float(v) for v in reference_scores],
        "references": None if use is None else use.counts(),  # listed, used, left out and why
        # MuSc: each subset's matching (match_radius; auto: the nearest-patch statistic it chose by)
        "matching": [{"subset_id": r.subset_id, **r.matching} for r in results if r.matching is not None],
        "embedding": embedding,  # count, mean and spread of the readable images' embeddings (group_nights)
    }
    text = json.dumps(summary, indent=2, allow_nan=True)
    write_bytes(ctx.layout.group_summary(group), text.encode(), ctx.storage_options)
    return summary


def read_group_summary(layout: RunLayout, group: str, storage_options: dict[str, Any] | None = None) -> dict:
    """A finished group's summary (what ``finalise_group`` returned)."""
    return json.loads(read_bytes(layout.group_summary(group), storage_options))
