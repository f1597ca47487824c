"""Does alignment ever make things worse? MuSc and PatchEAD with and without it, in the same run.

    .venv/bin/python tests/benchmarks/bench_alignment.py [--weights PATH] [--seeds 3] [--size 128] [--products ...]

Generated data of three kinds (10 good + 10 defective images per product and seed):

- posed products: ``plate`` and ``disc`` turned by up to +-30 degrees and shifted by up to 6%
  (alignment must keep its gain);
- rotationally symmetric parts: ``tire``, posed the same way (any rotation fits its tread);
- textures: ``tile`` (grey, cropped at varying scales), ``weave`` and ``wood``, as generated.

Columns per scorer: no alignment, alignment as it was before issue 17 (``reference: first`` and no
limits: every fit with 8 inliers accepted and applied, whatever the rest of the batch), and
alignment with the default limits (``AlignmentConfig``). Image / pixel AUROC (%) averaged over the
seeds, then the difference of image AUROC against no alignment, and what the default alignment did
(aligned / rejected / skipped).
Backbone: mobilenetv2_100 with ImageNet weights when ``--weights`` points at them (see
../shared/weights), else a random-init resnet18 (weaker features, where alignment matters more).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench_patchead import aurocs, backbone_config, load  # noqa: E402

from pipeline.data.synthetic import generate_dataset  # noqa: E402
from pipeline.engine.backbones import build_backbone  # noqa: E402
from pipeline.engine.scorers import score_images  # noqa: E402
from pipeline.engine.scores import AlignmentReport  # noqa: E402
from pipeline.settings import AlignmentConfig, MuscConfig, PatchEADConfig  # noqa: E402

POSE = (30.0, 0.06)
KINDS = {"posed products": (["plate", "disc"], POSE), "symmetric parts": (["tire"], POSE),
         "textures": (["tile", "weave", "wood"], (0.0, 0.0))}
BEFORE = AlignmentConfig(reference="first", min_inliers=8, min_inlier_ratio=0.0, max_angle=180.0,
                         max_scale_change=1e9, min_similarity_gain=-2.0, min_aligned_fraction=0.0)
VARIANTS = {"none": None, "before": BEFORE, "aligned": AlignmentConfig()}
SCORERS = {"MuSc": MuscConfig, "PatchEAD": PatchEADConfig}


def settings(scorer: str, variant: str) -> MuscConfig | PatchEADConfig:
    limits = VARIANTS[variant]
    return SCORERS[scorer](align=limits is not None, alignment=limits or AlignmentConfig())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="mobilenetv2_100 ImageNet safetensors")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--products", nargs="*", default=None, help="only these products (default: all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = backbone_config(args.weights)
    config.image_size = args.size
    backbone = build_backbone(config)
    print(f"backbone {backbone.description}, {args.size} px, {args.seeds} seeds x (10 good + 10 defective)")
    header = "| kind | product | scorer | none | before | aligned | image AUROC change (before / aligned) | " \
             "default alignment |"
    print(header + "\n|" + "---|" * (header.count("|") - 1), flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for kind, (categories, pose) in KINDS.items():
            for category in (c for c in categories if args.products is None or c in args.products):
                results: dict[tuple[str, str], list[tuple[float, float]]] = {}
                reports: dict[str, list[AlignmentReport]] = {}
                for seed in range(args.seeds):
                    root = str(Path(tmp) / f"{category}-{seed}")
                    generate_dataset(root, [category], n_train=0, n_test_good=10, n_test_defect=10,
                                     image_size=args.size, seed=seed, pose=pose)
                    images, labels, masks = load(root, category, args.size)
                    for scorer in SCORERS:
                        for variant in VARIANTS:
                            result = score_images(backbone, images, settings(scorer, variant))
                            results.setdefault((scorer, variant), []).append(aurocs(result, labels, masks))
                            if variant == "aligned":
                                reports.setdefault(scorer, []).append(result.alignment)
                for scorer in SCORERS:
                    means = {v: np.mean(results[(scorer, v)], axis=0) * 100 for v in VARIANTS}
                    cells = " | ".join(f"{i:.1f} / {p:.1f}" for i, p in means.values())
                    change = " / ".join(f"{means[v][0] - means['none'][0]:+.1f}" for v in ("before", "aligned"))
                    report = AlignmentReport.merge(reports[scorer])
                    did = f"{report.aligned} aligned, {sum(report.rejected.values())} rejected, " \
                          f"{report.skipped} skipped"
                    print(f"| {kind} | {category} | {scorer} | {cells} | {change} | {did} |", flush=True)
    print(f"{time.perf_counter() - start:.0f} s")
    print("reproduce: .venv/bin/python tests/benchmarks/bench_alignment.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
