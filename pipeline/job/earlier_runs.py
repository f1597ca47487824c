"""The successful runs under ``output.prefix`` before tonight's, and their scores: what references kept up
from earlier nights and reviewers' verdicts are matched against (``references``, ``verdicts``)."""

from __future__ import annotations

import io
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ..storage import exists, join_uri, read_bytes
from .layout import RunLayout, partition_path, segment

SCORE_COLUMNS = ["uri", "score", "status", "is_anomaly"]  # what references and verdicts read of a night's rows


def successful_runs(output_prefix: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The manifests of every successful run under ``output_prefix``, latest finished first."""
    fs, runs = fsspec.core.url_to_fs(join_uri(output_prefix, "runs"), **(storage_options or {}))
    if not fs.exists(runs):
        return []
    markers = fs.glob(f"{runs}/*/_SUCCESS")
    fs.invalidate_cache()  # as in run_groups: listings kept by s3fs would hide what others write later
    manifests = []
    for marker in markers:
        run_id = marker.rstrip("/").split("/")[-2]
        manifest = json.loads(read_bytes(RunLayout(output_prefix, run_id).manifest, storage_options))
        if manifest.get("status") == "succeeded":
            manifests.append(manifest)
    return sorted(manifests, key=lambda m: m["finished_at"], reverse=True)


def earlier_runs(output_prefix: str, run_id: str, storage_options: dict[str, Any] | None = None) -> list[dict]:
    """``successful_runs`` but the run ``run_id`` (tonight's, when resumed after a failure it is not there)."""
    return [m for m in successful_runs(output_prefix, storage_options) if m["run_id"] != run_id]


def group_rows(output_prefix: str, manifest: dict, group: str, storage_options: dict[str, Any] | None = None,
               keep: Callable[[str], bool] | None = None) -> list[dict] | None:
    """A finished run's rows of one group (``SCORE_COLUMNS``; with ``keep``, only the rows whose URI it
    keeps, chosen before any row becomes a Python object), or None when the run had no such group."""
    scores = RunLayout(output_prefix, manifest["run_id"], manifest["run_date"]).scores(group)
    if not exists(scores, storage_options):
        return None
    table = pq.read_table(io.BytesIO(read_bytes(scores, storage_options)), columns=SCORE_COLUMNS)
    if keep is not None:
        table = table.filter(pa.array([uri is not None and keep(uri) for uri in table["uri"].to_pylist()]))
    return table.to_pylist()


def run_groups(output_prefix: str, manifest: dict, known: list[str],
               storage_options: dict[str, Any] | None = None) -> list[str]:
    """Every group a finished run wrote rows for, by name: a folder's name decoded, or, for a name too long
    for one folder (stored cut, with a hash), the ``known`` group it stands for, else the folder's name."""
    layout = RunLayout(output_prefix, manifest["run_id"], manifest["run_date"])
    date_folder = partition_path(layout.run_date, "").rsplit("/", 1)[0]
    fs, root = fsspec.core.url_to_fs(join_uri(layout.scores_root, date_folder), **(storage_options or {}))
    by_segment = {segment(g): g for g in known}
    paths = fs.glob(f"{root}/group_name=*/part-{layout.run_id}.parquet")
    fs.invalidate_cache()  # tonight's Ray workers (and other drivers) write there: kept listings would hide them
    folders = [path.rstrip("/").split("/")[-2].removeprefix("group_name=") for path in paths]
    return sorted(by_segment.get(folder, urllib.parse.unquote(folder)) for folder in folders)
