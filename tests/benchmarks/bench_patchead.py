"""PatchEAD and PatchEAD+ against MuSc on generated data, and the cost of PatchEAD's scoring against MSM's.

    .venv/bin/python tests/benchmarks/bench_patchead.py [--weights PATH]

Image and pixel AUROC per generated category (10 good + 10 defective images, 128 px), on the same
images and features for every scorer, in two variants of the data: as generated (poses differ by a
few degrees) and "posed" (every part further turned by up to +-30 degrees and shifted by up to 6% of
the size, rendered so, not warped), since alignment can only matter when poses differ.

CNN columns: mobilenetv2_100 with ImageNet weights when ``--weights`` points at them (see
../shared/weights), otherwise a random-init resnet18; MuSc, PatchEAD (nearest-neighbour reading),
its literal reading of Eq. 2-3, and MuSc and PatchEAD with alignment. ViT columns (foreground masks
need CLS attention): a random-init ViT-S/8, so its attention is no meaningful foreground; MuSc and
PatchEAD with and without the mask, with alignment, and with both (PatchEAD+). Then the time
of one (stage) PatchEAD pass against one MSM pass on the same unit tokens (N=64, M=196, C=768): the
shared engine should make them equal.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.data.benchmarks import load_mask, read_split
from pipeline.data.images import load_image
from pipeline.data.synthetic import DEFAULT_CATEGORIES, generate_dataset
from pipeline.engine.backbones import Backbone, build_backbone
from pipeline.engine.msm import mutual_scores
from pipeline.engine.patchead import patch_scores
from pipeline.engine.scorers import score_images
from pipeline.engine.scores import BatchScores
from pipeline.settings import (
    BackboneConfig,
    ForegroundConfig,
    MuscConfig,
    PatchEADConfig,
)

SIZE = 128
POSES = {"as generated": (0.0, 0.0), "posed (+-30 deg, +-6%)": (30.0, 0.06)}
FOREGROUND = ForegroundConfig(enabled=True)
Scorer = Callable[[Backbone, np.ndarray], BatchScores]


def backbone_config(weights: str | None) -> BackboneConfig:
    if weights:
        return BackboneConfig(family="timm_cnn", name="mobilenetv2_100", weights=weights, image_size=SIZE,
                              layers=[2, 3], pad_type="same", mean=[0.5] * 3, std=[0.5] * 3)
    return BackboneConfig(family="timm_cnn", name="resnet18", random_init=True, image_size=SIZE, layers=[1, 2])


def vit_config() -> BackboneConfig:
    return BackboneConfig(family="timm_vit", name="vit_small_patch8_224", random_init=True, image_size=SIZE,
                          layers=[5, 11])


def musc(foreground: ForegroundConfig = ForegroundConfig(), align: bool = False) -> Scorer:
    """MuSc as the evaluation command scores a subset (with its alignment switch)."""
    cfg = MuscConfig(foreground=foreground, align=align)
    return lambda backbone, images: score_images(backbone, np.asarray(images), cfg)


def patchead(**options) -> Scorer:
    return lambda backbone, images: score_images(backbone, images, PatchEADConfig(**options))


CNN_SCORERS: dict[str, Scorer] = {
    "MuSc": musc(),
    "MuSc +align": musc(align=True),
    "PatchEAD": patchead(),
    "PatchEAD literal": patchead(patch_match="farthest", image_selection="farthest"),
    "PatchEAD +align": patchead(align=True),
}
VIT_SCORERS: dict[str, Scorer] = {
    "MuSc": musc(),
    "MuSc +fg": musc(FOREGROUND),
    "MuSc +align +fg": musc(FOREGROUND, align=True),
    "PatchEAD": patchead(),
    "PatchEAD +align": patchead(align=True),
    "PatchEAD +fg": patchead(foreground=FOREGROUND),
    "PatchEAD+": patchead(align=True, foreground=FOREGROUND),
}


def aurocs(result: BatchScores, labels: list[int], masks: np.ndarray) -> tuple[float, float]:
    """Image AUROC, and pixel AUROC of the patch maps upsampled bilinearly to the masks' size."""
    maps = F.interpolate(result.patch_scores.float()[:, None], size=masks.shape[1:], mode="bilinear",
                         align_corners=False)[:, 0]
    return roc_auc_score(labels, result.image_scores.numpy()), roc_auc_score(masks.ravel(), maps.numpy().ravel())


def table(backbone: Backbone, scorers: dict[str, Scorer],
          data: dict[str, tuple[np.ndarray, list[int], np.ndarray]]) -> None:
    """Print image / pixel AUROC (%) per category and their means, one column per scorer."""
    rows = {category: {name: aurocs(run(backbone, images), labels, masks) for name, run in scorers.items()}
            for category, (images, labels, masks) in data.items()}
    rows["mean"] = {name: tuple(np.mean([rows[c][name] for c in data], axis=0)) for name in scorers}
    width = max(17, *(len(n) + 2 for n in scorers))
    print(f"{'image/pixel AUROC':12s}" + "".join(f"{n:>{width}s}" for n in scorers))
    for category, row in rows.items():
        print(f"{category:12s}" + "".join(f"{f'{100 * i:.1f} / {100 * p:.1f}':>{width}s}" for i, p in row.values()))


def load(root: str, category: str, size: int = SIZE) -> tuple[np.ndarray, list[int], np.ndarray]:
    samples = read_split(root, "mvtec", category, "test")
    images = np.stack([load_image(s.image_path, size) for s in samples])
    masks = np.stack([load_mask(s, size) for s in samples])
    return images, [s.label for s in samples], masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="mobilenetv2_100 ImageNet safetensors")
    args = parser.parse_args()
    torch.manual_seed(0)
    cnn, vit = build_backbone(backbone_config(args.weights)), build_backbone(vit_config())
    with tempfile.TemporaryDirectory() as tmp:
        for variant, pose in POSES.items():
            root = str(Path(tmp) / str(pose))
            generate_dataset(root, n_train=0, n_test_good=10, n_test_defect=10, image_size=SIZE, pose=pose)
            data = {category: load(root, category) for category in DEFAULT_CATEGORIES}
            for backbone, scorers in ((cnn, CNN_SCORERS), (vit, VIT_SCORERS)):
                print(f"\n{variant} data, backbone {backbone.description}")
                table(backbone, scorers, data)
    print("\nViT foreground columns: random-init attention is no meaningful foreground; they only exercise the path.")

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
