"""The trained detectors: ViTAD and Dinomaly (here) and SOWA (``sowa``), built from one config.

ViTAD and Dinomaly: a frozen ViT encoder, a trainable decoder that reconstructs its features.

Both share one shape (``ReconstructionDetector``): encode (no gradient), reconstruct, compare with
cosine distance. They differ in which encoder features are targets, what feeds the decoder, how the
loss treats easy points, and how a map becomes an image score.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..anomaly_maps import gaussian_blur
from ..backbones import Backbone, build_backbone, evenly_divided_stages
from ..config import DetectorConfig, DinomalyConfig, ViTADConfig
from .layers import Block, NoisyBottleneck
from .losses import anomaly_map, max_of_average_pooled, mean_of_top_fraction, reconstruction_loss
from .sowa import SOWA


def _grid(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """(B, L, C) -> (B, C, side, side)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


class ReconstructionDetector(nn.Module, ABC):
    """Frozen encoder + trainable reconstruction; maps and scores from cosine distances."""

    map_reduce = "sum"

    def __init__(self, encoder: Backbone, gaussian_sigma: float) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.gaussian_sigma = gaussian_sigma
        self.dim = int(encoder.model.embed_dim)
        self.side = int(encoder.grid)

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


class ViTAD(ReconstructionDetector):
    """ViTAD: encoder stages 2-4 are restraint targets; stage 4 -> linear fuser -> ViT decoder.

    The paper fuses the encoder's final-normed last stage; LayerNorm without affine parameters is
    used here, since the linear fuser absorbs any affine map. The decoder has a learned position
    embedding and reconstructs deep-to-shallow: its stage j output is compared with encoder stage
    5 - j (the symmetric layout of the paper's Fig. 3).
    """

    def __init__(self, cfg: ViTADConfig, gaussian_sigma: float = 4.0) -> None:
        encoder = build_backbone(cfg.encoder)
        super().__init__(encoder, gaussian_sigma)
        if len(encoder.layers) != 4:
            raise ValueError(f"ViTAD needs 4 encoder stage ends, got layers {encoder.layers}")
        heads = cfg.decoder_heads or max(1, self.dim // 64)
        self.fuser = nn.Linear(self.dim, self.dim)
        self.position = nn.Parameter(torch.zeros(1, self.side * self.side, self.dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(Block(self.dim, heads) for _ in range(cfg.decoder_depth))
        self.stage_ends = set(evenly_divided_stages(cfg.decoder_depth, 3))
        self.loss_variant = cfg.loss
        self.pool_kernel = cfg.score_pool_kernel

    def reconstruct(self, stages: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        tokens = stages[-1].flatten(2).transpose(1, 2)
        x = self.fuser(F.layer_norm(tokens, (self.dim,))) + self.position
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(_grid(x, self.side))
        return stages[1:][::-1], outputs

    def loss(self, targets, recon, progress):
        return reconstruction_loss(targets, recon, self.loss_variant)

    def image_score(self, maps):
        return max_of_average_pooled(maps, self.pool_kernel)


class Dinomaly(ReconstructionDetector):
    """Dinomaly: mean of the tapped layers -> noisy bottleneck -> linear-attention decoder.

    Loose constraint: the tapped layers and the decoder outputs are averaged in contiguous groups
    and compared group to group. The decoder reconstructs deep-to-shallow (its first block pairs
    with the last tapped layer), as ViTAD's; the supplement leaves the order implicit, and grouping
    makes only the group boundaries matter.
    """

    map_reduce = "mean"

    def __init__(self, cfg: DinomalyConfig, gaussian_sigma: float = 4.0) -> None:
        encoder = build_backbone(cfg.encoder)
        super().__init__(encoder, gaussian_sigma)
        taps = len(encoder.layers)
        if taps % cfg.groups or cfg.decoder_depth % cfg.groups:
            raise ValueError(f"{taps} tapped layers and {cfg.decoder_depth} decoder blocks must both split "
                             f"into {cfg.groups} groups")
        heads = cfg.decoder_heads or max(1, self.dim // 64)
        self.bottleneck = NoisyBottleneck(self.dim, cfg.dropout)
        self.blocks = nn.ModuleList(Block(self.dim, heads, cfg.attention) for _ in range(cfg.decoder_depth))
        self.groups = cfg.groups
        self.cfg = cfg

    @staticmethod
    def _group_means(maps: list[torch.Tensor], groups: int) -> list[torch.Tensor]:
        size = len(maps) // groups
        return [torch.stack(maps[g * size:(g + 1) * size]).mean(dim=0) for g in range(groups)]

    def reconstruct(self, stages: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        tokens = torch.stack([s.flatten(2).transpose(1, 2) for s in stages]).mean(dim=0)
        x = self.bottleneck(tokens)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(_grid(x, self.side))
        return self._group_means(stages, self.groups), self._group_means(outputs[::-1], self.groups)

    def discard_rate(self, progress: float) -> float:
        """Hard-mining rate: rises linearly to its final value over the warm-up fraction of training."""
        ramp = 1.0 if self.cfg.hard_mining_warmup <= 0 else min(1.0, progress / self.cfg.hard_mining_warmup)
        return self.cfg.hard_mining_rate * ramp

    def loss(self, targets, recon, progress):
        return reconstruction_loss(targets, recon, self.cfg.loss, self.discard_rate(progress), self.cfg.easy_grad_weight)

    def image_score(self, maps):
        return mean_of_top_fraction(maps, self.cfg.top_fraction)


Detector = ReconstructionDetector | SOWA


def build_detector(cfg: DetectorConfig) -> Detector:
    """The configured detector with freshly initialised trainable parts (seeded by training.seed)."""
    torch.manual_seed(cfg.training.seed)
    sigma = cfg.training.gaussian_sigma
    if cfg.kind == "sowa":
        return SOWA(cfg.sowa, sigma)
    return ViTAD(cfg.vitad, sigma) if cfg.kind == "vitad" else Dinomaly(cfg.dinomaly, sigma)
