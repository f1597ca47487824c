"""Throughput of the nightly job on Ray against the engine called directly in one process.

    .venv/bin/python tests/benchmarks/bench_job.py [--groups 2] [--per-group 48] [--image-size 224]

Same generated images, same backbone (random-init CLIP ViT-B-16 unless --backbone-name/--family
say otherwise), same MuSc settings, one subset per group. "Direct" decodes, extracts (batch 16,
all cores as torch threads) and scores each group in this process. The job runs through
``run_job`` on a local Ray cluster in two layouts, because on a small machine the Ray resource model
decides how many cores extraction gets: one extraction actor with 1 CPU (what fits next to the
decoding tasks on 2 cores), and one actor with all cores (Ray told there is one more logical CPU
than there are cores, so the 0.5-CPU decoding tasks fit beside it). Extraction figures include decoding and
writing the fp16 shards; scoring figures include reading the shards, MuSc, ranking, heat maps of the
flagged images and writing the scores table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.data.images import load_image
from pipeline.data.inputs import records_from_dataset, write_manifest
from pipeline.data.synthetic import generate_dataset
from pipeline.engine.backbones import build_backbone
from pipeline.engine.musc import score_features
from pipeline.job.run import run_job
from pipeline.settings import JobConfig, config_from_dict


def direct(records, cfg: JobConfig) -> dict[str, float]:
    """The engine in one process: decode + extract everything, then MuSc per group."""
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    backbone = build_backbone(cfg.backbone)
    start = time.perf_counter()
    images = [load_image(r.uri, cfg.backbone.image_size) for r in records]
    feats = {}
    for group in sorted({r.group for r in records}):
        idx = [i for i, r in enumerate(records) if r.group == group]
        parts = list(backbone.extract_batches([images[i] for i in idx]))
        feats[group] = type(parts[0]).cat(parts)
    extraction = time.perf_counter() - start
    start = time.perf_counter()
    for group, f in feats.items():
        score_features(f, cfg.musc, "cpu", keep_scale=True)
    scoring = time.perf_counter() - start
    return {"extraction": extraction, "scoring": scoring}


def job(cfg: JobConfig, ray_cpus: float) -> dict[str, float]:
    import ray

    ray.init(num_cpus=ray_cpus, include_dashboard=False, log_to_driver=False)
    try:
        report = run_job(cfg)
    finally:
        ray.shutdown()
    assert report.exit_code == 0, report.failures
    return report.manifest["timings_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--per-group", type=int, default=48)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--family", default="open_clip")
    parser.add_argument("--backbone-name", default="ViT-B-16")
    args = parser.parse_args()
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        categories = ["weave", "disc", "wood", "plate"][: args.groups]
        defects = args.per_group // 4
        generate_dataset(f"{tmp}/images", categories=categories, n_train=0, n_test_good=args.per_group - defects,
                         n_test_defect=defects, image_size=args.image_size)
        records = records_from_dataset(f"{tmp}/images")
        write_manifest(records, f"{tmp}/manifest.csv")
        n = len(records)

        def config(run_id: str, actor_cpus: int) -> JobConfig:
            return config_from_dict(JobConfig, {
                "inputs": {"manifest": f"{tmp}/manifest.csv"}, "output": {"prefix": f"{tmp}/out"}, "run_id": run_id,
                "backbone": {"family": args.family, "name": args.backbone_name, "random_init": True,
                             "image_size": args.image_size, "batch_size": 16},
                "extraction": {"shard_size": 16, "num_cpus_per_actor": actor_cpus},
                "scoring": {"max_subset_size": args.per_group, "num_cpus_per_task": 1},
            })

        timings = {"direct, one process": direct(records, config("direct", 1))}
        timings["Ray job, actor 1 CPU"] = job(config("one-cpu", 1), ray_cpus=cores)
        timings[f"Ray job, actor {cores} CPUs"] = job(config("all-cpus", cores), ray_cpus=cores + 1)
    base = timings["direct, one process"]
    print(f"\n{n} images ({args.groups} groups x {args.per_group}), {args.family}:{args.backbone_name} "
          f"@{args.image_size} random init, {cores} CPU cores, torch {torch.__version__}")
    print(f"{'':28s} {'extraction':>22s} {'scoring':>22s}")
    for name, t in timings.items():
        cells = [f"{n / t[k]:6.2f} img/s ({base[k] / t[k]:4.2f}x)" for k in ("extraction", "scoring")]
        print(f"{name:28s} {cells[0]:>22s} {cells[1]:>22s}")
    print("(x: direct time / this time; below 1 means slower than direct)")
    for name, t in list(timings.items())[1:]:
        print(f"{name}: extraction actors busy {t['extraction_actor_busy']:.1f}s of {t['extraction']:.1f}s wall "
              f"= {n / t['extraction_actor_busy']:.2f} img/s while working (startup, model load and "
              f"pipeline fill are the rest)")
    print("reproduce: .venv/bin/python tests/benchmarks/bench_job.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
