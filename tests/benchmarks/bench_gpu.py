"""What one GPU does at the nightly config: per stage ms/image, images/s, peak memory, agreement with the CPU.

    .venv/bin/python tests/benchmarks/bench_gpu.py                  # on CUDA (estimated 3 minutes on an H100)
    .venv/bin/python tests/benchmarks/bench_gpu.py --device cpu --smoke   # the script's own check: tiny shapes

On the device (``--device``, default cuda), with conf/nightly.yaml's backbone (CLIP ViT-L-14-336 at 518
px, layers 5/11/17/23, batch 32, ``precision: auto``: bf16 autocast on CUDA) random-init (its weights
are not needed for timings) and ``--images`` (200, the nightly ``max_subset_size``) generated images:

- decode: the job's decode call (``fetch_image_and_digest``: read, SHA-256, decode, resize to 518) of
  1024 px PNGs, on one CPU core: the job decodes on CPU tasks beside the GPU;
- extraction: ms/image and peak GPU memory (``torch.cuda.max_memory_allocated``) in bf16 and fp32,
  and how far the default scoring's image scores move between the two sets of features;
- mutual scoring of one subset of ``--images`` for every scoring setting (aggregation lnamd/snamd x
  matching full/radius 1/auto x re-scoring rscin/rscon, as tests/benchmarks/bench_frontier.py builds
  them): total ms/image and its stages (aggregation, matching, re-scoring: ``StageTimes``), peak
  memory, the cost model's ms/image for the same setting (``pipeline/job/cost.py``), and agreement with
  the CPU on the same features (the first ``--agree`` images scored on both: max |difference| of the
  final image scores, Spearman's rho);
- matmul precision: mutual scoring in fp16 and bf16 against fp32 on the device, same features, for the
  nightly default and the 2024 method (ms/image, max |difference|, Spearman);
- images/s per GPU = 1000 / (extraction + mutual scoring ms/image) at the nightly default and at the
  2024 method (decoding runs on CPUs meanwhile and is left out).

Without CUDA (and without ``--device cpu``) it prints one line on stderr and exits 2: the project's
code for a mistake the user fixes (here: run it where there is a GPU), and a wrapper that runs it on a
lent GPU machine sees that nothing was measured. ``--smoke`` runs every step on tiny shapes (ResNet-18
at 32 px, 4 images) to check the script itself (tests/test_bench_gpu.py).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

NO_CUDA_EXIT = 2
NO_CUDA = ("bench_gpu.py: no CUDA device here (torch.cuda.is_available() is False): run it on a machine with an "
           "NVIDIA GPU, or add --device cpu --smoke to check the script itself")
REPO = Path(__file__).resolve().parents[2]
AGGREGATIONS, RADII, RESCORINGS = ("lnamd", "snamd"), (None, 1, "auto"), ("rscin", "rscon")
SETTINGS = [(a, r, s) for a in AGGREGATIONS for r in RADII for s in RESCORINGS]
NIGHTLY_SETTING, PAPER_SETTING = ("snamd", "auto", "rscon"), ("lnamd", None, "rscin")
SMOKE_BACKBONE = {"family": "timm_cnn", "name": "resnet18", "image_size": 32, "layers": [1, 2], "batch_size": 4}


def parse_setting(text: str) -> tuple:
    """'snamd/1/rscon' -> ('snamd', 1, 'rscon'); matching 'full' is None (match_radius null)."""
    agg, radius, rescoring = text.split("/")
    return agg, None if radius == "full" else int(radius) if radius.isdigit() else radius, rescoring


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with --smoke: a check of the script)")
    parser.add_argument("--images", type=int, default=200, help="subset size scored at once (nightly: 200)")
    parser.add_argument("--agree", type=int, default=16, help="images also scored on the CPU for the agreement")
    parser.add_argument("--decode", type=int, default=32, help="1024 px PNGs decoded for the decode row")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: ResNet-18 at 32 px, 4 images")
    parser.add_argument("--settings", nargs="*", type=parse_setting, default=SETTINGS,
                        help="aggregation/matching/re-scoring, e.g. snamd/auto/rscon (default: all 12)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.agree, args.decode = min(args.images, 4), min(args.agree, 3), min(args.decode, 1)
    return args


def generated_images(count: int, side: int):
    """``count`` generated boards (every tenth with a defect), drawn at 128 px and resized to ``side``."""
    import numpy as np
    from PIL import Image

    from pipeline.data.synthetic import DEFECTS, render_image

    out = np.zeros((count, side, side, 3), np.uint8)
    for i in range(count):
        defect = DEFECTS["board"][1 + i % 2] if i % 10 == 3 else None  # scratch or spot
        image, _ = render_image("board", 128, [7, i], defect)
        out[i] = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))
    return out


def decode_ms(images, count: int, photo_side: int, size: int) -> float:
    """ms/image of the job's decode call on ``count`` PNG files of ``photo_side`` px, resized to ``size``."""
    from PIL import Image

    from pipeline.data.images import fetch_image_and_digest

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(count):
            buffer = io.BytesIO()
            Image.fromarray(images[i % len(images)]).resize((photo_side, photo_side)).save(buffer, format="PNG")
            paths.append(Path(tmp) / f"{i}.png")
            paths[-1].write_bytes(buffer.getvalue())
        start = time.perf_counter()
        for path in paths:
            fetch_image_and_digest(str(path), size)
        return 1000 * (time.perf_counter() - start) / count


class Device:
    """The measured device: synchronised clocks and peak memory (CUDA only)."""

    def __init__(self, name: str) -> None:
        import torch

        self.torch, self.device = torch, torch.device(name)
        self.cuda = self.device.type == "cuda"

    def reset(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> str:
        return f"{self.torch.cuda.max_memory_allocated(self.device) / 2**20:,.0f}" if self.cuda else "-"

    def name(self) -> str:
        return self.torch.cuda.get_device_name(self.device) if self.cuda else "CPU"


def extraction(backbone_cfg, images, dev: Device, precision: str):
    """(ms/image, peak MiB, features on the CPU) of extracting ``images`` at ``precision``, after a warm-up batch."""
    import torch

    from pipeline.engine.backbones import build_backbone
    from pipeline.settings import with_values

    torch.manual_seed(0)  # both precisions get the same random weights
    backbone = build_backbone(with_values(backbone_cfg, {"precision": precision, "device": str(dev.device)}))
    backbone.extract_all(images[: backbone_cfg.batch_size])
    dev.reset()
    start = time.perf_counter()
    features = backbone.extract_all(images)
    if dev.cuda:
        torch.cuda.synchronize(dev.device)
    return 1000 * (time.perf_counter() - start) / len(images), dev.peak_mib(), features


def scored(features, cfg, device) -> tuple:
    """(final image scores as numpy, StageTimes seconds, wall seconds) of one subset."""
    from pipeline.engine.musc import score_features
    from pipeline.engine.timing import StageTimes

    timings = StageTimes()
    start = time.perf_counter()
    result = score_features(features, cfg, device, timings=timings)
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)
    return result.image_scores.numpy(), timings.seconds, time.perf_counter() - start


def label(combination: tuple, sep: str = "/") -> str:
    return sep.join("full" if c is None else str(c) for c in combination)


def agreement(reference, other) -> str:
    """Max |difference| and Spearman's rho of two score vectors."""
    import numpy as np
    from scipy.stats import spearmanr

    rho = spearmanr(reference, other).statistic if len(reference) > 2 else float("nan")
    return f"{np.abs(np.asarray(reference) - np.asarray(other)).max():.2e} | {rho:.6f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return NO_CUDA_EXIT
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_frontier import setting  # a combination as MuscConfig, or why the engine refuses it

    from pipeline.job.cost import night_cost
    from pipeline.settings import JobConfig, load_config, with_values

    nightly = load_config(REPO / "conf" / "nightly.yaml", JobConfig, ["inputs.uris=[s3://b/x/]"])
    backbone_cfg = with_values(nightly.backbone, {"random_init": True, "weights": None,
                                                  **(SMOKE_BACKBONE if args.smoke else {})})
    dev = Device(args.device)
    size = backbone_cfg.image_size
    print(f"## bench_gpu.py on {dev.name()}: {backbone_cfg.identifier()} random-init, layers {backbone_cfg.layers}, "
          f"subsets of {args.images}, CPU agreement on {args.agree} images\n")
    images = generated_images(args.images, size)
    print("| stage | precision | ms/image | peak GPU MiB | cost model ms/image | vs bf16 features: max abs diff "
          "| Spearman |")
    print("|---|---|---|---|---|---|---|")
    photo = 128 if args.smoke else 1024
    print(f"| decode ({photo} px PNG -> {size} px, 1 CPU core) | - | "
          f"{decode_ms(images, args.decode, photo, size):.2f} | - | - | - | - |")
    base = nightly.musc
    nightly_cfg = setting(base, NIGHTLY_SETTING)
    model_ms = 1000 * night_cost(nightly).extract_seconds
    extract_ms, peaks, features = {}, {}, {}
    for precision in ("bf16", "fp32"):
        extract_ms[precision], peaks[precision], features[precision] = extraction(backbone_cfg, images, dev, precision)
    scores = {p: scored(f, nightly_cfg, dev.device)[0] for p, f in features.items()}
    for precision in ("bf16", "fp32"):
        print(f"| extraction | {precision} | {extract_ms[precision]:.2f} | {peaks[precision]} | {model_ms:.2f} (bf16) "
              f"| {agreement(scores['bf16'], scores[precision])} |")
    feats = features["bf16"]
    del features["fp32"]
    agree_feats = feats.select(torch.arange(min(args.agree, len(feats))))

    print("\n| aggregation | matching | re-scoring | ms/image | aggregate | match | re-score | peak GPU MiB "
          "| cost model ms/image | vs CPU: max abs diff | Spearman |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    scored(feats.select(torch.arange(min(8, len(feats)))), nightly_cfg, dev.device)  # warm-up: kernels, allocator
    totals = {}
    for combination in args.settings:
        names = label(combination, " | ")
        cfg = setting(base, combination)
        if isinstance(cfg, str):
            print(f"| {names} | not supported: {cfg} |")
            continue
        dev.reset()
        _, seconds, wall = scored(feats, cfg, dev.device)
        peak = dev.peak_mib()
        totals[combination] = 1000 * wall / len(feats)
        on_device = scored(agree_feats, cfg, dev.device)[0]
        on_cpu = scored(agree_feats, cfg, "cpu")[0]
        agg, radius, rescoring = combination
        priced = night_cost(with_values(nightly, {"musc.aggregation": agg, "musc.match_radius": radius,
                                                  "musc.rescoring": rescoring}))
        stage = {k: 1000 * seconds.get(k, 0.0) / len(feats) for k in ("aggregate", "msm", "rescoring")}
        print(f"| {names} | {totals[combination]:.2f} | {stage['aggregate']:.2f} | {stage['msm']:.2f} | "
              f"{stage['rescoring']:.2f} | {peak} | {1000 * priced.msm_seconds:.2f} | "
              f"{agreement(on_cpu, on_device)} |")

    print("\n| setting | matmul precision | ms/image | vs fp32 on the device: max abs diff | Spearman |")
    print("|---|---|---|---|---|")
    for combination in (c for c in (NIGHTLY_SETTING, PAPER_SETTING) if c in args.settings):
        reference = None
        for precision in ("fp32", "fp16", "bf16"):
            try:
                cfg = with_values(setting(base, combination), {"matmul_precision": precision})
                scores, _, wall = scored(feats, cfg, dev.device)
            except ValueError as err:  # fp16 on a CPU
                print(f"| {label(combination)} | {precision} | not supported: {err} | | |")
                continue
            reference = scores if reference is None else reference
            print(f"| {label(combination)} | {precision} | {1000 * wall / len(feats):.2f} | "
                  f"{agreement(reference, scores)} |")

    print()
    for method, combination in (("nightly default", NIGHTLY_SETTING), ("2024 method", PAPER_SETTING)):
        if combination in totals:
            rate = 1000 / (extract_ms["bf16"] + totals[combination])
            print(f"- images/s per {dev.name()} at the {method} ({label(combination)}): {rate:.1f} "
                  f"(extraction {extract_ms['bf16']:.2f} + mutual scoring {totals[combination]:.2f} ms/image)")
    print(f"\ncommand: .venv/bin/python tests/benchmarks/bench_gpu.py {' '.join(argv or sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
