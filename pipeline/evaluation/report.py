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
    percent,
    render_report,
    thumbnail,
)
from .metrics import TABLE_COLUMNS


@dataclass(frozen=True)
class HeatMap:
    """A heat-map PNG the evaluation wrote, with the caption the report gives it."""

    path: Path
    caption: str


def write_evaluation_report(summary: dict[str, Any], scores: dict[str, tuple[np.ndarray, np.ndarray]],
                            heatmaps: dict[str, list[HeatMap]], out_dir: Path) -> Path:
    """Write ``out_dir/report.html`` from ``metrics.json``'s content (``summary``), each category's
    image scores and labels, and its heat maps (most anomalous first); returns the path."""
    per_category = summary["per_category"]
    rows = [[name, *(percent(m.get(c)) for c in TABLE_COLUMNS)] for name, m in per_category.items()]
    rows.append(["mean", *(percent(summary["mean"].get(c)) for c in TABLE_COLUMNS)])
    sections = [Section("Metrics", [Table(["category", *TABLE_COLUMNS], rows,
                                          note=f"percent; protocol {summary['protocol']}: "
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
    code = summary["code_version"]
    dataset = config["dataset"]
    facts = [("backbone", summary["backbone"]), ("dataset", f"{dataset['root']} ({dataset['layout']})"),
             ("scorer", config["scorer"]), ("divide_num", str(config["divide_num"])),
             ("protocol", summary["protocol"]),
             ("code", ", ".join(f"{k} {v}" for k, v in code.items() if v) or "unknown"),
             ("versions", ", ".join(f"{k} {v}" for k, v in summary["versions"].items()))]
    warning = ("The backbone's weights are random: these metrics show that the evaluation works, not what the "
               "method achieves.") if summary["random_init"] else None
    path = out_dir / "report.html"
    path.write_text(render_report(f"Evaluation: {config['scorer']} on {dataset['root']}", facts, sections, warning))
    return path
