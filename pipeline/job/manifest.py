"""What a run leaves for people and machines: the metrics table, ``manifest.json`` and the summary.

The manifest records the config with secrets redacted, package versions, counts per status, stage
timings and throughput; ``format_summary`` is what the job prints at the end.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from ..errors import REDACTED, without_credentials
from ..evaluation.metrics import TABLE_COLUMNS, format_table, mean_row
from ..reporting.provenance import code_version, versions
from ..settings import JobConfig, config_to_dict
from ..storage import write_bytes, write_parquet
from .cluster import summary_line
from .layout import RunLayout
from .nights import Nights
from .scores_table import SCORED_STATUSES, STATUS_HEATMAP_ERROR
from .verdicts import precision_lines

# storage_options keys that say where and how storage is reached, never who is asking: the manifest
# keeps them. Every other value under storage_options is redacted, whatever its name (guessing secret
# names missed connection_string, passwd and headers.Authorization).
HARMLESS_STORAGE_KEYS = frozenset({
    "endpoint_url", "region_name", "region", "client_kwargs", "config_kwargs", "s3", "addressing_style",
    "signature_version", "retries", "max_attempts", "connect_timeout", "read_timeout", "use_ssl", "verify",
    "anon", "requester_pays", "version_aware", "default_block_size", "default_cache_type", "max_concurrency",
    "use_listings_cache", "listings_expiry_time", "skip_instance_cache",
})
MAX_LISTED = 10  # warnings printed in the summary; the manifest has them all


@dataclass
class JobReport:
    """What the job did; ``manifest`` is what was written to ``manifest.json``."""

    exit_code: int
    manifest: dict[str, Any]

    @property
    def failures(self) -> list[str]:
        return self.manifest["failures"]


def redact(value: Any, key: str = "") -> Any:
    """Plain data (a config, a whole manifest) fit for files and logs: every ``storage_options`` mapping
    keeps only harmless keys (nested mappings included), and every text anywhere, kept storage options
    included (``endpoint_url: https://user:secret@host``), loses the ``user:secret@`` part of its URIs."""
    if key == "storage_options" and isinstance(value, dict):
        return _harmless_only(value)
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    return without_credentials(value) if isinstance(value, str) else value


def _harmless_only(options: dict[str, Any]) -> dict[str, Any]:
    """Storage options with every value not under an allow-listed key redacted; mappings are walked
    so that their keys stay visible, and kept values are redacted like any other text."""
    return {k: _harmless_only(v) if isinstance(v, dict)
            else redact(v) if k in HARMLESS_STORAGE_KEYS or v is None else REDACTED for k, v in options.items()}


# the metrics table (fractions 0-1): typed up front, so a metric undefined in every group is still a double
METRICS_SCHEMA = pa.schema([("group_name", pa.string()), *((c, pa.float64()) for c in TABLE_COLUMNS),
                            ("run_id", pa.string())])


def write_metrics(layout: RunLayout, summaries: dict[str, dict],
                  storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The engine's table over the groups that carry labels: Parquet for BI and text for people."""
    per_group = {g: s["metrics"] for g, s in sorted(summaries.items()) if s["metrics"] is not None}
    if not per_group:
        return None
    rows = [{"group_name": g, **{c: m.get(c) for c in TABLE_COLUMNS}, "run_id": layout.run_id}
            for g, m in per_group.items()]
    write_parquet(layout.metrics_table, pa.Table.from_pylist(rows, schema=METRICS_SCHEMA), storage_options)
    table = format_table(per_group)
    write_bytes(layout.metrics_text, f"percent (Parquet and manifest.json: fractions 0-1)\n{table}\n".encode(),
                storage_options)
    return {"table": table, "per_group": per_group, "mean": mean_row(per_group), "uri": layout.metrics_table}


@dataclass
class RunFacts:
    """What the run measured on its way, for the manifest."""

    inputs: int
    first_stage: str  # "extraction" or "detector"
    first_stage_summary: dict[str, Any]
    summaries: dict[str, dict]
    counts: dict[str, int]
    timings: dict[str, float]
    task_seconds: dict[str, float]  # seconds the scoring and group tasks of this run spent in our code
    failures: list[str]
    backbone: str
    scores_meaningful: bool
    started_at: datetime
    seconds: float
    references: dict[str, Any] | None = None  # source, per_group URIs, run_of (references.resolve_references)
    verdicts: dict[str, Any] | None = None  # the reviewers' verdicts read, and precision (verdicts.review_record)
    nights: Nights | None = None  # the per-group nightly table, when written
    cluster: dict[str, Any] | None = None  # nodes that did work, lost, joined; retries (cluster.ClusterWatch)
    object_store: dict[str, int] | None = None  # spilled and restored during the run (object_store.spilled_since)


def build_manifest(cfg: JobConfig, layout: RunLayout, config_hash: str, facts: RunFacts,
                   metrics: dict | None) -> dict[str, Any]:
    statuses: dict[str, int] = defaultdict(int)
    for s in facts.summaries.values():
        for status, n in s["statuses"].items():
            statuses[status] += n
    scored = sum(s["scored"] for s in facts.summaries.values())
    first, extraction, counts, timings = facts.first_stage, facts.first_stage_summary, facts.counts, facts.timings
    extracted = extraction.get("images", 0)
    scored_now = counts.get("images_scored", 0)
    return redact({  # URIs anywhere (outputs, references, warnings) may carry user:secret@
        "run_id": layout.run_id, "run_date": layout.run_date, "config_hash": config_hash,
        "status": "failed" if facts.failures else "succeeded", "failures": facts.failures,
        "warnings": [*(w for s in facts.summaries.values() for w in s.get("warnings", [])),
                     *(facts.verdicts["warnings"] if facts.verdicts else [])],
        "started_at": facts.started_at.isoformat(), "finished_at": datetime.now(timezone.utc).isoformat(),
        "seconds": facts.seconds, "backbone": facts.backbone, "scores_meaningful": facts.scores_meaningful,
        "code_version": code_version(),
        "counts": {
            "inputs": facts.inputs, "rows_written": counts.get("rows_written"),  # read back, not assumed
            "scored": scored, "failed": sum(n for st, n in statuses.items() if st not in SCORED_STATUSES),
            "statuses": dict(statuses), "flagged": sum(s["flagged"] for s in facts.summaries.values()),
            "groups": counts.get("groups", 0), "groups_skipped": counts.get("groups_skipped", 0),
            "subsets": counts.get("subsets", 0), "subsets_skipped": counts.get("subsets_skipped", 0),
            "shards": extraction.get("shards", 0), "shards_skipped": extraction.get("skipped", 0),
            "images_extracted": extracted,
        },
        "timings_s": timings,
        "task_seconds": facts.task_seconds,
        "throughput_images_per_s": {  # first stage: feature extraction (zero-shot) or scoring (trained detector)
            first: extracted / timings[first] if extracted and timings.get(first) else None,
            "scoring": scored_now / timings["scoring"] if scored_now and timings.get("scoring") else None,
        },
        "outputs": {
            "scores": layout.scores_root,
            "heatmaps": layout.heatmaps_root if cfg.output.heatmaps != "none" else None,
            "metrics": metrics["uri"] if metrics else None,
            "group_nights": facts.nights.uri if facts.nights else None,
            "report": layout.report,
            "manifest": layout.manifest,
        },
        "metrics": {"per_group": metrics["per_group"], "mean": metrics["mean"]} if metrics else None,
        "alerts": facts.nights.alerts if facts.nights else {},  # group -> why (group_nights: alert_reason)
        "references": None if facts.references is None else {  # listed per group, and what each group used
            **facts.references, "use_per_group": {g: s["references"] for g, s in sorted(facts.summaries.items())
                                                  if s.get("references")}},
        "verdicts": facts.verdicts,
        "cluster": facts.cluster,
        "object_store": facts.object_store,  # None: Ray's stats could not be read
        "config": config_to_dict(cfg),
        "versions": versions(),
    })


def format_summary(report: JobReport) -> str:
    """The end-of-job summary: outcome, counts, timings, where the outputs are."""
    m = report.manifest
    c = m["counts"]
    lines = [f"MuSc run {m['run_id']} ({m['run_date']}) {m['status'].upper()} in {m['seconds']:.1f}s"
             f" | backbone {m['backbone']}"]
    failed = ", ".join(f"{k} {v}" for k, v in sorted(c["statuses"].items())
                       if k not in SCORED_STATUSES) or "none"
    no_map = c["statuses"].get(STATUS_HEATMAP_ERROR)
    scored = f"{c['scored']} scored" + (f" ({no_map} without heat map)" if no_map else "")
    rows = "rows not counted" if c["rows_written"] is None else f"{c['rows_written']} rows written"
    lines.append(f"  images: {c['inputs']} in, {scored}, {c['failed']} not scored ({failed}), "
                 f"{c['flagged']} flagged; {rows}")
    lines.append(f"  work: {c['shards']} feature shards ({c['shards_skipped']} already done), "
                 f"{c['subsets']} subsets ({c['subsets_skipped']} already done), "
                 f"{c['groups']} groups ({c['groups_skipped']} already done)")
    speed = m["throughput_images_per_s"]
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in m["timings_s"].items())
    rates = ", ".join(f"{k} {v:.1f} img/s" for k, v in speed.items() if v)
    lines.append(f"  time: {timing}" + (f" ({rates})" if rates else ""))
    cluster = summary_line(m.get("cluster"))
    if cluster:
        lines.append(cluster)
    store = m.get("object_store")  # absent in manifests written before it was recorded
    if store is not None:
        lines.append(f"  object store: {store['spilled_bytes'] / 2**20:.1f} MiB spilled to disk "
                     f"({store['spilled_objects']} objects), {store['restored_bytes'] / 2**20:.1f} MiB restored")
    for name, uri in m["outputs"].items():
        if uri:
            lines.append(f"  {name}: {uri}")
    if m["metrics"]:
        mean = m["metrics"]["mean"]
        lines.append("  metrics (mean over labelled groups): " + ", ".join(
            f"{k} {100 * mean[k]:.1f}" for k in ("image_auroc", "pixel_auroc", "au_pro", "mad") if k in mean))
    if m.get("verdicts"):
        lines.extend(precision_lines(m["verdicts"], MAX_LISTED))
    alerts = m.get("alerts", {})
    lines.extend(f"  ALERT group {g!r}: {reason}" for g, reason in sorted(alerts.items())[:MAX_LISTED])
    if len(alerts) > MAX_LISTED:
        lines.append(f"  ... and {len(alerts) - MAX_LISTED} more alerts in {m['outputs']['group_nights']}")
    warnings = m.get("warnings", [])
    lines.extend(f"  WARNING: {w}" for w in warnings[:MAX_LISTED])
    if len(warnings) > MAX_LISTED:
        lines.append(f"  ... and {len(warnings) - MAX_LISTED} more warnings in {m['outputs']['manifest']}")
    lines.extend(f"  FAILED: {f}" for f in report.failures)
    return "\n".join(lines)
