"""Which matching does ``match_radius: auto`` choose, and what does it cost or gain? Fixtured and posed
products, and MVTec bottle when present, each as one batch.

    PYTHONPATH=$PWD .venv/bin/python tests/benchmarks/bench_auto_match.py \
        --weights ../shared/weights/mobilenetv2_100_imagenet_from_tflite.safetensors [--seeds 1] [--q 0.6]

Per dataset: the statistic auto measures (fraction of full matching's nearest patches within 0/1/2
cells of their own, ``matching.nearest_displacement_fractions``), then image / pixel AUROC (%) and
mutual-scoring seconds for full matching, radius 0, 1 and 2, and auto (its choice in brackets), on the
same features. Generated data (``pipeline.data.synthetic``): ``tire`` is centred every time (fixtured),
``plate`` and ``disc`` as generated (fixtured: centred, no turn) and posed (turned by up to +-30
degrees, shifted by up to 6%), 10 good + 10 defective images per seed. The issue-21 goal: auto never
more than 0.5 image AUROC below full matching on a posed product, and most of a radius's gain on a
fixtured one. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench_patchead import aurocs, backbone_config, load  # noqa: E402

from pipeline.data.synthetic import generate_dataset  # noqa: E402
from pipeline.engine.backbones import build_backbone  # noqa: E402
from pipeline.engine.matching import nearest_displacement_fractions  # noqa: E402
from pipeline.engine.musc import score_features  # noqa: E402
from pipeline.engine.timing import StageTimes  # noqa: E402
from pipeline.settings import MuscConfig  # noqa: E402

POSE = (30.0, 0.06)
GENERATED = {"tire (fixtured)": ("tire", (0.0, 0.0)), "plate (fixtured)": ("plate", (0.0, 0.0)),
             "disc (fixtured)": ("disc", (0.0, 0.0)), "plate (posed)": ("plate", POSE),
             "disc (posed)": ("disc", POSE)}
RADII = {"full": None, "r=0": 0, "r=1": 1, "r=2": 2, "auto": "auto"}


def datasets(args: argparse.Namespace, tmp: str):
    """(name, images, labels, masks) per dataset and seed."""
    for name, (category, pose) in GENERATED.items():
        for seed in range(args.seeds):
            root = str(Path(tmp) / f"{name}-{seed}".replace(" ", "_"))
            generate_dataset(root, [category], n_train=0, n_test_good=10, n_test_defect=10, image_size=args.size,
                             seed=seed, pose=pose)
            yield f"{name} seed {seed}", *load(root, category, args.size)
    bottle = Path(args.mvtec) / "bottle" / "test"
    if bottle.is_dir():
        yield "MVTec bottle", *load(str(Path(args.mvtec)), "bottle", args.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="mobilenetv2_100 ImageNet safetensors")
    parser.add_argument("--mvtec", default=str(Path(__file__).resolve().parents[3] / "shared" / "data" / "mvtec_ad"))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--q", type=float, default=None, help="auto_match.min_aligned_fraction (default: the key's)")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = backbone_config(args.weights)
    config.image_size = args.size
    backbone = build_backbone(config)
    base = MuscConfig()
    auto = base.auto_match if args.q is None else type(base.auto_match)(min_aligned_fraction=args.q)
    print(f"backbone {backbone.description}, {args.size} px; auto: q={auto.min_aligned_fraction}, "
          f"{auto.sample_images} images, radii {auto.radii}")
    print("per cell: image / pixel AUROC (%), mutual-scoring s; auto [its choice]")
    print("| data | grid | within 0/1/2 cells | " + " | ".join(RADII) + " |\n|" + "---|" * (len(RADII) + 3),
          flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, images, labels, masks in datasets(args, tmp):
            features = backbone.extract_all(images)
            fractions, _ = nearest_displacement_fractions(features.stages[-1], auto.radii, auto.sample_images)
            cells = []
            for label, radius in RADII.items():
                timings = StageTimes()
                result = score_features(features, MuscConfig(match_radius=radius, auto_match=auto), timings=timings)
                image, pixel = aurocs(result, labels, masks)
                chosen = f" [{'full' if result.matching.radius is None else result.matching.radius}]" \
                    if label == "auto" else ""
                cells.append(f"{100 * image:.1f} / {100 * pixel:.1f}, {timings.seconds['msm']:.2f}s{chosen}")
            h, w = features.stages[0].shape[-2:]
            within = "/".join(f"{fractions[r]:.2f}" for r in auto.radii)
            print(f"| {name} | {h}x{w} | {within} | " + " | ".join(cells) + " |", flush=True)
    print(f"{time.perf_counter() - start:.0f} s; reproduce: PYTHONPATH=$PWD .venv/bin/python "
          f"tests/benchmarks/bench_auto_match.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
