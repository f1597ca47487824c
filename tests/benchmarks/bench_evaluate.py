"""Where the evaluation command's time goes on CPU, stage by stage, and what its CPU wins buy.

    .venv/bin/python tests/benchmarks/bench_evaluate.py                       # ViT-B-16 @ 224, ViT-L-14-336 @ 518
    .venv/bin/python tests/benchmarks/bench_evaluate.py --runs vit_b16@224 --images 83
    .venv/bin/python tests/benchmarks/bench_evaluate.py --runs mobilenetv2@224 --modes straightforward evaluation

One category (MVTec AD bottle from ../shared/data when present, else a generated one), the first
``--images`` test images of each defect type in turn, one subset (divide_num 1), project protocol.
Backbones: random-init CLIP ViTs (the paper's family; ViT-L-14-336 at 518 px is the paper's
setting) or mobilenetv2_100 with the ImageNet weights of ../shared/weights when present. Per run,
in the same process on the same images, it times:

- straightforward: the evaluation as it was before reading ahead: every image decoded one after
  another, then extraction, MuSc, maps, masks decoded one after another, metrics;
- evaluation: ``evaluate_category``, whose thread pool decodes images and masks while extraction
  and scoring run;
- bf16 MSM: the same with ``musc.matmul_precision: bf16``, and bf16 all: also with
  ``backbone.precision: bf16`` (both opt-in, for CPUs with AMX / AVX512-BF16), with the largest
  change of any metric against fp32.

Each of ``--modes`` is run ``--repeats`` times, taking turns after a warm-up pass, and the fastest
run of each is shown (on a shared machine the minimum is the least disturbed). It prints the
seconds of every stage, the wall time, the process CPU time (all threads) and the wall-time ratios
to the straightforward run. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.data.benchmarks import load_mask, read_split
from pipeline.data.images import load_image
from pipeline.data.synthetic import generate_dataset
from pipeline.engine.backbones import Backbone, build_backbone
from pipeline.engine.scorers import score_images
from pipeline.engine.timing import StageTimes
from pipeline.evaluation.benchmark import evaluate_category
from pipeline.evaluation.metrics import METRIC_NAMES, category_metrics
from pipeline.evaluation.protocol import PROTOCOLS
from pipeline.settings import EvalConfig, config_from_dict

SHARED = REPO.parent / "shared"
BOTTLE = SHARED / "data" / "mvtec_ad" / "bottle"
MOBILENET = SHARED / "weights" / "mobilenetv2_100_imagenet_from_tflite.safetensors"
BACKBONES = {
    "vit_b16": {"family": "open_clip", "name": "ViT-B-16", "random_init": True},
    "vit_l14_336": {"family": "open_clip", "name": "ViT-L-14-336", "random_init": True},
    "mobilenetv2": {"family": "timm_cnn", "name": "mobilenetv2_100", "pad_type": "same", "mean": [0.5] * 3,
                    "std": [0.5] * 3, "layers": [2, 3],
                    **({"weights": str(MOBILENET)} if MOBILENET.is_file() else {"random_init": True})},
}
STAGES = ("read", "extract", "aggregate", "msm", "maps", "rescoring", "metrics")
MODES = ["straightforward", "evaluation", "bf16 MSM", "bf16 all"]


def category_root(tmp: Path, per_type: int) -> Path:
    """An MVTec-layout root with one category "bottle": the first ``per_type`` test images of each
    defect type of the real bottle (symlinks, masks too), or generated images when it is absent."""
    root = tmp / "data"
    if not BOTTLE.is_dir():
        generate_dataset(str(root), categories=["weave"], n_train=0, n_test_good=per_type, n_test_defect=2 * per_type,
                         image_size=900, seed=0)
        (root / "weave").rename(root / "bottle")
        return root
    for kind in ("test", "ground_truth"):
        for folder in sorted((BOTTLE / kind).iterdir()):
            target = root / "bottle" / kind / folder.name
            target.mkdir(parents=True)
            for path in sorted(folder.iterdir())[:per_type]:
                (target / path.name).symlink_to(path)
    return root


def straightforward(backbone: Backbone, cfg: EvalConfig) -> tuple[dict[str, float], dict[str, float]]:
    """The evaluation before reading ahead (one subset): serial decoding before and after scoring."""
    timings, protocol, size = StageTimes(), PROTOCOLS[cfg.protocol], cfg.backbone.image_size
    with timings.stage("read"):
        samples = read_split(cfg.dataset.root, "mvtec", "bottle", "test")
        images = np.stack([load_image(s.image_path, size) for s in samples])
    result = score_images(backbone, images, cfg.musc, timings=timings)
    with timings.stage("maps"):
        maps = protocol.maps(result.patch_scores, size, cfg.musc.gaussian_sigma).numpy()
    with timings.stage("read"):
        masks = np.stack([load_mask(s, size) for s in samples])
    with timings.stage("metrics"):
        labels = np.array([s.label for s in samples])
        metrics = category_metrics(result.image_scores.double().numpy(), labels, maps, masks)
    return metrics, timings.seconds


def timed(fn) -> tuple[dict[str, float], dict[str, float], float, float]:
    """(metrics, stage seconds, wall seconds, CPU seconds of the process)."""
    start, cpu = time.perf_counter(), time.process_time()
    metrics, stages = fn()
    return metrics, stages, time.perf_counter() - start, time.process_time() - cpu


def bench(run: str, root: Path, batch_size: int, repeats: int, chosen: list[str]) -> None:
    name, size = run.split("@")
    cfg = config_from_dict(EvalConfig, {
        "dataset": {"root": str(root), "layout": "mvtec", "categories": ["bottle"]},
        "backbone": {**BACKBONES[name], "image_size": int(size), "batch_size": batch_size},
    })
    torch.manual_seed(0)
    backbone = build_backbone(cfg.backbone)
    bf16_msm = dataclasses.replace(cfg, musc=dataclasses.replace(cfg.musc, matmul_precision="bf16"))
    bf16_all = dataclasses.replace(bf16_msm, backbone=dataclasses.replace(cfg.backbone, precision="bf16"))

    fp32_weights = {k: v.clone() for k, v in backbone.state_dict().items()}

    def prepared(c: EvalConfig) -> EvalConfig:
        """bf16 extraction casts the network: every run starts from the exact fp32 weights."""
        backbone.float().load_state_dict(fp32_weights)
        backbone.cfg = c.backbone
        return c

    def ours(c: EvalConfig):
        result = evaluate_category(backbone, prepared(c), "bottle")
        return result.metrics, result.stage_seconds

    modes = {
        "straightforward": lambda: straightforward(backbone, prepared(cfg)),
        "evaluation": lambda: ours(cfg),
        "bf16 MSM": lambda: ours(bf16_msm),
        "bf16 all": lambda: ours(bf16_all),
    }
    modes = {label: fn for label, fn in modes.items() if label in chosen}
    backbone.extract(np.zeros((2, backbone.image_size, backbone.image_size, 3), dtype=np.uint8))  # warm-up
    runs = [{label: timed(fn) for label, fn in modes.items()} for _ in range(repeats)]
    results = {label: min((r[label] for r in runs), key=lambda r: r[2]) for label in modes}
    n = len(read_split(str(root), "mvtec", "bottle", "test"))
    print(f"\n{backbone.description}, {n} images, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")
    print(f"{'stage':<10}" + "".join(f"{k:>17}" for k in results))
    for stage in STAGES:
        print(f"{stage:<10}" + "".join(f"{r[1].get(stage, 0.0):>16.2f}s" for r in results.values()))
    base = results["straightforward"][2]
    print(f"{'wall':<10}" + "".join(f"{r[2]:>16.2f}s" for r in results.values()))
    print(f"{'CPU':<10}" + "".join(f"{r[3]:>16.2f}s" for r in results.values()))
    print(f"{'ratio':<10}" + "".join(f"{base / r[2]:>16.2f}x" for r in results.values()))
    exact = results["straightforward"][0]
    for label, (metrics, *_) in results.items():
        delta = max(abs(metrics[m] - exact[m]) for m in METRIC_NAMES)
        print(f"{label}: largest metric change against straightforward {100 * delta:.3f} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=["vit_b16@224", "vit_l14_336@518"],
                        help="backbone@size, backbone one of " + ", ".join(BACKBONES))
    parser.add_argument("--images", type=int, default=6, help="test images per defect type (bottle: 4 types)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    args = parser.parse_args()
    print("command: " + shlex.join([".venv/bin/python", "tests/benchmarks/bench_evaluate.py", *sys.argv[1:]]))
    with tempfile.TemporaryDirectory() as tmp:
        root = category_root(Path(tmp), args.images)
        for run in args.runs:
            bench(run, root, args.batch_size, args.repeats, ["straightforward", *args.modes])


if __name__ == "__main__":
    main()
