"""MuSc when the same defect is on many of the night's parts: plain vs with known-good references.

    .venv/bin/python tests/benchmarks/bench_references.py [--datasets synthetic bottle] [--seeds 2]

Batches of N images with 5, 15, 30, 50 and 70% defective parts. Hard case: every defective part
carries the same defect type (look-alike defects on other parts fill MuSc's interval average);
easy case: the defect types take turns. Each batch is scored by plain MuSc and with 10 and 50
references (other known-good images, reference-only members: engine/musc.py); prints image and
pixel AUROC (%) of the scored images, averaged over ``--seeds`` draws of the batch.

- synthetic: generated ``weave`` at 128 px, N = 40, hard defect ``spot``, references from further
  normal renders;
- bottle: MVTec AD bottle at 224 px, N = 28 (each defect type has 20-22 test images), hard defect
  ``contamination``, references = the first 50 train images, normal batch members from the 20 test
  and the last 10 train images.

Both use the shipped ImageNet MobileNetV2 (../shared/weights; skipped when absent: a random-init
backbone says nothing about accuracy). Features are extracted once per image and reused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.data.benchmarks import load_mask, read_split  # noqa: E402
from pipeline.data.images import load_image  # noqa: E402
from pipeline.data.synthetic import DEFECTS, render_image  # noqa: E402
from pipeline.engine.backbones import build_backbone  # noqa: E402
from pipeline.engine.features import Features  # noqa: E402
from pipeline.engine.maps import anomaly_maps  # noqa: E402
from pipeline.engine.musc import score_features  # noqa: E402
from pipeline.settings import BackboneConfig, MuscConfig  # noqa: E402

SHARED = Path(__file__).resolve().parents[3] / "shared"
WEIGHTS = SHARED / "weights" / "mobilenetv2_100_imagenet_from_tflite.safetensors"
BOTTLE = SHARED / "data" / "mvtec_ad"
RATES = (0.05, 0.15, 0.30, 0.50, 0.70)
REFERENCES = (0, 10, 50)


class Pool:
    """Features, masks and defect types of every image a dataset's batches draw from."""

    def __init__(self, features: Features, masks: np.ndarray, kinds: list[str | None], references: int,
                 size: int) -> None:
        self.features, self.masks, self.kinds, self.size = features, masks, np.array(kinds, dtype=object), size
        normal = np.flatnonzero(self.kinds == None)  # noqa: E711 - an object array
        self.references, self.normal = normal[:references], normal[references:]

    def defective(self, kind: str | None) -> np.ndarray:
        return np.flatnonzero(self.kinds == kind) if kind else np.flatnonzero(self.kinds != None)  # noqa: E711


def extract(images: list[np.ndarray], size: int) -> Features:
    backbone = build_backbone(BackboneConfig(
        family="timm_cnn", name="mobilenetv2_100", weights=str(WEIGHTS), pad_type="same", mean=[0.5] * 3,
        std=[0.5] * 3, layers=[2, 3], image_size=size, batch_size=16, device="cpu"))
    return backbone.extract_all(np.stack(images))


def synthetic_pool() -> tuple[Pool, int, str]:
    size, kinds, images, masks = 128, [], [], []
    for seed in range(100):  # 50 references + 50 normal batch members
        image, mask = render_image("weave", size, seed)
        images.append(image), masks.append(mask), kinds.append(None)
    for i, kind in enumerate(k for k in DEFECTS["weave"] for _ in range(28)):
        image, mask = render_image("weave", size, 1000 + i, kind)
        images.append(image), masks.append(mask), kinds.append(kind)
    return Pool(extract(images, size), np.stack(masks), kinds, 50, size), 40, "spot"


def bottle_pool() -> tuple[Pool, int, str]:
    size = 224
    train = read_split(str(BOTTLE), "mvtec", "bottle", "train")
    test = read_split(str(BOTTLE), "mvtec", "bottle", "test")
    samples = train[:50] + train[50:] + [s for s in test if not s.label] + [s for s in test if s.label]
    images = [load_image(s.image_path, size) for s in samples]
    masks = np.stack([load_mask(s, size) for s in samples])
    kinds = [s.defect_type if s.label else None for s in samples]
    return Pool(extract(images, size), masks, kinds, 50, size), 28, "contamination"


def batch(pool: Pool, n: int, rate: float, kind: str | None, rng: np.random.Generator) -> np.ndarray:
    """N images, round(rate N) of them defective: of ``kind`` (hard) or of every type in turn (easy)."""
    d = max(1, round(rate * n))
    if kind:
        bad = rng.choice(pool.defective(kind), d, replace=False)
    else:
        by_kind = [rng.permutation(pool.defective(k)) for k in sorted({k for k in pool.kinds if k})]
        bad = np.array([by_kind[i % len(by_kind)][i // len(by_kind)] for i in range(d)])
    return np.concatenate([rng.choice(pool.normal, n - d, replace=False), bad])


def evaluate(pool: Pool, members: np.ndarray, references: int) -> tuple[float, float]:
    """Image and pixel AUROC of MuSc on the batch, with the first ``references`` known-good images."""
    refs = pool.features.select(torch.as_tensor(pool.references[:references])) if references else None
    result = score_features(pool.features.select(torch.as_tensor(members)), MuscConfig(), references=refs)
    labels = np.array([pool.kinds[i] is not None for i in members])
    maps = anomaly_maps(result.patch_scores, pool.size, MuscConfig().gaussian_sigma).numpy()
    return (roc_auc_score(labels, result.image_scores.numpy()),
            roc_auc_score(pool.masks[members].ravel(), maps.ravel()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "bottle"], choices=["synthetic", "bottle"])
    parser.add_argument("--seeds", type=int, default=2, help="batches drawn per setting (results averaged)")
    args = parser.parse_args()
    if not WEIGHTS.is_file():
        sys.exit(f"needs the MobileNetV2 weights at {WEIGHTS}")
    torch.manual_seed(0)
    header = "".join(f"{f'{r:.0%}':>12s}" for r in RATES)
    print(f"image / pixel AUROC (%), mean of {args.seeds} batches; columns: share of defective parts")
    for name in args.datasets:
        if name == "bottle" and not (BOTTLE / "bottle").is_dir():
            print(f"bottle: skipped, no MVTec AD bottle under {BOTTLE}")
            continue
        start = time.perf_counter()
        pool, n, hard = synthetic_pool() if name == "synthetic" else bottle_pool()
        print(f"\n{name}: N = {n} scored images per batch, hard defect '{hard}'")
        print(f"{'case':8s}{'references':>11s}  {header}")
        for case, kind in (("hard", hard), ("easy", None)):
            for refs in REFERENCES:
                cells = []
                for rate in RATES:
                    runs = [evaluate(pool, batch(pool, n, rate, kind, np.random.default_rng(seed)), refs)
                            for seed in range(args.seeds)]
                    image, pixel = np.mean(runs, axis=0)
                    cells.append(f"{100 * image:5.1f}/{100 * pixel:5.1f}")
                print(f"{case:8s}{refs:11d}  " + "".join(f"{c:>12s}" for c in cells), flush=True)
        print(f"({time.perf_counter() - start:.0f} s)")
    print("reproduce: .venv/bin/python tests/benchmarks/bench_references.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
