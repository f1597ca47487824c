"""What one night of 10^6 images costs at the nightly config: FLOPs, GPU-hours, object-storage bytes and requests.

    .venv/bin/python tests/benchmarks/cost_model.py [--images 1000000] [--gpu-tflops 989] \
        [--extract-efficiency 0.4] [--msm-efficiency 0.5] [--image-bytes 1e6] [--flagged 0.05]

Everything is derived from conf/nightly.yaml and the model's own shapes (open_clip's config of the
backbone; no weights needed), so re-running it after a config or code change updates the table:

- extraction: exact multiply-add count of the ViT forward pass (patch embedding, per block QKV,
  attention scores, attention x V, output projection, MLP), 2 FLOPs per multiply-add;
- mutual scoring: per (stage, degree) pair and per unordered image pair of a subset one
  (M x C) x (C x M) similarity matmul, so per image (S - 1) / 2 pairs x 2 M^2 C x stages x degrees;
  LNAMD, the top-k merges and RsCIN are memory-bound and left out (they are under 5% on GPU);
- GPU time at a stated fraction ("efficiency") of a stated dense rate: the default is an H100 SXM's
  989 TFLOP/s bf16/fp16 dense with 40% for the ViT (attention and small ops) and 50% for MSM's large
  well-shaped matmuls (on this project's CPU the same tiled MSM reaches 78% of plain matmul speed,
  tests/benchmarks/bench_msm.py);
- storage: the measured bytes per image of each object (tests/benchmarks/bench_features.py at this
  config), one request per object read or written, inputs read once, features written and read once.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.settings import JobConfig, load_config  # noqa: E402


def vit_flops(width: int, depth: int, tokens: int, patch: int, mlp_ratio: float) -> float:
    """FLOPs of one image through a ViT: 2 per multiply-add."""
    patch_embed = (tokens - 1) * (patch * patch * 3) * width
    per_block = (tokens * width * 3 * width  # QKV
                 + 2 * tokens * tokens * width  # scores and attention x V, all heads
                 + tokens * width * width  # output projection
                 + 2 * tokens * width * int(mlp_ratio * width))  # MLP up and down
    return 2.0 * (patch_embed + depth * per_block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=float, default=1e6)
    parser.add_argument("--gpu-tflops", type=float, default=989.0, help="dense bf16/fp16 rate of one GPU")
    parser.add_argument("--extract-efficiency", type=float, default=0.4)
    parser.add_argument("--msm-efficiency", type=float, default=0.5)
    parser.add_argument("--image-bytes", type=float, default=1e6, help="size of one input image in storage")
    parser.add_argument("--flagged", type=float, default=0.05, help="share of images that get a heat map")
    parser.add_argument("--heatmap-bytes", type=float, default=6e5, help="one heat-map PNG at 518 px")
    args = parser.parse_args()

    import open_clip

    cfg = load_config(REPO / "conf" / "nightly.yaml", JobConfig, ["inputs.uris=[s3://b/x/]"])
    vision = open_clip.get_model_config(cfg.backbone.name)["vision_cfg"]
    width, depth, patch = vision["width"], vision["layers"], vision["patch_size"]
    grid = cfg.backbone.image_size // patch
    m = grid * grid
    stages = len(cfg.backbone.layers or [0, 1, 2, 3])
    degrees = len(cfg.musc.aggregation_degrees)
    s = cfg.scoring.max_subset_size
    n = args.images

    extract = vit_flops(width, depth, m + 1, patch, vision.get("mlp_ratio", 4.0))
    msm = (s - 1) / 2 * 2.0 * m * m * width * stages * degrees
    rate = args.gpu_tflops * 1e12
    gpu_s = {"extraction": extract / (rate * args.extract_efficiency),
             "mutual scoring": msm / (rate * args.msm_efficiency)}
    total_s = sum(gpu_s.values())
    gpus_for_hour = math.ceil(n * total_s / 3600)

    feature_bytes = stages * m * (width + 2) + 768 * 4 + m * 4  # int8 + scales, embedding, attention
    subset_bytes = m * 4 + 16
    shards = n / cfg.extraction.shard_size
    subsets = n / s
    storage = {  # kind: (bytes written, bytes read, PUT requests, GET requests), whole night
        "input images": (0, n * args.image_bytes, 0, n),
        "feature shards": (n * feature_bytes, n * feature_bytes, shards, shards),
        "subset results": (n * subset_bytes, n * subset_bytes, subsets, subsets),
        "heat maps": (n * args.flagged * args.heatmap_bytes, n * args.flagged * args.image_bytes,
                      n * args.flagged, n * args.flagged),
        "scores, summaries, manifest": (n * 500, n * 100, 3 * n / 2000, 2 * n / 2000),
    }

    print(f"## Cost of {n:,.0f} images at conf/nightly.yaml ({cfg.backbone.name} at {cfg.backbone.image_size} px, "
          f"{grid}x{grid} tokens x {width} channels, {stages} stages x {degrees} degrees, subsets of {s})\n")
    print("| term | per image | whole night | GPU time per image | share |\n|---|---|---|---|---|")
    print(f"| extraction | {extract / 1e12:.2f} TFLOP | {n * extract / 1e18:.2f} EFLOP | "
          f"{1e3 * gpu_s['extraction']:.2f} ms at {args.extract_efficiency:.0%} | {gpu_s['extraction'] / total_s:.0%} |")
    print(f"| mutual scoring | {msm / 1e12:.2f} TFLOP | {n * msm / 1e18:.2f} EFLOP | "
          f"{1e3 * gpu_s['mutual scoring']:.2f} ms at {args.msm_efficiency:.0%} | "
          f"{gpu_s['mutual scoring'] / total_s:.0%} |")
    print(f"| total | {(extract + msm) / 1e12:.2f} TFLOP | {n * (extract + msm) / 1e18:.2f} EFLOP | "
          f"{1e3 * total_s:.2f} ms | |")
    print(f"\nGPU-hours: {n * total_s / 3600:.1f} at {args.gpu_tflops:.0f} TFLOP/s dense -> "
          f"**{gpus_for_hour} GPUs score {n:,.0f} images in one hour**; "
          f"{'mutual scoring' if gpu_s['mutual scoring'] > gpu_s['extraction'] else 'extraction'} dominates "
          f"(it grows with the subset size S; halving S halves it).\n")
    print("| object storage | written | read | PUT requests | GET requests |\n|---|---|---|---|---|")
    for kind, (w, r, put, get) in storage.items():
        print(f"| {kind} | {w / 1e12:.2f} TB | {r / 1e12:.2f} TB | {put:,.0f} | {get:,.0f} |")
    written = sum(v[0] for v in storage.values())
    read = sum(v[1] for v in storage.values())
    print(f"| total | {written / 1e12:.2f} TB | {read / 1e12:.2f} TB | "
          f"{sum(v[2] for v in storage.values()):,.0f} | {sum(v[3] for v in storage.values()):,.0f} |")
    print(f"\nIn one hour that is {written / 3600 / 1e9:.1f} GB/s written and {read / 3600 / 1e9:.1f} GB/s read across "
          f"the cluster ({written / 3600 / 1e9 / gpus_for_hour:.2f} + {read / 3600 / 1e9 / gpus_for_hour:.2f} GB/s per "
          "GPU node); feature shards are most of it.")
    print("\ncommand: .venv/bin/python tests/benchmarks/cost_model.py")


if __name__ == "__main__":
    main()
