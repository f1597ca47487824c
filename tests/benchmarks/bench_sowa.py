"""SOWA before and after training on generated data, zero-shot and few-shot.

    .venv/bin/python tests/benchmarks/bench_sowa.py [--iterations 30] [--references 2]

SOWA (random-init CLIP ViT-S-16 at 128 px: no CLIP weights are reachable here) is trained on the
labelled test split of an auxiliary generated set (weave and plate, 8 good + 16 defective each)
and evaluated untrained, trained (zero-shot) and trained with a few-shot bank of ``references``
normal images per product, on two held-out sets: new images of the same products, and the other
two products (the paper's setting: it trains on one dataset and scores another). Prints image
AUROC, pixel AUROC and mAD per set.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.data.synthetic import generate_dataset
from pipeline.detectors.registry import build_detector
from pipeline.detectors.training import (
    evaluate_detector,
    load_references,
    load_split,
    train_detector,
)
from pipeline.settings import DetectorConfig, config_from_dict

SIZE = 128
TRAINED_ON = ["weave", "plate"]
UNSEEN = ["wood", "disc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--references", type=int, default=2, help="known-good images per product (few-shot)")
    args = parser.parse_args()
    cfg = config_from_dict(DetectorConfig, {
        "kind": "sowa",
        "sowa": {"clip": {"name": "ViT-S-16", "image_size": SIZE, "random_init": True, "device": "cpu"},
                 "windows": [2, 2, 4, 8]},
        "training": {"iterations": args.iterations, "batch_size": 8}})
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(f"{tmp}/aux", TRAINED_ON, n_train=0, n_test_good=8, n_test_defect=16, image_size=SIZE, seed=1)
        generate_dataset(f"{tmp}/new", TRAINED_ON + UNSEEN, n_train=args.references, n_test_good=6, n_test_defect=6,
                         image_size=SIZE, seed=2)
        train = load_split(f"{tmp}/aux", "mvtec", TRAINED_ON, "test", SIZE)
        sets = {name: (load_split(f"{tmp}/new", "mvtec", cats, "test", SIZE),
                       load_references(f"{tmp}/new", "mvtec", cats, args.references, SIZE))
                for name, cats in (("same products, new images", TRAINED_ON), ("unseen products", UNSEEN))}
        detector = build_detector(cfg)
        rows = {name: {"untrained": evaluate_detector(detector, split, 8, cpu)["mean"]}
                for name, (split, _) in sets.items()}
        start = time.perf_counter()
        result = train_detector(detector, train, cfg, device="cpu")
        seconds = time.perf_counter() - start
        for name, (split, references) in sets.items():
            rows[name]["trained"] = evaluate_detector(detector, split, 8, cpu)["mean"]
            rows[name][f"trained, {args.references}-shot"] = evaluate_detector(detector, split, 8, cpu, references)["mean"]
    print(f"SOWA, {detector.encoder.description}; trained {args.iterations} steps of 8 on {len(train.labels)} "
          f"labelled images of {TRAINED_ON} in {seconds:.1f} s, loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}")
    print(f"{'evaluated on':28s}{'state':20s}{'image AUROC':>12s}{'pixel AUROC':>12s}{'mAD':>8s}")
    for name, states in rows.items():
        for state, m in states.items():
            print(f"{name:28s}{state:20s}{100 * m['image_auroc']:12.1f}{100 * m['pixel_auroc']:12.1f}"
                  f"{100 * m['mad']:8.1f}")
    print("reproduce: .venv/bin/python tests/benchmarks/bench_sowa.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
