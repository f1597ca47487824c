"""Evaluate MuSc or PatchEAD on a benchmark dataset and print the paper-style metrics table.

    python -m pipeline.evaluation --config conf/eval_demo.yaml [key.path=value ...]

Per category: the test images are split into ``divide_num`` seeded random subsets (paper Table 7),
each subset is scored on its own (MuSc: features -> LNAMD -> MSM -> RsCIN; PatchEAD: batch or
few-shot, ``scorer``), and the metrics are computed over all images of the category, under the
evaluation ``protocol`` (``protocol.py``: this project's choices or the published MuSc code's).
Every category's split is checked before anything is scored (``data/checks.py``: undecodable files,
masks that do not fit their images, a category without anomalies, and mixed aspect ratios under
``dataset.resize: refuse``, are one-line refusals; defective images without a mask are left out of the
pixel metrics and reported). Images that are not square are squashed or padded to the square model
input (``dataset.resize``), their masks with them.
Writes ``metrics.txt``, ``metrics.csv``, ``metrics.json`` (with the wall time of every stage, what
alignment did and what was skipped) and ``scores.csv`` (one row per image) to ``output_dir``; heat
maps when ``save_maps`` > 0.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.benchmarks import (
    Sample,
    check_dataset,
    list_categories,
    load_mask,
    read_split,
    train_references,
)
from ..data.checks import CheckedSplit, check_split
from ..data.demo import ensure_dataset
from ..data.images import Fit, load_image, padding_free
from ..engine.backbones import Backbone, build_backbone
from ..engine.matching import MatchChoice
from ..engine.scorers import score_images
from ..engine.scores import AlignmentReport
from ..engine.subsets import split_subsets
from ..engine.timing import StageTimes
from ..engine.stages import check_backbone
from ..engine.weights import check_weights
from ..reporting.heatmaps import Caption, HeatmapRenderer
from ..reporting.progress import Progress
from ..reporting.provenance import code_version, versions
from ..settings import EvalConfig, config_to_dict, run_program
from .metrics import category_metrics, format_table, mean_row
from .protocol import PROTOCOLS
from .read_ahead import READ_THREADS, ReadAhead, Reader
from .report import HeatMap, write_evaluation_report


@dataclass
class CategoryResult:
    """Everything evaluation produced for one category."""

    samples: list[Sample]
    subset_ids: np.ndarray  # (N,) which subset scored each image
    image_scores_raw: np.ndarray  # (N,)
    image_scores: np.ndarray  # (N,) after RsCIN
    maps: np.ndarray  # (N, S, S) float32
    metrics: dict[str, float]
    seconds: float
    stage_seconds: dict[str, float]  # read, extract, aggregate, msm, maps, rescoring, metrics (PatchEAD: scoring)
    split: CheckedSplit  # what the pixel metrics left out
    alignment: AlignmentReport | None  # None: the scorer did not align
    matching: list[MatchChoice] = field(default_factory=list)  # MuSc: each subset's matching (match_radius)


def category_references(cfg: EvalConfig, category: str) -> np.ndarray | None:
    """Few-shot PatchEAD's known-good references: the category's first ``reference_images`` train images."""
    if cfg.scorer != "patchead" or cfg.patchead.mode != "fewshot":
        return None
    return train_references(cfg.dataset.root, cfg.dataset.layout, category, cfg.patchead.reference_images,
                            cfg.backbone.image_size, split_csv=cfg.dataset.split_csv, fit=image_fit(cfg))


def image_fit(cfg: EvalConfig) -> Fit:
    """How ``dataset.resize`` makes images square: padded, or squashed (also under 'refuse', which
    only lets near-equal aspect ratios through)."""
    return "pad" if cfg.dataset.resize == "pad" else "squash"


def _progress_lines(label: str) -> Callable[[str, int, int], None]:
    """A scorer's ``progress(phase, done, total)`` as throttled lines, one ``Progress`` per phase."""
    phases: dict[str, Progress] = {}

    def report(phase: str, done: int, total: int) -> None:
        if phase not in phases:
            phases[phase] = Progress(f"{label} {phase}", total)
        phases[phase].update(done, total)

    return report


def checked_split(cfg: EvalConfig, category: str) -> CheckedSplit:
    """A category's test split, checked (``data/checks.py``) with its files decoded by a thread pool."""
    samples = read_split(cfg.dataset.root, cfg.dataset.layout, category, "test", split_csv=cfg.dataset.split_csv)
    with ThreadPoolExecutor(READ_THREADS) as pool:
        return check_split(category, samples, pool.map, refuse_mixed_aspects=cfg.dataset.resize == "refuse")


def evaluate_category(backbone: Backbone, cfg: EvalConfig, category: str,
                      split: CheckedSplit | None = None) -> CategoryResult:
    """Score one category's test split subset by subset and compute its metrics under ``cfg.protocol``.

    ``split``: the category's ``checked_split`` (read and checked here when None). Images and masks
    are decoded by a thread pool while earlier images are extracted and scored.
    """
    start = time.perf_counter()
    timings = StageTimes()
    protocol = PROTOCOLS[cfg.protocol]
    settings = cfg.scorer_settings()
    size = cfg.backbone.image_size
    with timings.stage("read"):
        split = split if split is not None else checked_split(cfg, category)
        samples = split.samples
        references = category_references(cfg, category)
    n = len(samples)
    subset_ids = np.zeros(n, dtype=np.int64)
    raw = np.zeros(n, dtype=np.float64)
    final = np.zeros(n, dtype=np.float64)
    maps = np.zeros((n, size, size), dtype=np.float32)
    subsets = split_subsets(n, cfg.divide_num, cfg.seed)
    image_score = protocol.image_score(size, settings.gaussian_sigma)
    resampling = protocol.mask_resampling(cfg.dataset.layout)
    fit = image_fit(cfg)
    alignments, matching = [], []
    with ThreadPoolExecutor(READ_THREADS) as pool:
        reader = Reader(pool, lambda i: load_image(samples[i].image_path, size, fit=fit), subsets, timings)
        masks: ReadAhead | None = None
        for sid, members in enumerate(subsets):
            images = reader.subset(sid)
            if masks is None:  # queued behind the first subsets' images, decoded while they are scored
                masks = ReadAhead([pool.submit(load_mask, s, size, resampling=resampling, fit=fit) for s in samples],
                                  timings)
            label = f"[{category} {sid + 1}/{len(subsets)}]"
            result = score_images(backbone, images, settings, references, _progress_lines(label), image_score, timings)
            subset_ids[members] = sid
            alignments += [result.alignment] if result.alignment is not None else []
            matching += [result.matching] if result.matching is not None else []
            raw[members] = result.image_scores_raw.double().numpy()
            final[members] = result.image_scores.double().numpy()
            with timings.stage("maps"):
                maps[members] = protocol.maps(result.patch_scores, size, settings.gaussian_sigma).numpy()
        mask_array = np.stack(list(masks))
    labels = np.array([s.label for s in samples])
    truth = np.array(split.has_pixel_truth())
    # the padding is no part of any photo: no pixel metric counts it
    valid = np.stack([padding_free(*split.sizes[s.image_path], size) for s in samples])[truth] if fit == "pad" else None
    with timings.stage("metrics"):
        metrics = category_metrics(final, labels, maps[truth], mask_array[truth], protocol.au_pro, valid)
    return CategoryResult(samples, subset_ids, raw, final, maps, metrics, time.perf_counter() - start,
                          timings.seconds, split, AlignmentReport.merge(alignments) if alignments else None, matching)


def _write_heatmaps(result: CategoryResult, cfg: EvalConfig, category: str, out_dir: Path) -> list[HeatMap]:
    """PNG overlays for the ``save_maps`` most anomalous images, one colour scale per category;
    returns them most anomalous first."""
    size, fit = cfg.backbone.image_size, image_fit(cfg)
    renderer = HeatmapRenderer(size, size, float(result.maps.min()), float(result.maps.max()))
    order = np.argsort(-result.image_scores)
    target = out_dir / "heatmaps" / category
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, i in enumerate(order[: cfg.save_maps], start=1):
        sample = result.samples[i]
        caption = Caption(category, Path(sample.image_path).name, float(result.image_scores[i]), rank, len(order),
                          f"ground truth: {sample.defect_type}", bool(sample.label))
        name = f"{sample.defect_type}_{Path(sample.image_path).stem}.png"
        mask = load_mask(sample, size, fit=fit) if sample.label else None
        image = load_image(sample.image_path, size, fit=fit)
        (target / name).write_bytes(renderer.render(image, result.maps[i], caption, mask))
        written.append(HeatMap(target / name, f"#{rank} score {result.image_scores[i]:.4g}: {sample.defect_type}/"
                                              f"{Path(sample.image_path).name}"))
    return written


def write_outputs(cfg: EvalConfig, backbone: Backbone, results: dict[str, CategoryResult], out_dir: Path) -> str:
    """Write table, CSV, JSON and per-image scores; return the printed table text."""
    out_dir.mkdir(parents=True, exist_ok=True)
    per_category = {name: r.metrics for name, r in results.items()}
    scorer = "MuSc" if cfg.scorer == "musc" else f"PatchEAD ({cfg.patchead.mode})"
    protocol = PROTOCOLS[cfg.protocol]
    header = (f"{scorer} | backbone {backbone.description} | divide_num {cfg.divide_num} | values in percent"
              f" | protocol {protocol.name}")
    table = f"{header}\nprotocol {protocol.name}: {protocol.summary}\n{format_table(per_category)}"
    (out_dir / "metrics.txt").write_text(table + "\n")
    columns = list(next(iter(per_category.values())).keys())
    with (out_dir / "metrics.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["category", *columns, "protocol"])
        for name, row in [*per_category.items(), ("mean", mean_row(per_category))]:
            writer.writerow([name, *(row[c] for c in columns), protocol.name])
    summary = {
        "backbone": backbone.description,
        "random_init": backbone.random_init,
        "code_version": code_version(),
        "versions": versions(),
        "metrics_unit": "fraction (0-1); metrics.txt and the console show percent",
        "protocol": protocol.name,
        "protocol_summary": protocol.summary,
        "resize": {"policy": cfg.dataset.resize,  # how images that are not square became the model input
                   "aspect_ratio_range": {name: list(r.split.aspect_range()) for name, r in results.items()}},
        "config": config_to_dict(cfg),
        "per_category": per_category,
        "mean": mean_row(per_category),
        "seconds": {name: r.seconds for name, r in results.items()},
        "stage_seconds": {name: r.stage_seconds for name, r in results.items()},
        "alignment": {name: r.alignment.as_dict() for name, r in results.items() if r.alignment is not None},
        "matching": {name: [m.as_dict() for m in r.matching] for name, r in results.items() if r.matching},
        "skipped": {name: r.split.as_dict() for name, r in results.items()},
    }
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2, default=float, allow_nan=True))
    with (out_dir / "scores.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["category", "image_path", "label", "defect_type", "subset", "score_raw", "score"])
        for name, r in results.items():
            for i, s in enumerate(r.samples):
                writer.writerow([name, s.image_path, s.label, s.defect_type, int(r.subset_ids[i]),
                                 f"{r.image_scores_raw[i]:.6f}", f"{r.image_scores[i]:.6f}"])
    heatmaps = {name: _write_heatmaps(r, cfg, name, out_dir) if cfg.save_maps else [] for name, r in results.items()}
    write_evaluation_report(summary, {name: (r.image_scores, np.array([s.label for s in r.samples]))
                                      for name, r in results.items()}, heatmaps, out_dir)
    return table


def _print_times(result: CategoryResult) -> None:
    """The category's total, mutual scoring alone (MuSc's dominant stage) and every stage."""
    print(f"  done in {result.seconds:.1f}s: image AUROC {100 * result.metrics['image_auroc']:.1f}", file=sys.stderr)
    stages = result.stage_seconds
    if "msm" in stages:
        print(f"  mutual scoring {stages['msm']:.2f}s ({1000 * stages['msm'] / len(result.samples):.1f} ms per image)",
              file=sys.stderr)
    print("  stages: " + ", ".join(f"{name} {seconds:.2f}s" for name, seconds in stages.items()), file=sys.stderr)
    matching = [f"  subset {i + 1}: {m.line()}" if len(result.matching) > 1 else f"  {m.line()}"
                for i, m in enumerate(result.matching)]
    for line in (result.alignment and f"  {result.alignment.line()}", *matching, result.split.line()):
        if line:
            print(line, file=sys.stderr)


def run_evaluation(cfg: EvalConfig) -> dict[str, CategoryResult]:
    """The evaluation command's whole path: optional data generation, scoring, outputs."""
    check_dataset(cfg.dataset, cfg.synthetic)
    check_weights(cfg.backbone, "backbone.weights")
    check_backbone(cfg.backbone)
    ensure_dataset(cfg.dataset.root, cfg.synthetic)
    categories = cfg.dataset.categories or list_categories(cfg.dataset.root, cfg.dataset.layout,
                                                           split_csv=cfg.dataset.split_csv)
    splits = {category: checked_split(cfg, category) for category in categories}  # refusals before any scoring
    torch.manual_seed(cfg.seed)  # random-init backbones are reproducible
    backbone = build_backbone(cfg.backbone)
    print(f"backbone {backbone.description} on {backbone.device}", file=sys.stderr)
    print(f"protocol {cfg.protocol}: {PROTOCOLS[cfg.protocol].summary}", file=sys.stderr)
    results: dict[str, CategoryResult] = {}
    for index, category in enumerate(categories, start=1):
        print(f"category {index}/{len(categories)}: {category}", file=sys.stderr)
        results[category] = evaluate_category(backbone, cfg, category, splits[category])
        _print_times(results[category])
    table = write_outputs(cfg, backbone, results, Path(cfg.output_dir))
    print(table)
    print(f"results written to {cfg.output_dir} (report: {Path(cfg.output_dir) / 'report.html'})", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line: exit 0 when every category was scored, 2 for a mistake in the config or data."""
    def program(cfg: EvalConfig) -> int:
        run_evaluation(cfg)
        return 0

    return run_program(EvalConfig, __doc__.split("\n\n")[0], program, argv)


if __name__ == "__main__":
    sys.exit(main())
