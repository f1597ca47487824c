"""Bytes in flight per image, and what storing patch tokens as int8 instead of fp16 does to the results.

    .venv/bin/python tests/benchmarks/bench_features.py [--skip-run] [--skip-accuracy]

1. Bytes per image of every intermediate object at the nightly config (conf/nightly.yaml:
   ViT-L-14-336 at 518 px), computed from the model's shapes (no weights needed).
2. The same objects measured on a small real run: the demo job (conf/local.yaml, 64 images, CLIP
   ViT-B-16 at 224 px) with keep_features, once per feature dtype, object sizes summed per kind.
3. Accuracy of int8 against fp16 on identical features: MVTec AD bottle with the shipped MobileNetV2
   ImageNet weights (all 83 test images, conf/eval_mvtec_mobilenetv2.yaml's scorer) and the demo
   batch (per product): image and pixel AUROC, and the Spearman correlation of the image scores.
   Features go through the shards' own encode/decode (``job.codec``), then the job's scorer.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.data.benchmarks import load_mask, read_split  # noqa: E402
from pipeline.data.images import load_image  # noqa: E402
from pipeline.data.synthetic import generate_dataset  # noqa: E402
from pipeline.engine.backbones import build_backbone  # noqa: E402
from pipeline.engine.features import Features  # noqa: E402
from pipeline.engine.maps import anomaly_maps  # noqa: E402
from pipeline.engine.scorers import score_features  # noqa: E402
from pipeline.evaluation.metrics import category_metrics  # noqa: E402
from pipeline.job.codec import decode_stage, encode_stage  # noqa: E402
from pipeline.settings import EvalConfig, JobConfig, load_config  # noqa: E402

WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenetv2_100_imagenet_from_tflite.safetensors"
MVTEC = REPO.parent / "shared" / "data" / "mvtec_ad"


def nightly_bytes() -> None:
    """Bytes per image of each object at the nightly config, from shapes."""
    import open_clip

    cfg = load_config(REPO / "conf" / "nightly.yaml", JobConfig, ["inputs.uris=[s3://b/x/]"])
    model = open_clip.get_model_config(cfg.backbone.name)
    width, patch = model["vision_cfg"]["width"], model["vision_cfg"]["patch_size"]
    grid = cfg.backbone.image_size // patch
    tokens, stages = grid * grid, len(cfg.backbone.layers or [0, 1, 2, 3])
    embed = model["embed_dim"]
    fp16 = stages * tokens * width * 2
    int8 = stages * tokens * (width + 2)
    extra = embed * 4 + tokens * 4  # fp32 image embedding and CLS attention
    subset = tokens * 4 + 2 * 8  # the patch-score grid (fp32) and two scores
    print(f"## Bytes per image at conf/nightly.yaml ({cfg.backbone.name} at {cfg.backbone.image_size} px: "
          f"{stages} stages x {grid}x{grid} tokens x {width} channels)\n")
    print("| object | fp16 | int8 |\n|---|---|---|")
    print(f"| feature shard (patch tokens + embedding + attention) | {(fp16 + extra) / 1e6:.2f} MB | "
          f"{(int8 + extra) / 1e6:.2f} MB |")
    print(f"| subset result (patch-score grid + scores) | {subset / 1e3:.1f} kB | {subset / 1e3:.1f} kB |")
    print(f"| read by the subset task | {(fp16 + extra) / 1e6:.2f} MB (once) | {(int8 + extra) / 1e6:.2f} MB (once) |")
    print(f"\nint8 / fp16 feature shard: {(int8 + extra) / (fp16 + extra):.3f}x\n")


def measured_run() -> None:
    """The demo job with each dtype, its objects' sizes per kind and per image (uncompressed on disk)."""
    print("## Measured on the demo job (conf/local.yaml: 64 images, CLIP ViT-B-16 at 224 px, random init)\n")
    print("| object | fp16: bytes/image | int8: bytes/image | objects (fp16) |\n|---|---|---|---|")
    sizes: dict[str, dict[str, int]] = {}
    counts: dict[str, int] = {}
    for dtype in ("fp16", "int8"):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, str(REPO / "jobs" / "musc.py"), "--config", str(REPO / "conf" / "local.yaml"),
                   f"inputs.manifest={tmp}/demo/manifest.csv", f"output.prefix={tmp}/out", "output.keep_features=true",
                   f"extraction.feature_dtype={dtype}", "run_id=bench"]
            subprocess.run(cmd, check=True, capture_output=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
            per_kind: dict[str, int] = defaultdict(int)
            for path in Path(tmp, "out").rglob("*"):
                if path.is_file():
                    rel = path.relative_to(Path(tmp, "out")).parts
                    kind = rel[2] if rel[0] == "runs" and len(rel) > 3 else (rel[0] if rel[0] != "runs" else rel[-1])
                    per_kind[kind] += path.stat().st_size
                    if dtype == "fp16":
                        counts[kind] = counts.get(kind, 0) + 1
            sizes[dtype] = per_kind
    for kind in sorted(sizes["fp16"], key=lambda k: -sizes["fp16"][k]):
        print(f"| {kind} | {sizes['fp16'][kind] / 64:,.0f} | {sizes['int8'].get(kind, 0) / 64:,.0f} | {counts[kind]} |")
    print(f"\nfeature shards int8 / fp16: {sizes['int8']['features'] / sizes['fp16']['features']:.3f}x\n")


def through(features: Features, dtype: str) -> Features:
    """The features as a subset task reads them back from shards of this dtype."""
    stages = []
    for stage in features.stages:
        stored = encode_stage(stage.numpy(), dtype)
        stages.append(torch.from_numpy(decode_stage(stored[""], stored.get("_scale"))))
    return Features(stages, features.embedding, features.attention)


def compare(label: str, features: Features, labels: np.ndarray, masks: np.ndarray, cfg, size: int) -> dict:
    results = {}
    for dtype in ("fp16", "int8"):
        scored = score_features(through(features, dtype), cfg, "cpu")
        maps = anomaly_maps(scored.patch_scores, size, cfg.gaussian_sigma).numpy()
        metrics = category_metrics(scored.image_scores.numpy(), labels, maps, masks)
        results[dtype] = (scored.image_scores.numpy(), metrics)
    (s16, m16), (s8, m8) = results["fp16"], results["int8"]
    rho = spearmanr(s16, s8).statistic
    row = {"image": 100 * (m8["image_auroc"] - m16["image_auroc"]), "pixel": 100 * (m8["pixel_auroc"] - m16["pixel_auroc"]),
           "rho": rho}
    print(f"| {label} | {100 * m16['image_auroc']:.2f} / {100 * m16['pixel_auroc']:.2f} | "
          f"{100 * m8['image_auroc']:.2f} / {100 * m8['pixel_auroc']:.2f} | {row['image']:+.2f} / {row['pixel']:+.2f} | "
          f"{rho:.6f} |")
    return row


def accuracy() -> None:
    print("## int8 against fp16 on identical features (image / pixel AUROC, %)\n")
    print("| data | fp16 | int8 | change (points) | Spearman of image scores |\n|---|---|---|---|---|")
    rows = []
    if WEIGHTS.is_file() and (MVTEC / "bottle").is_dir():
        cfg = load_config(REPO / "conf" / "eval_mvtec_mobilenetv2.yaml", EvalConfig,
                          [f"dataset.root={MVTEC}", f"backbone.weights={WEIGHTS}"])
        backbone = build_backbone(cfg.backbone)
        samples = read_split(str(MVTEC), "mvtec", "bottle", "test")
        size = cfg.backbone.image_size
        features = backbone.extract_all([load_image(s.image_path, size) for s in samples])
        masks = np.stack([load_mask(s, size) for s in samples])
        rows.append(compare("MVTec AD bottle, MobileNetV2 (ImageNet), 83 images", features,
                            np.array([s.label for s in samples]), masks, cfg.musc, size))
    else:
        print(f"(MVTec bottle or weights absent under {REPO.parent / 'shared'}: skipped)")
    job = load_config(REPO / "conf" / "local.yaml", JobConfig)
    with tempfile.TemporaryDirectory() as tmp:
        demo = job.demo
        generate_dataset(tmp, n_train=0, n_test_good=demo.n_test_good, n_test_defect=demo.n_test_defect,
                         image_size=demo.image_size, seed=demo.seed)
        torch.manual_seed(0)  # the random init every extraction actor uses
        backbone = build_backbone(job.backbone)
        size = job.backbone.image_size
        for category in sorted(p.name for p in Path(tmp).iterdir()):
            samples = read_split(tmp, "mvtec", category, "test")
            features = backbone.extract_all([load_image(s.image_path, size) for s in samples])
            masks = np.stack([load_mask(s, size) for s in samples])
            rows.append(compare(f"demo batch: {category} (16 images)", features, np.array([s.label for s in samples]),
                                masks, job.musc, size))
    worst = max(max(abs(r["image"]), abs(r["pixel"])) for r in rows)
    rho = min(r["rho"] for r in rows)
    print(f"\nlargest AUROC change {worst:.2f} points (bound 0.2); smallest Spearman {rho:.6f} (bound 0.999)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-run", action="store_true", help="no demo-job runs (section 2)")
    parser.add_argument("--skip-accuracy", action="store_true", help="no accuracy comparison (section 3)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    nightly_bytes()
    if not args.skip_run:
        measured_run()
    if not args.skip_accuracy:
        accuracy()
    print(f"command: .venv/bin/python {Path(__file__).relative_to(REPO)}")


if __name__ == "__main__":
    main()
