"""The run report: ``runs/<run_id>/report.html``, one self-contained page for reviewers and on-call.

Per group a score histogram with the flag line and a gallery of the flagged images' heat maps (the
highest scores first, capped so the page stays small; each thumbnail links to the full PNG); the
metrics table when the inputs carry labels; counts by status with the rows that were not scored and
why; timings and provenance (config hash, versions, the redacted config's main keys).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ..evaluation.metrics import TABLE_COLUMNS
from ..reporting.report import (
    Figure,
    Gallery,
    GalleryItem,
    Section,
    Table,
    TrendNight,
    histogram_png,
    metrics_table,
    provenance_facts,
    render_report,
    thumbnail,
    trend_png,
)
from ..settings import ZERO_SHOT_DETECTORS, TrendsConfig, config_from_dict
from ..storage import read_bytes, write_bytes
from .layout import RunLayout
from .nights import Nights
from .scores_table import SCORED_STATUSES

GALLERY_PER_GROUP = 24
GALLERY_TOTAL = 240
ERROR_ROWS_PER_GROUP = 50


def trend_figure(group: str, history: list[dict], trends: TrendsConfig, zero_shot: bool) -> Figure:
    """The group's last nights from its group_nights rows (tonight last)."""
    nights = [TrendNight(r["run_date"], r["flag_rate"], {"embedding_shift": r["embedding_shift"],
                                                        "score_shift": r["score_shift"]}, r["alert"])
              for r in history]
    bands = {"embedding_shift": trends.max_embedding_shift, "score_shift": trends.score_band(zero_shot)}
    last = history[-1]
    verdict = f"ALERT: {last['alert_reason']}" if last["alert"] else (last["alert_reason"] or "no alert")
    return Figure(trend_png(nights, bands, trends.flag_rate_band, f"{group}: last {len(nights)} nights"),
                  f"Trend over the last nights (tonight shaded; {verdict})")


def _group_section(group: str, summary: dict, storage_options: dict[str, Any] | None, budget: list[int],
                   trend: Figure | None) -> Section:
    rows = pq.read_table(io.BytesIO(read_bytes(summary["scores_uri"], storage_options))).to_pylist()
    scored = [r for r in rows if r["status"] in SCORED_STATUSES]
    section = Section(f"Group {group}")
    if trend is not None:
        section.blocks.append(trend)
    section.blocks.append(Table(["inputs", "scored", "flagged", *sorted(summary["statuses"])],
                                [[summary["inputs"], summary["scored"], summary["flagged"],
                                  *(summary["statuses"][k] for k in sorted(summary["statuses"]))]]))
    if scored:
        scores = np.array([r["score"] for r in scored])
        flagged = [r for r in scored if r["is_anomaly"]]
        labels = np.array([r["label"] for r in scored]) if all(r["label"] is not None for r in scored) else None
        cut = min(r["score"] for r in flagged) if flagged else None
        policy = scored[0]["flag_policy"]
        section.blocks.append(Figure(histogram_png(scores, cut, f"{group}: {len(scored)} scored, {len(flagged)} "
                                                   f"flagged ({policy})", labels)))
        shown = sorted((r for r in flagged if r["map_uri"]), key=lambda r: -r["score"])
        take = min(len(shown), GALLERY_PER_GROUP, budget[0])
        budget[0] -= take
        items = [GalleryItem(thumbnail(read_bytes(r["map_uri"], storage_options)),
                             f"#{r['rank_in_group']} score {r['score']:.4g}: {r['uri']}", r["map_uri"])
                 for r in shown[:take]]
        note = f"{len(shown) - take} more flagged images have heat maps (see the scores table's map_uri)" \
            if len(shown) > take else ""
        section.blocks.append(Gallery("Flagged images (highest score first)", items, note))
    failed = [r for r in rows if r["status"] not in SCORED_STATUSES]
    if failed:
        section.blocks.append(Table(["uri", "status", "error"],
                                    [[r["uri"], r["status"], r["error"] or ""] for r in failed[:ERROR_ROWS_PER_GROUP]],
                                    "Images not scored",
                                    f"{len(failed) - ERROR_ROWS_PER_GROUP} more in the scores table"
                                    if len(failed) > ERROR_ROWS_PER_GROUP else ""))
    return section


def _metrics_section(metrics: dict) -> Section:
    columns = [c for c in TABLE_COLUMNS if any(c in m for m in metrics["per_group"].values())]
    return Section("Metrics", [metrics_table("group", metrics["per_group"], metrics["mean"], columns,
                                             "percent; computed on the labelled inputs")])


def write_run_report(manifest: dict, summaries: dict[str, dict], layout: RunLayout,
                     storage_options: dict[str, Any] | None = None, nights: Nights | None = None) -> str:
    """Write ``report.html`` for a run (with each group's trend when the group_nights table was
    written); returns its URI."""
    counts = manifest["counts"]
    facts = [("status", manifest["status"]), ("run", f"{manifest['run_id']} ({manifest['run_date']})"),
             ("config hash", manifest["config_hash"]), ("backbone", manifest["backbone"]),
             ("images", f"{counts['inputs']} in, {counts['scored']} scored, {counts['failed']} not scored, "
                        f"{counts['flagged']} flagged, {counts['rows_written']} rows written"),
             ("started", manifest["started_at"]), ("finished", manifest["finished_at"]),
             *provenance_facts(manifest["code_version"], manifest["versions"]),
             *((name, uri) for name, uri in manifest["outputs"].items() if uri)]
    warning = None if manifest["scores_meaningful"] else (
        "The model's weights are random: these scores show that the pipeline works, not what the method finds.")
    sections = []
    if manifest["failures"]:
        sections.append(Section("Failures", [Table(["failure"], [[f] for f in manifest["failures"]],
                                                   note="re-run the same command to resume")]))
    if manifest.get("alerts"):
        sections.append(Section("Alerts", [Table(["group", "why"], [[g, why] for g, why in sorted(
            manifest["alerts"].items())], note="the group_nights table has every group's statistics")]))
    if manifest.get("metrics"):
        sections.append(_metrics_section(manifest["metrics"]))
    sections.append(Section("Counts and timings", [
        Table(["status", "images"], [[k, v] for k, v in sorted(counts["statuses"].items())]),
        Table(["stage", "seconds"], [[k, round(v, 1)] for k, v in manifest["timings_s"].items()])]))
    budget = [GALLERY_TOTAL]
    # a trend from a group's second night on (one night is no trend)
    history = {g: h for g, h in (nights.history if nights is not None else {}).items() if len(h) > 1}
    trends = config_from_dict(TrendsConfig, manifest["config"]["trends"]) if history else None
    zero_shot = manifest["config"]["detector"] in ZERO_SHOT_DETECTORS
    sections.extend(_group_section(g, summaries[g], storage_options, budget,
                                   trend_figure(g, history[g], trends, zero_shot) if g in history else None)
                    for g in sorted(summaries))
    title = f"MuSc run {manifest['run_id']} ({manifest['run_date']}): {manifest['status']}"
    html = render_report(title, facts, sections, warning)
    write_bytes(layout.report, html.encode(), storage_options)
    return layout.report
