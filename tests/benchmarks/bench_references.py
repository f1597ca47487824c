"""MuSc when the same defect is on many of the night's parts: plain vs with known-good references.

    .venv/bin/python tests/benchmarks/bench_references.py [--datasets synthetic bottle] [--seeds 1]

Batches of N images with 5, 15, 30, 50 and 70% defective parts. Cases: ``same`` (synthetic only:
one identical defect, same size, place and colour, on every defective part, as a worn tool leaves
it), ``hard`` (every defective part carries a defect of one type, drawn independently: look-alike
defects on other parts fill MuSc's interval average) and ``easy`` (the defect types take turns). Each batch is scored by plain MuSc and with 10 and 50
references (other known-good images, reference-only members: engine/musc.py); prints image and
pixel AUROC (%) of the scored images, averaged over ``--seeds`` draws of the batch.

- synthetic: generated ``weave`` at 128 px, N = 40, defect ``spot`` for ``same`` and ``hard``,
  references from further normal renders;
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

from pipeline.data.benchmarks import load_mask, read_split
from pipeline.data.images import load_image
from pipeline.data.synthetic import DEFECTS, render_image
from pipeline.engine.backbones import build_backbone
from pipeline.engine.features import Features
from pipeline.engine.maps import anomaly_maps
from pipeline.engine.musc import score_features
from pipeline.settings import BackboneConfig, MuscConfig

SHARED = Path(__file__).resolve().parents[3] / "shared"
WEIGHTS = SHARED / "weights" / "mobilenetv2_100_imagenet_from_tflite.safetensors"
BOTTLE = SHARED / "data" / "mvtec_ad"
RATES = (0.05, 0.15, 0.30, 0.50, 0.70)
REFERENCES = (0, 10, 50)


class Pool:
    """Features, masks and defect kinds of every image a dataset's batches draw from; ``cases`` map a
    case to the kind its defective parts carry (None: the ``mixed`` kinds in turn)."""

    def __init__(self, features: Features, masks: np.ndarray, kinds: list[str | None], references: int,
                 size: int, cases: dict[str, str | None], mixed: list[str]) -> None:
        self.features, self.masks, self.kinds, self.size = features, masks, np.array(kinds, dtype=object), size
        self.cases, self.mixed = cases, mixed
        normal = np.flatnonzero(self.kinds == None)
        self.references, self.normal = normal[:references], normal[references:]

    def defective(self, kind: str) -> np.ndarray:
        return np.flatnonzero(self.kinds == kind)


def extract(images: list[np.ndarray], size: int) -> Features:
    backbone = build_backbone(BackboneConfig(
        family="timm_cnn", name="mobilenetv2_100", weights=str(WEIGHTS), pad_type="same", mean=[0.5] * 3,
        std=[0.5] * 3, layers=[2, 3], image_size=size, batch_size=16, device="cpu"))
    return backbone.extract_all(np.stack(images))


def synthetic_pool() -> tuple[Pool, int]:
    size, kinds, images, masks = 128, [], [], []
    for seed in range(100):  # 50 references + 50 normal batch members
        image, mask = render_image("weave", size, seed)
        images.append(image), masks.append(mask), kinds.append(None)
    for i, kind in enumerate(k for k in (*DEFECTS["weave"], "same") for _ in range(28)):
        image, mask = render_image("weave", size, 1000 + i, "spot" if kind == "same" else kind,
                                   defect_seed=0 if kind == "same" else None)
        images.append(image), masks.append(mask), kinds.append(kind)
    cases = {"same": "same", "hard": "spot", "easy": None}
    return Pool(extract(images, size), np.stack(masks), kinds, 50, size, cases, list(DEFECTS["weave"])), 40


def bottle_pool() -> tuple[Pool, int]:
    size = 224
    train = read_split(str(BOTTLE), "mvtec", "bottle", "train")
    test = read_split(str(BOTTLE), "mvtec", "bottle", "test")
    samples = train[:50] + train[50:] + [s for s in test if not s.label] + [s for s in test if s.label]
    images = [load_image(s.image_path, size) for s in samples]
    masks = np.stack([load_mask(s, size) for s in samples])
    kinds = [s.defect_type if s.label else None for s in samples]
    mixed = sorted({s.defect_type for s in test if s.label})
    return Pool(extract(images, size), masks, kinds, 50, size, {"hard": "contamination", "easy": None}, mixed), 28


def batch(pool: Pool, n: int, rate: float, kind: str | None, rng: np.random.Generator) -> np.ndarray:
    """N images, round(rate N) of them defective: of ``kind``, or of the mixed kinds in turn (None)."""
    d = max(1, round(rate * n))
    if kind:
        bad = rng.choice(pool.defective(kind), d, replace=False)
    else:
        by_kind = [rng.permutation(pool.defective(k)) for k in pool.mixed]
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
    parser.add_argument("--seeds", type=int, default=1, help="batches drawn per setting (results averaged)")
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
        pool, n = synthetic_pool() if name == "synthetic" else bottle_pool()
        print(f"\n{name}: N = {n} scored images per batch; defect kind per case: {pool.cases}")
        print(f"{'case':8s}{'references':>11s}  {header}")
        for case, kind in pool.cases.items():
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
