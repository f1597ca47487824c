"""Dinomaly (Guo et al.): middle-layer taps -> noisy MLP bottleneck -> linear-attention decoder."""

from __future__ import annotations

import torch
from torch import nn

from ..engine.backbones import build_backbone
from ..settings import DinomalyConfig
from .layers import Block, NoisyBottleneck
from .losses import mean_of_top_fraction, reconstruction_loss
from .optim import StableAdamW, warmup_cosine_schedule
from .reconstruction import ReconstructionDetector, grid


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
            outputs.append(grid(x, self.side))
        return self._group_means(stages, self.groups), self._group_means(outputs[::-1], self.groups)

    def discard_rate(self, progress: float) -> float:
        """Hard-mining rate: rises linearly to its final value over the warm-up fraction of training."""
        ramp = 1.0 if self.cfg.hard_mining_warmup <= 0 else min(1.0, progress / self.cfg.hard_mining_warmup)
        return self.cfg.hard_mining_rate * ramp

    def loss(self, targets, recon, progress):
        return reconstruction_loss(targets, recon, self.cfg.loss, self.discard_rate(progress), self.cfg.easy_grad_weight)

    def image_score(self, maps):
        return mean_of_top_fraction(maps, self.cfg.top_fraction)

    def make_optimizer(self, iterations: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """StableAdamW (AMSGrad) with linear warm-up and cosine decay to ``final_lr``."""
        params = [p for p in self.parameters() if p.requires_grad]
        d = self.cfg
        optimizer = StableAdamW(params, lr=d.lr, betas=(0.9, 0.999), eps=1e-10, weight_decay=d.weight_decay,
                                amsgrad=True)
        schedule = warmup_cosine_schedule(iterations, d.warmup, d.final_lr / d.lr)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
