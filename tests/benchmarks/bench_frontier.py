"""The accuracy/cost frontier of mutual scoring: aggregation x match radius x re-scoring, on real and generated data.

    .venv/bin/python tests/benchmarks/bench_frontier.py [--datasets bottle fixtured posed misplaced] \
        [--aggregations lnamd snamd] [--radii null 0 1 2 auto] [--rescorings rscin rscon] [--seeds 0 1] \
        [--images 20] [--naive]

Datasets (256 px, mobilenetv2_100 with the shared ImageNet weights and the settings of
conf/eval_mvtec_mobilenetv2.yaml, so the patch grid is 32x32; one batch per dataset and seed):

- ``bottle``: MVTec AD bottle, all 83 test images (../shared/data/mvtec_ad);
- ``fixtured``: the generated ``board`` in its fixture, ``--images`` good and as many with a scratch or
  a burn spot;
- ``posed``: the same board placed by hand (``board_posed``, turned up to 20 degrees, shifted up to 8%),
  same defects;
- ``misplaced``: the fixtured board, the defective half each with one of its own structures at a place
  of the fixture that has none (every patch of it has look-alikes: only matching by position sees it).

Features are extracted once per dataset and seed; every combination scores them with
``score_features`` and its own ``MuscConfig``. Per row: image AUROC, pixel AUROC and AU-PRO (%,
project protocol; generated data averaged over the seeds), seconds of mutual scoring (``StageTimes``
"msm") and its ratio to today's default (lnamd, null, rscin) in the same run, achieved GFLOP/s of
mutual scoring (``pipeline.job.cost.msm_flops`` / seconds), and the cost model's GPU-hours per 10^6
images at conf/nightly.yaml with that setting; for 'auto' the row names the radius it chose per batch
(null: full matching), and FLOPs and price are those of that choice (the widest over the seeds). A combination the
installed engine does not support (its settings refuse it, or no matcher is registered for a radius)
prints one "not supported" line. ``--naive`` adds a row computed by this file's own loop: LNAMD,
every patch compared only with the same cell of the other images (radius 0), RsCIN: the check that
the misplaced-structure defect is visible by position until the engine's windowed kernel exists.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.data.benchmarks import load_mask, read_split  # noqa: E402
from pipeline.data.images import load_image  # noqa: E402
from pipeline.data.synthetic import render_image  # noqa: E402
from pipeline.engine import matching  # noqa: E402
from pipeline.engine.aggregation import aggregation  # noqa: E402
from pipeline.engine.backbones import build_backbone  # noqa: E402
from pipeline.engine.features import Features  # noqa: E402
from pipeline.engine.msm import interval_bounds  # noqa: E402
from pipeline.engine.musc import score_features  # noqa: E402
from pipeline.engine.rescoring import RESCORERS  # noqa: E402
from pipeline.engine.rscin import rscin  # noqa: E402
from pipeline.engine.scores import BatchScores  # noqa: E402
from pipeline.engine.timing import StageTimes  # noqa: E402
from pipeline.evaluation.metrics import category_metrics  # noqa: E402
from pipeline.evaluation.protocol import PROTOCOLS  # noqa: E402
from pipeline.job.cost import msm_flops, night_cost  # noqa: E402
from pipeline.settings import EvalConfig, JobConfig, MuscConfig, load_config, with_values  # noqa: E402

CONFIG = REPO / "conf" / "eval_mvtec_mobilenetv2.yaml"
NIGHTLY = REPO / "conf" / "nightly.yaml"
DEFAULT = ("lnamd", None, "rscin")
NAIVE = ("lnamd", "naive 0", "rscin")
# generated datasets: (product, defect kinds taking turns on the defective half)
GENERATED = {"fixtured": ("board", ("scratch", "spot")), "posed": ("board_posed", ("scratch", "spot")),
             "misplaced": ("board", ("misplaced_structure",))}
PROTOCOL = PROTOCOLS["project"]


@dataclass
class Batch:
    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) 1 = defective
    masks: np.ndarray  # (N, S, S) bool


def bottle(size: int, root: str) -> Batch:
    samples = read_split(root, "mvtec", "bottle", "test")
    return Batch(np.stack([load_image(s.image_path, size) for s in samples]), np.array([s.label for s in samples]),
                 np.stack([load_mask(s, size) for s in samples]))


def generated(name: str, size: int, seed: int, count: int) -> Batch:
    """``count`` good and ``count`` defective images of a generated dataset, seeded like generate_dataset."""
    product, kinds = GENERATED[name]
    key = [seed, zlib.crc32(product.encode())]
    good = [render_image(product, size, [*key, 1, i]) for i in range(count)]
    bad = [render_image(product, size, [*key, 2, i], kinds[i % len(kinds)]) for i in range(count)]
    images, masks = zip(*good, *bad)
    return Batch(np.stack(images), np.array([0] * count + [1] * count), np.stack(masks))


def unsupported(cfg: MuscConfig) -> str | None:
    """Why the installed engine cannot score ``cfg`` (None when it can)."""
    try:
        aggregation(cfg.aggregation)
    except ValueError as err:
        return str(err)
    if cfg.rescoring not in RESCORERS:
        return f"no re-scorer {cfg.rescoring!r} registered"
    if isinstance(cfg.match_radius, int) and len(matching.MATCHERS) < 2:
        return "no windowed matcher registered (full matching would run instead)"
    return None


def setting(base: MuscConfig, combination: tuple) -> MuscConfig | str:
    """The scorer settings of one combination, or the one-line reason it cannot run."""
    agg, radius, rescoring = combination
    try:
        cfg = with_values(base, {"aggregation": agg, "match_radius": radius, "rescoring": rescoring})
    except (ValueError, TypeError) as err:  # the key's documentation after the reason is left out
        return ": ".join(str(err).splitlines()[0].split(": ")[:2])
    return unsupported(cfg) or cfg


def naive_same_cell(features: Features, cfg: MuscConfig) -> BatchScores:
    """LNAMD + each patch compared only with the same cell of every other image + RsCIN, as plain loops
    over the equations (distance of unit tokens, interval average of the N - 1 distances)."""
    n = len(features)
    _, _, h, w = features.stages[0].shape
    k_lo, k_hi = interval_bounds(n - 1, cfg.topmin_max, cfg.topmin_min)
    total, passes = torch.zeros(n, h * w), 0
    for stage in features.stages:
        for z in aggregation("lnamd").tokens(stage.float(), cfg):
            distance = torch.sqrt((2 - 2 * torch.einsum("imc,jmc->ijm", z, z)).clamp_min(0))
            distance[torch.arange(n), torch.arange(n)] = float("inf")
            total += distance.sort(dim=1).values[:, k_lo:k_hi].mean(dim=1)
            passes += 1
    patch = (total / passes).view(n, h, w)
    raw = patch.flatten(1).amax(dim=1)
    return BatchScores(patch, raw, rscin(raw, features.embedding.float(), cfg.rscin_windows))


def metrics(result: BatchScores, batch: Batch, cfg: MuscConfig) -> tuple[float, float, float]:
    maps = PROTOCOL.maps(result.patch_scores.float(), batch.images.shape[1], cfg.gaussian_sigma).numpy()
    row = category_metrics(result.image_scores.numpy(), batch.labels, maps, batch.masks)
    return row["image_auroc"], row["pixel_auroc"], row["au_pro"]


def gpu_hours(nightly: JobConfig, combination: tuple) -> float:
    agg, radius, rescoring = combination
    cfg = with_values(nightly, {"musc.aggregation": agg, "musc.match_radius": radius, "musc.rescoring": rescoring})
    return night_cost(cfg).gpu_hours(1e6)


def parse_radius(text: str) -> int | str | None:
    return None if text == "null" else text if text == "auto" else int(text)


def score_row(combination: tuple, cfg: MuscConfig, batches: list[tuple[Batch, Features]],
              device: torch.device) -> tuple[tuple[float, ...], list[int | None]]:
    """Image AUROC, pixel AUROC, AU-PRO, MSM seconds and achieved MSM FLOP/s, averaged over the batches,
    and the radius each batch was scored with ('auto': its choice; None: full matching)."""
    values, radii = [], []
    for batch, features in batches:
        timings = StageTimes()
        if combination == NAIVE:
            begin = time.perf_counter()
            result = naive_same_cell(features, cfg)
            timings.seconds["msm"] = time.perf_counter() - begin
        else:
            result = score_features(features, cfg, device, timings=timings)
        radius = 0 if combination == NAIVE else result.matching.radius if result.matching else None
        radii.append(radius)
        passes = aggregation(cfg.aggregation).passes(cfg.aggregation_degrees)
        flops = msm_flops(len(features), tuple(features.stages[0].shape[-2:]),
                          [stage.shape[1] for stage in features.stages], passes, radius)
        seconds = timings.seconds["msm"]
        values.append((*metrics(result, batch, cfg), seconds, flops / seconds))
    return tuple(np.mean(values, axis=0)), radii


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=["bottle", *GENERATED], choices=["bottle", *GENERATED])
    parser.add_argument("--aggregations", nargs="*", default=["lnamd", "snamd"])
    parser.add_argument("--radii", nargs="*", type=parse_radius, default=[None, 0, 1, 2, "auto"])
    parser.add_argument("--rescorings", nargs="*", default=["rscin", "rscon"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0], help="generated data only")
    parser.add_argument("--images", type=int, default=20, help="good and defective images per generated batch")
    parser.add_argument("--naive", action="store_true", help="add the naive same-cell row (module docstring)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    evaluation = load_config(CONFIG, EvalConfig)
    size, base = evaluation.backbone.image_size, evaluation.musc
    backbone = build_backbone(evaluation.backbone)
    nightly = load_config(NIGHTLY, JobConfig, ["inputs.uris=[s3://b/x/]"])
    combinations = [(a, r, s) for a in args.aggregations for r in args.radii for s in args.rescorings]
    combinations = [DEFAULT] + [c for c in combinations if c != DEFAULT] + ([NAIVE] if args.naive else [])
    print(f"backbone {backbone.description}, {size} px, scoring on {backbone.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    header = ("| dataset | aggregation | radius | rescoring | image AUROC | pixel AUROC | AU-PRO | MSM s | "
              "MSM ratio | GFLOP/s | GPU-h / 10^6 |")
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    print(header, flush=True)
    start = time.perf_counter()
    for dataset in args.datasets:
        batches = [bottle(size, str(REPO / evaluation.dataset.root))] if dataset == "bottle" else \
            [generated(dataset, size, seed, args.images) for seed in args.seeds]
        batches = [(batch, backbone.extract_all(batch.images)) for batch in batches]  # features once
        default_seconds = None
        for combination in combinations:
            agg, radius, rescoring = combination
            names = f"| {dataset} | {agg} | {'null' if radius is None else radius} | {rescoring} |"
            cfg = base if combination == NAIVE else setting(base, combination)
            if isinstance(cfg, str):
                line = f"{names} not supported yet: {cfg} |"
            else:
                (image, pixel, pro, seconds, rate), radii = score_row(combination, cfg, batches, backbone.device)
                if radius == "auto":  # what it chose, and the price of that choice
                    chosen = "/".join("null" if r is None else str(r) for r in radii)
                    names = names.replace("| auto |", f"| auto: {chosen} |")
                    combination = (agg, max(radii, key=lambda r: 10**9 if r is None else r), rescoring)
                default_seconds = default_seconds or seconds  # DEFAULT runs first
                naive = combination == NAIVE  # a plain loop: its rate and price say nothing of the engine
                cost = "-" if naive else f"{gpu_hours(nightly, combination):.2f}"
                line = (f"{names} {100 * image:.1f} | {100 * pixel:.1f} | {100 * pro:.1f} | {seconds:.3f} | "
                        f"{seconds / default_seconds:.3f} | {'-' if naive else f'{rate / 1e9:.1f}'} | {cost} |")
            rows.append(line)
            print(line, flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s; generated data: mean over seeds {args.seeds}, "
          f"{args.images} good + {args.images} defective images per batch\n")
    print("\n".join(rows))
    print("\nreproduce: .venv/bin/python tests/benchmarks/bench_frontier.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
