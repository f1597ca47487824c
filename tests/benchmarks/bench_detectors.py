"""Training throughput of ViTAD and Dinomaly on this machine, and the per-trial cost of Ray Tune.

    .venv/bin/python tests/benchmarks/bench_detectors.py [--encoder vit_small] [--iterations 40]

Generated data (2 products, 32 normal training images each); random-init encoders, since only the
timing matters. "Throughput" is optimiser steps x batch size / wall time of ``train_detector``
without validation. "Tune overhead" runs the same trial (same config, 4 evaluations with a
checkpoint each) once as a plain ``train_detector`` call and 4 times as a sequential Ray Tune sweep
(FIFO, one trial at a time, local storage), and reports (sweep wall time / 4) - plain time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.config import DetectorConfig, SweepConfig, config_from_dict, config_to_dict  # noqa: E402
from pipeline.detectors.models import build_detector  # noqa: E402
from pipeline.detectors.training import load_split, train_detector  # noqa: E402
from pipeline.synthetic import generate_dataset  # noqa: E402
from pipeline.tuning import run_sweep, trial_config  # noqa: E402

ENCODERS = {  # name, image size, Dinomaly taps
    "vit_tiny": ("vit_tiny_patch16_224", 64, list(range(2, 10))),
    "vit_small": ("vit_small_patch16_224.dino", 224, list(range(2, 10))),
}


def detector_config(kind: str, encoder: str, iterations: int) -> DetectorConfig:
    name, size, taps = ENCODERS[encoder]
    section = {"encoder": {"name": name, "image_size": size, "random_init": True}}
    if kind == "dinomaly":
        section["encoder"]["layers"] = taps
        section["resize"] = None
    return config_from_dict(DetectorConfig, {"kind": kind, kind: section,
                                             "training": {"iterations": iterations, "batch_size": 8}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", choices=list(ENCODERS), default="vit_tiny")
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    size = ENCODERS[args.encoder][1]
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(f"{tmp}/data", categories=["weave", "disc"], n_train=32, n_test_good=6, n_test_defect=6,
                         image_size=size)
        train = load_split(f"{tmp}/data", "mvtec", ["weave", "disc"], "train", size, normal_only=True)
        validation = load_split(f"{tmp}/data", "mvtec", ["weave", "disc"], "test", size)
        print(f"{args.encoder} encoder at {size} px, batch 8, {args.iterations} iterations, {os.cpu_count()} CPU cores")
        for kind in ("vitad", "dinomaly"):
            cfg = detector_config(kind, args.encoder, args.iterations)
            result = train_detector(build_detector(cfg), train.images, cfg, device="cpu")
            print(f"  {kind:9s} training {result.images_per_second:7.1f} img/s")

        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        cfg = detector_config("vitad", args.encoder, args.iterations)
        trial = trial_config(cfg, {}, 4)
        start = time.perf_counter()
        train_detector(build_detector(trial), train.images, trial, validation=validation, device="cpu")
        plain = time.perf_counter() - start
        sweep = config_from_dict(SweepConfig, {
            "name": "overhead", "detector": config_to_dict(cfg),
            "dataset": {"root": f"{tmp}/data", "layout": "mvtec"},
            "search_space": {"training.seed": {"type": "choice", "values": [1]}},
            "num_samples": 4, "evaluations": 4, "max_concurrent": 1, "scheduler": {"kind": "fifo"},
            "trial_cpus": os.cpu_count(), "storage_path": f"{tmp}/tune", "output_prefix": f"{tmp}/out"})
        start = time.perf_counter()
        run_sweep(sweep)
        per_trial = (time.perf_counter() - start) / 4
        ray.shutdown()
        print(f"  ViTAD trial with 4 evaluations: plain loop {plain:.1f} s, Tune {per_trial:.1f} s per trial "
              f"(sweep of 4, incl. data loading): overhead {per_trial - plain:+.1f} s ({per_trial / plain:.2f}x)")
    print("reproduce: .venv/bin/python tests/benchmarks/bench_detectors.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
