"""PatchEAD against MuSc on generated data, and the cost of PatchEAD's scoring against MSM's.

    .venv/bin/python tests/benchmarks/bench_patchead.py [--weights PATH]

Image AUROC per generated category (10 good + 10 defective images, 128 px) for MuSc, PatchEAD with
the nearest-neighbour reading (default) and with the literal reading of its Eq. 2-3, on the same
features: mobilenetv2_100 with ImageNet weights when ``--weights`` points at them (see
../shared/weights), otherwise a random-init resnet18. Then the time of one (stage) PatchEAD pass
against one MSM pass on the same unit tokens (N=64, M=196, C=768): the shared engine should make
them equal.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.backbones import build_backbone  # noqa: E402
from pipeline.config import BackboneConfig, MuscConfig, PatchEADConfig  # noqa: E402
from pipeline.datasets import load_image, read_split  # noqa: E402
from pipeline.msm import mutual_scores  # noqa: E402
from pipeline.musc import score_features  # noqa: E402
from pipeline.patchead import patch_scores, score_patchead  # noqa: E402
from pipeline.synthetic import DEFAULT_CATEGORIES, generate_dataset  # noqa: E402


def backbone_config(weights: str | None) -> BackboneConfig:
    if weights:
        return BackboneConfig(family="timm_cnn", name="mobilenetv2_100", weights=weights, image_size=128,
                              layers=[2, 3], pad_type="same", mean=[0.5] * 3, std=[0.5] * 3)
    return BackboneConfig(family="timm_cnn", name="resnet18", random_init=True, image_size=128, layers=[1, 2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="mobilenetv2_100 ImageNet safetensors")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = backbone_config(args.weights)
    backbone = build_backbone(cfg)
    readings = {"PatchEAD (nearest)": PatchEADConfig(),
                "PatchEAD (literal)": PatchEADConfig(patch_match="farthest", image_selection="farthest")}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(tmp, n_train=0, n_test_good=10, n_test_defect=10, image_size=128)
        for category in DEFAULT_CATEGORIES:
            samples = read_split(tmp, "mvtec", category, "test")
            labels = [s.label for s in samples]
            feats = backbone.extract(np.stack([load_image(s.image_path, 128) for s in samples]))
            row = {"MuSc": roc_auc_score(labels, score_features(feats, MuscConfig()).image_scores.numpy())}
            for name, pe in readings.items():
                row[name] = roc_auc_score(labels, score_patchead(feats, pe).image_scores.numpy())
            rows[category] = row
    names = list(next(iter(rows.values())))
    print(f"image AUROC (%), backbone {backbone.description}")
    print(f"{'category':10s}" + "".join(f"{n:>22s}" for n in names))
    for category, row in [*rows.items(), ("mean", {n: np.mean([r[n] for r in rows.values()]) for n in names})]:
        print(f"{category:10s}" + "".join(f"{100 * row[n]:22.1f}" for n in names))

    z = F.normalize(torch.randn(64, 196, 768), dim=-1)
    timings = {}
    for name, run in (("MSM (one stage, one degree)", lambda: mutual_scores(z, 0.3)),
                      ("PatchEAD (one level)", lambda: patch_scores(z, PatchEADConfig()))):
        run()
        start = time.perf_counter()
        for _ in range(3):
            run()
        timings[name] = (time.perf_counter() - start) / 3
    base = timings["MSM (one stage, one degree)"]
    for name, t in timings.items():
        print(f"{name:30s} {t:.3f} s ({t / base:.2f}x MSM)  N=64, M=196, C=768, {torch.get_num_threads()} threads")
    print("reproduce: .venv/bin/python tests/benchmarks/bench_patchead.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
