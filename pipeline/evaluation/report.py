"""``report.html`` of a benchmark evaluation: the same kind of page as the nightly run's report
(``reporting.report``): the metrics table, per category the score histogram by label and the most
anomalous images' heat maps, the time per stage, and the provenance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..reporting.report import (
    Figure,
    Gallery,
    GalleryItem,
    Section,
    Table,
    histogram_png,
    metrics_table,
    provenance_facts,
    render_report,
    thumbnail,
)
from .metrics import TABLE_COLUMNS


@dataclass(frozen=True)
class HeatMap:
    """A heat-map PNG the evaluation wrote, with the caption the report gives it."""

    path: Path
    caption: str


def _resize_fact(resize: dict[str, Any]) -> str:
    """The ``dataset.resize`` policy and the range of aspect ratios it was applied to."""
    ranges = resize["aspect_ratio_range"].values()
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    return f"{resize['policy']} (dataset.resize), test images of aspect ratio (width / height) {low:.2f} to {high:.2f}"


def write_evaluation_report(summary: dict[str, Any], scores: dict[str, tuple[np.ndarray, np.ndarray]],
                            heatmaps: dict[str, list[HeatMap]], out_dir: Path) -> Path:
    """Write ``out_dir/report.html`` from ``metrics.json``'s content (``summary``), each category's
    image scores and labels, and its heat maps (most anomalous first); returns the path."""
    per_category = summary["per_category"]
    sections = [Section("Metrics", [metrics_table("category", per_category, summary["mean"], TABLE_COLUMNS,
                                                  f"percent; protocol {summary['protocol']}: "
                                                  f"{summary['protocol_summary']}")])]
    stages = sorted({s for per in summary["stage_seconds"].values() for s in per})
    sections.append(Section("Time per stage", [Table(
        ["category", "total", *stages],
        [[name, round(summary["seconds"][name], 2), *(round(per.get(s, 0.0), 2) for s in stages)]
         for name, per in summary["stage_seconds"].items()], note="seconds")]))
    for name, (image_scores, labels) in scores.items():
        section = Section(f"Category {name}")
        section.blocks.append(Figure(histogram_png(image_scores, None, f"{name}: {len(image_scores)} test images",
                                                   labels)))
        items = [GalleryItem(thumbnail(h.path.read_bytes()), h.caption, str(h.path.relative_to(out_dir)))
                 for h in heatmaps.get(name, [])]
        section.blocks.append(Gallery("Most anomalous images (highest score first)", items,
                                      "" if items else "no heat maps: save_maps is 0"))
        sections.append(section)
    config = summary["config"]
    dataset = config["dataset"]
    facts = [("backbone", summary["backbone"]), ("dataset", f"{dataset['root']} ({dataset['layout']})"),
             ("scorer", config["scorer"]), ("divide_num", str(config["divide_num"])),
             ("protocol", summary["protocol"]), ("images made square", _resize_fact(summary["resize"])),
             *provenance_facts(summary["code_version"], summary["versions"])]
    warning = ("The backbone's weights are random: these metrics show that the evaluation works, not what the "
               "method achieves.") if summary["random_init"] else None
    path = out_dir / "report.html"
    path.write_text(render_report(f"Evaluation: {config['scorer']} on {dataset['root']}", facts, sections, warning))
    return path
