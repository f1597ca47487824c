"""What every trained detector offers the training loop, the sweep and the nightly job.

ViTAD and Dinomaly (``ReconstructionDetector``) and SOWA each satisfy ``Detector``; nothing outside
a detector's own module needs to know which one it has.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from ..engine.backbones import Backbone


class Detector(Protocol):
    """A trained anomaly detector over a frozen image encoder."""

    encoder: Backbone

    @property
    def image_size(self) -> int:
        """Input side in pixels."""

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 RGB (B, S, S, 3) -> normalised input tensor."""

    def training_loss(self, x: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor,
                      progress: float) -> torch.Tensor:
        """The loss on one batch; ``progress`` in [0, 1] is the fraction of training done."""

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images -> anomaly maps (B, S, S) at the input size and image scores (B,)."""

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The learned tensors only (what a checkpoint stores)."""

    def make_optimizer(self, iterations: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """The paper's optimiser and learning-rate schedule over ``iterations`` steps."""

    def set_references(self, x: torch.Tensor | None) -> None:
        """Few-shot: score against these known-good images from now on (None: zero-shot again).
        Detectors without a few-shot mode raise."""
