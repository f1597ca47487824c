"""Training throughput of ViTAD, Dinomaly and SOWA on this machine, the cost of SOWA's window
attention against a per-window loop, and the per-trial cost of Ray Tune.

    .venv/bin/python tests/benchmarks/bench_detectors.py [--encoder vit_small] [--iterations 40]

Generated data (2 products, 32 normal training images each; SOWA trains on the 24 labelled test
images); random-init encoders, since only the timing matters. "Throughput" is optimiser steps x
batch size / wall time of ``train_detector`` without validation. The window-attention line times
one FWA adapter at ViT-L-14-336's shape (8 images, 24 x 24 tokens of width 1024, 16 heads) for
each window side, all windows in one batched call against a Python loop over the windows.
"Tune overhead" runs the same trial (same config, 4 evaluations with a checkpoint each) once as a
plain ``train_detector`` call and 4 times as a sequential Ray Tune sweep (FIFO, one trial at a
time, local storage), and reports (sweep wall time / 4) - plain time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.data.synthetic import generate_dataset
from pipeline.detectors.registry import build_detector
from pipeline.detectors.training import load_split, train_detector
from pipeline.detectors.window_attention import FrozenWindowAttention, vv_attention
from pipeline.settings import (
    DetectorConfig,
    SweepConfig,
    config_from_dict,
    config_to_dict,
)
from pipeline.tuning.sweep import run_sweep, trial_config

ENCODERS = {  # timm name, image size, Dinomaly taps, SOWA's CLIP of about the same size and its windows
    "vit_tiny": ("vit_tiny_patch16_224", 64, list(range(2, 10)), "ViT-S-16", [2, 2, 4, 4]),
    "vit_small": ("vit_small_patch16_224.dino", 224, list(range(2, 10)), "ViT-B-16", [2, 7, 7, 14]),
}


def detector_config(kind: str, encoder: str, iterations: int) -> DetectorConfig:
    name, size, taps, clip, windows = ENCODERS[encoder]
    if kind == "sowa":
        section = {"clip": {"name": clip, "image_size": size, "random_init": True}, "windows": windows}
    else:
        section = {"encoder": {"name": name, "image_size": size, "random_init": True}}
    if kind == "dinomaly":
        section["encoder"]["layers"] = taps
        section["resize"] = None
    return config_from_dict(DetectorConfig, {"kind": kind, kind: section,
                                             "training": {"iterations": iterations, "batch_size": 8}})


def window_attention_loop(adapter: FrozenWindowAttention, tokens: torch.Tensor, side: int) -> torch.Tensor:
    """The straightforward FWA: attend window by window and write each back into its place."""
    b, _, c = tokens.shape
    x = adapter.norm(tokens) if adapter.norm is not None else tokens
    grid = x.view(b, side, side, c)
    out = torch.empty_like(grid)
    h, w = adapter.window
    for top in range(0, side, h):
        for left in range(0, side, w):
            window = grid[:, top:top + h, left:left + w].reshape(b, h * w, c)
            attended = F.linear(vv_attention(window, adapter.v_weight, adapter.v_bias, adapter.heads),
                                adapter.out_weight, adapter.out_bias)
            out[:, top:top + h, left:left + w] = attended.view(b, h, w, c)
    return adapter.project(out.reshape(b, side * side, c))


@torch.no_grad()
def time_window_attention() -> None:
    side, width, heads = 24, 1024, 16
    tokens = torch.randn(8, side * side, width)
    for window in (2, 4, 6, 12):
        adapter = FrozenWindowAttention(nn.MultiheadAttention(width, heads), (window, window), 768,
                                        norm=nn.LayerNorm(width))
        timings = []
        for run in (lambda: adapter(tokens, side), lambda: window_attention_loop(adapter, tokens, side)):
            run()
            start = time.perf_counter()
            for _ in range(3):
                result = run()
            timings.append((time.perf_counter() - start) / 3)
        assert torch.allclose(result, adapter(tokens, side), atol=1e-4)
        print(f"  FWA window {window:2d}: batched {timings[0] * 1e3:6.1f} ms, per-window loop "
              f"{timings[1] * 1e3:7.1f} ms ({timings[1] / timings[0]:.1f}x slower), 8 x 24 x 24 x 1024")


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
        for kind in ("vitad", "dinomaly", "sowa"):
            cfg = detector_config(kind, args.encoder, args.iterations)
            detector = build_detector(cfg)
            result = train_detector(detector, validation if kind == "sowa" else train, cfg, device="cpu")
            print(f"  {kind:9s} training {result.images_per_second:7.1f} img/s  ({detector.encoder.description})")
        time_window_attention()

        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        cfg = detector_config("vitad", args.encoder, args.iterations)
        trial = trial_config(cfg, {}, 4)
        start = time.perf_counter()
        train_detector(build_detector(trial), train, trial, validation=validation, device="cpu")
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
