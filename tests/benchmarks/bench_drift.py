"""Do a night's scores see a change every part shares? The two shift statistics of group_nights compared.

    .venv/bin/python tests/benchmarks/bench_drift.py [--images 12] [--draws 5] [--brightness 1.15]

For each product (weave, disc) and draw: two previous nights and tonight of ``--images`` generated
parts each (one in six defective), tonight scored once as rendered and once with every pixel
brightened (``demo.brightness``). Each night is scored alone by MuSc with the job's defaults (snamd,
match_radius auto, rscon), as the job scores one night's subset. Prints per product, backbone and
tonight's case: the KS statistic of tonight's scores against the two previous nights pooled (mean over
draws), how often its p-value is under 0.01, and the embedding shift (mean and max over draws), with the
alert counts under the default bands (score: KS > 0.5 and p < 0.01; embedding: > 0.5). Backbones: the
random-init resnet18 of the tests (64 px) and, when ../shared/weights holds it, the ImageNet MobileNetV2
(128 px).
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.data.synthetic import DEFECTS, brighten, render_image
from pipeline.engine.backbones import build_backbone
from pipeline.engine.musc import score_features
from pipeline.job.drift import EmbeddingMoments, embedding_shift, score_shift
from pipeline.settings import BackboneConfig, MuscConfig

SHARED = Path(__file__).resolve().parents[3] / "shared"
WEIGHTS = SHARED / "weights" / "mobilenetv2_100_imagenet_from_tflite.safetensors"
BACKBONES = {
    "resnet18 random": BackboneConfig(family="timm_cnn", name="resnet18", random_init=True, image_size=64,
                                      layers=[1, 2], batch_size=16, device="cpu"),
    "mobilenetv2 imagenet": BackboneConfig(family="timm_cnn", name="mobilenetv2_100", weights=str(WEIGHTS),
                                           pad_type="same", mean=[0.5] * 3, std=[0.5] * 3, layers=[2, 3],
                                           image_size=128, batch_size=16, device="cpu"),
}
MUSC = MuscConfig(aggregation="snamd", match_radius="auto", rescoring="rscon")


def night(product: str, size: int, seed: int, images: int) -> np.ndarray:
    """One night's parts: one in six defective, the defect kinds in turn."""
    key = [seed, zlib.crc32(product.encode())]
    kinds = DEFECTS[product]
    return np.stack([render_image(product, size, [*key, i], kinds[i % len(kinds)] if i % 6 == 5 else None)[0]
                     for i in range(images)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--brightness", type=float, default=1.15)
    args = parser.parse_args()
    print(f"command: .venv/bin/python tests/benchmarks/bench_drift.py --images {args.images} --draws {args.draws} "
          f"--brightness {args.brightness}")
    print(f"{'backbone':<22}{'product':<8}{'tonight':<12}{'KS mean':>8}{'p<0.01':>8}{'emb mean':>9}{'emb max':>8}"
          f"{'alerts (score, emb)':>21}")
    for name, cfg in BACKBONES.items():
        if cfg.weights and not Path(cfg.weights).is_file():
            print(f"{name}: skipped, {cfg.weights} absent")
            continue
        torch.manual_seed(0)
        backbone = build_backbone(cfg)
        for product in ("weave", "disc"):
            rows: dict[str, list[tuple[float, float, float]]] = {"as before": [], "brightened": []}
            for draw in range(args.draws):
                before = [backbone.extract_all(night(product, cfg.image_size, 100 * draw + k, args.images))
                          for k in range(2)]
                scores = np.concatenate([score_features(f, MUSC).image_scores.numpy() for f in before])
                moments = EmbeddingMoments.pooled([EmbeddingMoments.of(f.embedding.double().numpy()) for f in before])
                tonight = night(product, cfg.image_size, 100 * draw + 2, args.images)
                for case, factor in (("as before", 1.0), ("brightened", args.brightness)):
                    features = backbone.extract_all(np.stack([brighten(image, factor) for image in tonight]))
                    statistic, p = score_shift(score_features(features, MUSC).image_scores.numpy(), scores)
                    shift = embedding_shift(EmbeddingMoments.of(features.embedding.double().numpy()), moments)
                    rows[case].append((statistic, p, shift))
            for case, values in rows.items():
                ks, p, emb = (np.array(v) for v in zip(*values))
                alerts = f"{int(np.sum((ks > 0.5) & (p < 0.01)))}, {int(np.sum(emb > 0.5))} of {len(values)}"
                print(f"{name:<22}{product:<8}{case:<12}{ks.mean():>8.3f}{np.mean(p < 0.01):>8.2f}{emb.mean():>9.3f}"
                      f"{emb.max():>8.3f}{alerts:>21}")


if __name__ == "__main__":
    main()
