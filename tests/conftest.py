"""Shared fixtures: paths to the optional real data and weights next to the repository."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenetv2_100_imagenet_from_tflite.safetensors"
MVTEC_ROOT = SHARED / "data" / "mvtec_ad"


@pytest.fixture
def mobilenet_weights() -> Path:
    if not MOBILENET_WEIGHTS.is_file():
        pytest.skip(f"real weights absent: {MOBILENET_WEIGHTS}")
    return MOBILENET_WEIGHTS


@pytest.fixture
def mvtec_root() -> Path:
    if not (MVTEC_ROOT / "bottle" / "test").is_dir():
        pytest.skip(f"MVTec AD bottle absent: {MVTEC_ROOT}")
    return MVTEC_ROOT
