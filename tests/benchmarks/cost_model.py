"""What one night of 10^6 images costs at the nightly config: FLOPs, GPU-hours, object-storage bytes and requests.

    .venv/bin/python tests/benchmarks/cost_model.py [--images 1000000] [--gpu-tflops 989] \
        [--extract-efficiency 0.4] [--msm-efficiency 0.5] [--image-bytes 1e6] [--flagged 0.05] [key=value ...]

The model is ``pipeline/job/cost.py`` (its docstring says what each term counts); this command prints
it for conf/nightly.yaml with any key overridden, e.g. ``musc.match_radius=1`` prices windowed
matching. Re-running it after a config or code change updates the table.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.job.cost import GpuRate, night_cost, night_storage  # noqa: E402
from pipeline.settings import JobConfig, load_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=float, default=1e6)
    parser.add_argument("--gpu-tflops", type=float, default=989.0, help="dense bf16/fp16 rate of one GPU")
    parser.add_argument("--extract-efficiency", type=float, default=0.4)
    parser.add_argument("--msm-efficiency", type=float, default=0.5)
    parser.add_argument("--image-bytes", type=float, default=1e6, help="size of one input image in storage")
    parser.add_argument("--flagged", type=float, default=0.05, help="share of images that get a heat map")
    parser.add_argument("--heatmap-bytes", type=float, default=6e5, help="one heat-map PNG at 518 px")
    parser.add_argument("overrides", nargs="*", help="conf/nightly.yaml keys to change, e.g. musc.match_radius=1")
    args = parser.parse_args()

    cfg = load_config(REPO / "conf" / "nightly.yaml", JobConfig, ["inputs.uris=[s3://b/x/]", *args.overrides])
    cost = night_cost(cfg, GpuRate(args.gpu_tflops, args.extract_efficiency, args.msm_efficiency))
    n = args.images
    extract, msm, total_s = cost.extract_flops, cost.msm_flops, cost.seconds
    gpus_for_hour = math.ceil(cost.gpu_hours(n))
    matching = "full matching" if cost.radius is None else f"radius {cost.radius}"
    if cfg.musc.match_radius == "auto":  # chosen per subset: a fixtured line costs what its radius costs
        matching = "match_radius auto priced as full matching, its upper bound"
    print(f"## Cost of {n:,.0f} images at conf/nightly.yaml {' '.join(args.overrides)}".rstrip()
          + f" ({cfg.backbone.name} at {cfg.backbone.image_size} px, {cost.grid}x{cost.grid} tokens x "
          f"{cost.width} channels, {cost.stages} stages x {cost.passes} passes ({cfg.musc.aggregation}), "
          f"{matching}, subsets of {cost.subset_size})\n")
    print("| term | per image | whole night | GPU time per image | share |\n|---|---|---|---|---|")
    print(f"| extraction | {extract / 1e12:.2f} TFLOP | {n * extract / 1e18:.2f} EFLOP | "
          f"{1e3 * cost.extract_seconds:.2f} ms at {args.extract_efficiency:.0%} | "
          f"{cost.extract_seconds / total_s:.0%} |")
    print(f"| mutual scoring | {msm / 1e12:.2f} TFLOP | {n * msm / 1e18:.2f} EFLOP | "
          f"{1e3 * cost.msm_seconds:.2f} ms at {args.msm_efficiency:.0%} | {cost.msm_seconds / total_s:.0%} |")
    print(f"| total | {(extract + msm) / 1e12:.2f} TFLOP | {n * (extract + msm) / 1e18:.2f} EFLOP | "
          f"{1e3 * total_s:.2f} ms | |")
    print(f"\nGPU-hours: {cost.gpu_hours(n):.1f} at {args.gpu_tflops:.0f} TFLOP/s dense -> "
          f"**{gpus_for_hour} GPUs score {n:,.0f} images in one hour**; "
          f"{'mutual scoring' if cost.msm_seconds > cost.extract_seconds else 'extraction'} dominates "
          f"(mutual scoring grows with the subset size S; halving S halves it).\n")
    storage = night_storage(cfg, cost, n, args.image_bytes, args.flagged, args.heatmap_bytes)
    print("| object storage | written | read | PUT requests | GET requests |\n|---|---|---|---|---|")
    for kind, term in storage.items():
        print(f"| {kind} | {term.written / 1e12:.2f} TB | {term.read / 1e12:.2f} TB | {term.puts:,.0f} | "
              f"{term.gets:,.0f} |")
    written = sum(t.written for t in storage.values())
    read = sum(t.read for t in storage.values())
    print(f"| total | {written / 1e12:.2f} TB | {read / 1e12:.2f} TB | "
          f"{sum(t.puts for t in storage.values()):,.0f} | {sum(t.gets for t in storage.values()):,.0f} |")
    print(f"\nIn one hour that is {written / 3600 / 1e9:.1f} GB/s written and {read / 3600 / 1e9:.1f} GB/s read across "
          f"the cluster ({written / 3600 / 1e9 / gpus_for_hour:.2f} + {read / 3600 / 1e9 / gpus_for_hour:.2f} GB/s per "
          "GPU node); feature shards are most of it.")
    print(("\ncommand: .venv/bin/python tests/benchmarks/cost_model.py " + " ".join(sys.argv[1:])).rstrip())


if __name__ == "__main__":
    main()
