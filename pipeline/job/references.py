"""Each group's known-good references: listed under a prefix, or kept up by the job from earlier nights.

A prefix (``references``) is listed and grouped like the inputs; each group takes its first
``reference_images`` by URI. From earlier nights (``reference_runs`` K), each group takes the
lowest-scoring images of its last K successful runs under ``output.prefix``: rows with status ok that
were never flagged, read from those runs' scores Parquet, at most ``reference_images``. Either way
tonight's inputs are never references (an image matched against itself scores 0 and would hide its
defects): by URI here, and by content once the bytes are read (a copy under another name, and a
reference that does not decode, are left out with a warning by the scoring tasks, ``subsets``). The
result records which images, and for earlier nights from which runs, so the manifest and a resumed
run can name them.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from typing import Any

import fsspec
import pyarrow.parquet as pq

from ..data.inputs import InputRecord, list_images
from ..settings import JobConfig
from ..storage import check_bucket, exists, join_uri, read_bytes
from .layout import RunLayout
from .preflight import JobError
from .scores_table import STATUS_OK

EARLIER_RUNS = "earlier runs"  # the references' source when the job keeps them up itself


def resolve_references(cfg: JobConfig, records: list[InputRecord], run_id: str) -> dict[str, Any] | None:
    """``{"source", "per_group": {group: [uri]}, "run_of": {uri: run_id}}`` or None without references.

    A group without references is an error for a prefix (every group needs some) and for the
    'reference_fpr' flag policy (nothing to calibrate on); from earlier nights it is scored without."""
    if cfg.references is not None:
        per_group, run_of = _listed(cfg, records), {}
    elif cfg.reference_runs:
        per_group, run_of = _from_earlier_runs(cfg, records, run_id)
    else:
        return None
    groups = sorted({r.group for r in records})
    missing = [g for g in groups if not per_group.get(g)]
    if missing and (cfg.references is not None or cfg.flagging.policy == "reference_fpr"):
        source = f"references {cfg.references}" if cfg.references is not None else \
            f"reference_runs {cfg.reference_runs} (flagging.policy reference_fpr)"
        raise JobError(f"{source}: no known-good images for {len(missing)} input group(s), e.g. {missing[:5]} "
                       f"(found groups {sorted(g for g in per_group if per_group[g])[:5]})")
    return {"source": cfg.references or EARLIER_RUNS,
            "per_group": {g: per_group[g] for g in groups if per_group.get(g)}, "run_of": run_of}


def _listed(cfg: JobConfig, records: list[InputRecord]) -> dict[str, list[str]]:
    """Each group's first ``reference_images`` known-good URIs under the ``references`` prefix."""
    check_bucket(cfg.references, cfg.storage_options, "references")
    inputs = {r.uri for r in records}
    by_group: dict[str, list[str]] = defaultdict(list)
    for record in list_images(cfg.references, cfg.inputs.group_template, cfg.storage_options):
        if record.uri not in inputs:
            by_group[record.group].append(record.uri)
    return {g: sorted(uris)[:cfg.reference_images] for g, uris in by_group.items()}


def successful_runs(output_prefix: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The manifests of every successful run under ``output_prefix``, latest finished first."""
    fs, runs = fsspec.core.url_to_fs(join_uri(output_prefix, "runs"), **(storage_options or {}))
    if not fs.exists(runs):
        return []
    manifests = []
    for marker in fs.glob(f"{runs}/*/_SUCCESS"):
        run_id = marker.rstrip("/").split("/")[-2]
        manifest = json.loads(read_bytes(RunLayout(output_prefix, run_id).manifest, storage_options))
        if manifest.get("status") == "succeeded":
            manifests.append(manifest)
    return sorted(manifests, key=lambda m: m["finished_at"], reverse=True)


def _from_earlier_runs(cfg: JobConfig, records: list[InputRecord],
                       run_id: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Per group, the lowest-scoring unflagged images of its last ``reference_runs`` successful runs."""
    so, prefix = cfg.storage_options, cfg.output.prefix
    runs = [m for m in successful_runs(prefix, so) if m["run_id"] != run_id]
    inputs = {r.uri for r in records}
    per_group: dict[str, list[str]] = {}
    run_of: dict[str, str] = {}
    for group in sorted({r.group for r in records}):
        candidates: dict[str, tuple[float, str]] = {}  # uri -> (lowest score, run id)
        used = 0
        for manifest in runs:
            if used == cfg.reference_runs:
                break
            scores = RunLayout(prefix, manifest["run_id"], manifest["run_date"]).scores(group)
            if not exists(scores, so):
                continue
            used += 1
            rows = pq.read_table(io.BytesIO(read_bytes(scores, so)),
                                 columns=["uri", "score", "status", "is_anomaly"]).to_pylist()
            for row in rows:
                good = row["status"] == STATUS_OK and row["is_anomaly"] is False and row["uri"] not in inputs
                if good and row["score"] < candidates.get(row["uri"], (float("inf"), ""))[0]:
                    candidates[row["uri"]] = (row["score"], manifest["run_id"])
        chosen = sorted(candidates, key=lambda uri: (candidates[uri][0], uri))[:cfg.reference_images]
        per_group[group] = sorted(chosen)
        run_of.update({uri: candidates[uri][1] for uri in chosen})
    return per_group, run_of
