"""The registry of trained detectors: a config's ``kind`` names the class that builds it."""

from __future__ import annotations

import torch

from ..settings import DetectorConfig
from .base import Detector
from .dinomaly import Dinomaly
from .sowa import SOWA
from .vitad import ViTAD

DETECTORS: dict[str, type] = {"vitad": ViTAD, "dinomaly": Dinomaly, "sowa": SOWA}


def build_detector(cfg: DetectorConfig) -> Detector:
    """The configured detector with freshly initialised trainable parts (seeded by training.seed)."""
    torch.manual_seed(cfg.training.seed)
    return DETECTORS[cfg.kind](cfg.chosen(), cfg.training.gaussian_sigma)
