"""The shape ViTAD and Dinomaly share: a frozen encoder, a trainable reconstruction, cosine distances.

Encode (no gradient), reconstruct, compare with cosine distance. The two detectors differ in which
encoder features are targets, what feeds the decoder, how the loss treats easy points, and how a
map becomes an image score.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import nn

from ..engine.backbones import Backbone
from ..engine.maps import gaussian_blur
from .losses import anomaly_map


def grid(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """(B, L, C) -> (B, C, side, side)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


class ReconstructionDetector(nn.Module, ABC):
    """Frozen encoder + trainable reconstruction; maps and scores from cosine distances."""

    map_reduce = "sum"

    def __init__(self, encoder: Backbone, gaussian_sigma: float) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.gaussian_sigma = gaussian_sigma
        if len(set(encoder.stage_dims)) != 1:
            raise ValueError(f"reconstruction needs stages of one width, got {encoder.stage_dims} from "
                             f"{encoder.description}")
        self.dim = encoder.stage_dims[0]
        self.side = encoder.grid

    @property
    def image_size(self) -> int:
        return self.encoder.image_size

    def train(self, mode: bool = True) -> ReconstructionDetector:
        super().train(mode)
        self.encoder.eval()  # frozen: no dropout, fixed statistics, whatever mode the decoder is in
        return self

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The learned weights only: the encoder comes from its own weights file."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        return self.encoder.preprocess(images)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [s.float() for s in self.encoder(x).stages]

    @abstractmethod
    def reconstruct(self, stages: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Encoder stages -> (targets, reconstructions), paired lists of (B, C, h, w)."""

    @abstractmethod
    def loss(self, targets: list[torch.Tensor], recon: list[torch.Tensor], progress: float) -> torch.Tensor:
        """Training loss; ``progress`` in [0, 1] is the fraction of training done."""

    @abstractmethod
    def image_score(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, S, S) maps -> (B,) image scores."""

    @abstractmethod
    def make_optimizer(self, iterations: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """The paper's optimiser and learning-rate schedule over ``iterations`` steps."""

    def set_references(self, x: torch.Tensor | None) -> None:
        raise ValueError(f"{type(self).__name__} has no few-shot mode: it was trained on the product's normal images")

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.reconstruct(self.encode(x))

    def training_loss(self, x: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, progress: float) -> torch.Tensor:
        """The loss on a batch of normal images (labels and masks are unused: all normal)."""
        targets, recon = self(x)
        return self.loss(targets, recon, progress)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images -> anomaly maps (B, S, S) at the input size and image scores (B,).

        Always in eval mode (no bottleneck noise), whatever mode the module is in.
        """
        was_training = self.training
        self.eval()
        try:
            targets, recon = self(x)
        finally:
            self.train(was_training)
        maps = gaussian_blur(anomaly_map(targets, recon, x.shape[-1], self.map_reduce).float(), self.gaussian_sigma)
        return maps, self.image_score(maps)
