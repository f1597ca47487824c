"""The per-group nightly table: ``group_nights/run_date=<d>/part-<run_id>.parquet``, one row per group.

Written by the driver once every group is final and before ``manifest.json`` / ``_SUCCESS``, from
what the run already wrote (each group's summary and scores object), one object per run written
whole: a re-run of the run id rewrites it, never adds rows, and a failed run writes none. Each row
holds the night's counts, flags, score quantiles and flag line, its shift against the group's previous
nights (``drift``) and whether that alerts, plus what later nights need to compare with it (the
embeddings' count, mean and spread), so no night ever reads old features.

The previous nights are the last ``trends.nights`` run dates before tonight with a successful run
(``_SUCCESS``) under the same output prefix, the latest written run of a night that ran twice, and of
those the rows of the same group scored by the same backbone. Every column is one entry of
``COLUMNS``: a column is added there, with the function that fills it from a ``GroupNight``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..settings import ZERO_SHOT_DETECTORS, JobConfig
from ..storage import exists, join_uri, read_bytes, write_parquet
from .drift import EmbeddingMoments, Shift, embedding_shift, score_shift
from .flagging import FlagRule
from .layout import RunLayout
from .scores_table import ROW_STATUSES

log = logging.getLogger(__name__)
QUANTILES = {"score_p05": 0.05, "score_p50": 0.5, "score_p95": 0.95, "score_max": 1.0}


@dataclass
class GroupNight:
    """Everything a group's row is made of."""

    group: str
    run_id: str
    summary: dict[str, Any]  # groups/<g>.json
    scores: np.ndarray  # tonight's scores (scored rows)
    flag_policy: str  # the rule's label, as the scores table's flag_policy
    flag_line: float | None
    moments: EmbeddingMoments | None
    shift: Shift
    alert: bool
    reason: str | None
    backbone: str
    config_hash: str
    review: dict[str, Any] | None = None  # the latest reviewed earlier night: run_id, run_date, flag_precision's
    written_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def quantile(self, q: float) -> float | None:
        return float(np.quantile(self.scores, q)) if len(self.scores) else None


def _reviewed() -> list[tuple[str, pa.DataType, Callable[[GroupNight], Any]]]:
    """The flag precision of the group's latest earlier night with reviewed images (verdicts arrive after a
    night ran, so tonight's row reports the last night the reviewers have seen)."""
    columns = {"reviewed_run_id": ("run_id", pa.string()), "reviewed_run_date": ("run_date", pa.string()),
               **{k: (k, pa.int32()) for k in ("reviewed_flags", "confirmed_defects")},
               "flag_precision": ("flag_precision", pa.float64()),
               **{k: (k, pa.int32()) for k in ("reviewed_unflagged", "missed_defects")}}
    return [(name, kind, lambda n, k=key: n.review[k] if n.review else None) for name, (key, kind) in columns.items()]


def _statuses() -> list[tuple[str, pa.DataType, Callable[[GroupNight], Any]]]:
    return [(f"images_{s}", pa.int32(), lambda n, s=s: n.summary["statuses"].get(s, 0)) for s in ROW_STATUSES]


# (name, Arrow type, value): the table's columns in order (run_date is the partition)
COLUMNS: list[tuple[str, pa.DataType, Callable[[GroupNight], Any]]] = [
    ("group_name", pa.string(), lambda n: n.group),
    ("run_id", pa.string(), lambda n: n.run_id),
    ("images", pa.int32(), lambda n: n.summary["inputs"]),
    *_statuses(),
    ("scored", pa.int32(), lambda n: n.summary["scored"]),
    ("flagged", pa.int32(), lambda n: n.summary["flagged"]),
    ("flag_rate", pa.float64(), lambda n: n.shift.flag_rate),
    ("flag_policy", pa.string(), lambda n: n.flag_policy),
    ("flag_line", pa.float64(), lambda n: n.flag_line),
    *((name, pa.float64(), lambda n, q=q: n.quantile(q)) for name, q in QUANTILES.items()),
    ("previous_nights", pa.int32(), lambda n: n.shift.previous_nights),
    ("score_shift", pa.float64(), lambda n: n.shift.score_shift),
    ("score_shift_p", pa.float64(), lambda n: n.shift.score_shift_p),
    ("embedding_shift", pa.float64(), lambda n: n.shift.embedding_shift),
    ("alert", pa.bool_(), lambda n: n.alert),
    ("alert_reason", pa.string(), lambda n: n.reason),
    ("embedding_images", pa.int32(), lambda n: n.moments.n if n.moments else None),
    ("embedding_spread", pa.float64(), lambda n: n.moments.spread if n.moments else None),
    ("backbone", pa.string(), lambda n: n.backbone),
    ("config_hash", pa.string(), lambda n: n.config_hash),
    ("written_at", pa.timestamp("us", tz="UTC"), lambda n: n.written_at),
    ("embedding_mean", pa.list_(pa.float32()), lambda n: n.moments.mean.tolist() if n.moments else None),
    *_reviewed(),
]
NIGHTS_SCHEMA = pa.schema([(name, kind) for name, kind, _ in COLUMNS])


@dataclass
class Nights:
    """The run's table: its URI, tonight's rows and each group's rows of its previous nights and tonight
    (oldest first, with ``run_date``), what the report plots."""

    uri: str
    rows: list[dict[str, Any]]
    history: dict[str, list[dict[str, Any]]]

    @property
    def alerts(self) -> dict[str, str]:
        return {r["group_name"]: r["alert_reason"] for r in self.rows if r["alert"]}


def _read_table(uri: str, storage_options: dict[str, Any] | None) -> list[dict[str, Any]]:
    """An earlier run's rows; one that cannot be read is left out with a warning, never fails tonight."""
    try:
        return pq.read_table(io.BytesIO(read_bytes(uri, storage_options))).to_pylist()
    except (OSError, pa.ArrowException) as err:
        log.warning("group_nights: %s cannot be read (%s); that run is left out of the trends", uri, err)
        return []


def previous_nights(layout: RunLayout, nights: int, storage_options: dict[str, Any] | None = None) -> list[dict]:
    """The rows of the last ``nights`` run dates before ``layout.run_date`` that have a successful run
    (the latest written one per date), each with its ``run_date``."""
    fs, root = fsspec.core.url_to_fs(layout.group_nights_root, **(storage_options or {}))
    fs.invalidate_cache(root)  # s3fs caches listings per process: a night written since must be seen
    if not fs.exists(root):
        return []
    folders = sorted((p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)), reverse=True)
    rows: list[dict] = []
    taken = 0
    for folder in folders:
        night = folder.removeprefix("run_date=")
        if taken == nights:
            break
        if not folder.startswith("run_date=") or night >= layout.run_date:
            continue
        parts = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(f"{root}/{folder}", detail=False)]
        run_ids = [p.removeprefix("part-").removesuffix(".parquet") for p in parts if p.startswith("part-")]
        done = [r for r in run_ids if exists(RunLayout(layout.output_prefix, r).success, storage_options)]
        tables = [_read_table(join_uri(layout.group_nights_root, folder, f"part-{r}.parquet"), storage_options)
                  for r in done]
        tables = [t for t in tables if t]
        if not tables:
            continue
        latest = max(tables, key=lambda t: (t[0]["written_at"], t[0]["run_id"]))
        rows.extend({**row, "run_date": night} for row in latest)
        taken += 1
    return rows


def read_scores(uri: str, storage_options: dict[str, Any] | None = None, missing_ok: bool = False) -> np.ndarray:
    """The scores of a group's scored rows (``score`` not null) from its scores object; an earlier
    night's object deleted since (``missing_ok``) gives none, with a warning."""
    try:
        data = read_bytes(uri, storage_options)
    except FileNotFoundError:
        if not missing_ok:
            raise
        log.warning("group_nights: %s is gone; that night's scores are left out of the score shift", uri)
        return np.zeros(0)
    table = pq.read_table(io.BytesIO(data), columns=["score"])
    return np.asarray([v for v in table.column("score").to_pylist() if v is not None], dtype=np.float64)


def _comparable(earlier: list[dict], group: str, backbone: str) -> list[dict]:
    """The group's rows of its previous nights scored by the same backbone (another model's embedding
    means nothing here)."""
    return [r for r in earlier if r["group_name"] == group and r["backbone"] == backbone]


def _latest_review(verdicts: dict[str, Any] | None, group: str) -> dict[str, Any] | None:
    """The group's latest reviewed earlier night in a review record (``verdicts.review_record``: runs
    latest first), with its run id."""
    by_run = (verdicts or {}).get("flag_precision", {}).get(group, {})
    return next(({"run_id": run_id, **counts} for run_id, counts in by_run.items()), None)


def _group_night(cfg: JobConfig, layout: RunLayout, group: str, summary: dict, earlier: list[dict],
                 backbone: str, chash: str, verdicts: dict[str, Any] | None) -> GroupNight:
    """One group's row facts: tonight's scores and moments against its comparable previous nights."""
    so = cfg.storage_options
    scores = read_scores(summary["scores_uri"], so)
    before = _comparable(earlier, group, backbone)
    previous_scores = [read_scores(RunLayout(layout.output_prefix, r["run_id"], r["run_date"]).scores(group), so,
                                   missing_ok=True) for r in before]
    moments = EmbeddingMoments.from_dict(summary.get("embedding"))
    pooled = EmbeddingMoments.pooled([EmbeddingMoments(r["embedding_images"], np.asarray(r["embedding_mean"]),
                                                       r["embedding_spread"])
                                      for r in before if r["embedding_mean"] is not None])
    statistic, p = score_shift(scores, np.concatenate(previous_scores)) if before else (None, None)
    flag_rate = summary["flagged"] / summary["scored"] if summary["scored"] else None
    shift = Shift(len(before), flag_rate, statistic, p, embedding_shift(moments, pooled))
    alert, reason = shift.alert(cfg.trends, cfg.detector in ZERO_SHOT_DETECTORS)
    rule = FlagRule.from_settings(cfg.flagging)
    line = rule.line(scores, np.asarray(summary.get("reference_scores") or []))
    return GroupNight(group, layout.run_id, summary, scores, rule.label, line, moments, shift, alert, reason,
                      backbone, chash, _latest_review(verdicts, group))


def write_group_nights(cfg: JobConfig, layout: RunLayout, summaries: dict[str, dict], backbone: str,
                       chash: str, verdicts: dict[str, Any] | None = None) -> Nights:
    """Compute and write the run's table (one row per finished group); returns it with the history.
    ``verdicts``: the night's review record, whose flag precision the rows carry."""
    so = cfg.storage_options
    earlier = previous_nights(layout, cfg.trends.nights, so)
    with ThreadPoolExecutor(max_workers=16) as pool:
        nights = list(pool.map(lambda g: _group_night(cfg, layout, g, summaries[g], earlier, backbone, chash, verdicts),
                               sorted(summaries)))
    rows = [{name: value(n) for name, _, value in COLUMNS} for n in nights]
    write_parquet(layout.group_nights, pa.Table.from_pylist(rows, schema=NIGHTS_SCHEMA), so, compression="zstd")
    history = {row["group_name"]: sorted(_comparable(earlier, row["group_name"], backbone), key=lambda r: r["run_date"])
               + [{**row, "run_date": layout.run_date}] for row in rows}
    return Nights(layout.group_nights, rows, history)
