"""Stage 3 of the nightly job: per-group statistics once every subset of a group is scored.

For one group this ranks the scores, applies the flag policy, draws heat maps on one colour scale,
computes the engine's metrics when the inputs carry labels, and writes the group's rows of the
scores table: one row per input image of the group, scored or not (decode errors, groups too small
to compare). The group's summary object is written last and is the group's completion marker: a
re-run skips groups that have one, and a retried task rewrites the same objects.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import torch

from .anomaly_maps import anomaly_maps
from .datasets import load_image, read_mask, resize_mask
from .faults import crash_point
from .flagging import flag, rank_in_group
from .heatmaps import overlay_png
from .metrics import PixelMetrics, image_metrics, metrics_row
from .results import STATUS_GROUP_TOO_SMALL, STATUS_OK, partition_path, write_group_scores
from .storage import join_uri, read_bytes, write_bytes
from .subset_scoring import SubsetResult, group_key, read_subset_result

MAP_CHUNK = 32  # images upsampled to full-size maps at a time


@dataclass(frozen=True)
class GroupContext:
    """What every group task of a run shares."""

    output_prefix: str
    run_prefix: str
    run_id: str
    run_date: str
    config_hash: str
    backbone: str
    image_size: int
    gaussian_sigma: float
    heatmaps: str  # flagged | all | none
    flag_policy: str
    flag_value: float
    storage_options: dict[str, Any] | None = None
    resize: int | None = None  # images were resized to this, then centre-cropped to image_size (Dinomaly)

    @property
    def flag_label(self) -> str:
        op = {"top_fraction": "=", "robust_z": ">", "threshold": ">="}[self.flag_policy]
        return f"{self.flag_policy}{op}{self.flag_value:g}"


def group_summary_uri(run_prefix: str, group: str) -> str:
    return join_uri(run_prefix, "groups", f"{group_key(group)}.json")


def heatmap_uri(ctx: GroupContext, group: str, image_uri: str) -> str:
    """One PNG per image and run, named after the image's folder and file for reviewers; the URI hash
    keeps equal names from different places apart."""
    path = PurePosixPath(image_uri)
    name = f"{path.parent.name}_{path.stem}" if path.parent.name else path.stem
    digest = hashlib.sha256(image_uri.encode()).hexdigest()[:8]
    return join_uri(ctx.output_prefix, "heatmaps", partition_path(ctx.run_date, group), f"run_id={ctx.run_id}",
                    f"{name}-{digest}.png")


def _group_metrics(results: list[SubsetResult], records: dict[str, dict], ctx: GroupContext,
                   score_range: tuple[float, float]) -> dict[str, float] | None:
    """The engine's metrics row for the group, or None without labels on every scored image of both kinds."""
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
            for i, uri in enumerate(chunk):
                if records[uri]["mask_uri"]:
                    mask_file = io.BytesIO(read_bytes(records[uri]["mask_uri"], ctx.storage_options))
                    masks[i] = resize_mask(read_mask(mask_file), size, ctx.resize)
            acc.update(maps.numpy(), masks)
    pixel = acc.compute() if acc.anomalous.any() else None
    return metrics_row(image, pixel)


def finalise_group(group: str, records: list[dict[str, Any]], subset_uris: list[str], ctx: GroupContext) -> dict:
    """Rank, flag, draw and write one group; ``records`` are the shard rows of all its inputs."""
    start = time.perf_counter()
    by_uri = {r["uri"]: r for r in records}
    results = [read_subset_result(u, ctx.storage_options) for u in subset_uris]
    scored_uris = [u for r in results for u in r.uris]
    scores = np.concatenate([r.score for r in results]) if results else np.zeros(0)
    rows: dict[str, dict[str, Any]] = {}
    now = datetime.now(timezone.utc)
    common = {"backbone": ctx.backbone, "config_hash": ctx.config_hash, "run_id": ctx.run_id}
    metrics = None
    if results:
        ranks, percentiles = rank_in_group(scores)
        flags = flag(scores, ctx.flag_policy, ctx.flag_value)
        patches = np.concatenate([r.patch_scores for r in results])
        # maps are convex combinations of patch scores, so this range holds every map pixel
        vmin, vmax = float(patches.min()), float(patches.max())
        metrics = _group_metrics(results, by_uri, ctx, (vmin, vmax if vmax > vmin else vmin + 1.0))
        i = 0
        for r in results:
            for j, uri in enumerate(r.uris):
                map_uri = None
                if ctx.heatmaps == "all" or (ctx.heatmaps == "flagged" and flags[i]):
                    image = load_image(io.BytesIO(read_bytes(uri, ctx.storage_options)), ctx.image_size, ctx.resize)
                    heat = anomaly_maps(torch.from_numpy(r.patch_scores[j:j + 1]), ctx.image_size, ctx.gaussian_sigma)
                    map_uri = heatmap_uri(ctx, group, uri)
                    write_bytes(map_uri, overlay_png(image, heat[0].numpy(), vmin, vmax), ctx.storage_options)
                rows[uri] = {
                    "subset_id": r.subset_id, "subset_size": len(r.uris) if r.subset_id is not None else None,
                    "score_raw": float(r.score_raw[j]),
                    "score": float(scores[i]), "rank_in_group": int(ranks[i]),
                    "percentile_in_group": float(percentiles[i]), "is_anomaly": bool(flags[i]),
                    "flag_policy": ctx.flag_label, "map_uri": map_uri, "scored_at": r.scored_at,
                    "status": STATUS_OK, "error": None,
                }
                i += 1
    crash_point("finalise_group")
    readable = sum(1 for r in records if r["status"] == STATUS_OK)
    out = []
    for record in sorted(records, key=lambda r: r["uri"]):
        row = rows.get(record["uri"])
        if row is None:
            status, error = record["status"], record["error"]
            if status == STATUS_OK:
                status = STATUS_GROUP_TOO_SMALL
                error = f"group has {readable} readable image(s); MuSc compares images and needs at least 2"
            row = {"status": status, "error": error, "scored_at": now}
        out.append({**row, **common, "uri": record["uri"], "label": record["label"]})
    scores_uri = write_group_scores(ctx.output_prefix, ctx.run_date, group, ctx.run_id, out, ctx.storage_options)
    statuses: dict[str, int] = {}
    for row in out:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    summary = {
        "group": group, "inputs": len(out), "scored": len(scored_uris), "statuses": statuses,
        "flagged": int(sum(1 for row in out if row.get("is_anomaly"))), "subsets": len(results),
        "metrics": metrics, "scores_uri": scores_uri, "seconds": time.perf_counter() - start,
    }
    text = json.dumps(summary, indent=2, allow_nan=True)
    write_bytes(group_summary_uri(ctx.run_prefix, group), text.encode(), ctx.storage_options)
    return summary


def read_group_summary(run_prefix: str, group: str, storage_options: dict[str, Any] | None = None) -> dict:
    """A finished group's summary (what ``finalise_group`` returned)."""
    return json.loads(read_bytes(group_summary_uri(run_prefix, group), storage_options))
