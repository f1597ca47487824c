"""ViTAD (Zhang et al.): plain ViT encoder -> one linear fuser -> plain ViT decoder one stage shorter."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.backbones import build_backbone
from ..engine.stages import evenly_divided_stages
from ..settings import ViTADConfig
from .layers import Block
from .losses import max_of_average_pooled, reconstruction_loss
from .optim import step_schedule
from .reconstruction import ReconstructionDetector, grid


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
        self.cfg = cfg

    def reconstruct(self, stages: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        tokens = stages[-1].flatten(2).transpose(1, 2)
        x = self.fuser(F.layer_norm(tokens, (self.dim,))) + self.position
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(grid(x, self.side))
        return stages[1:][::-1], outputs

    def loss(self, targets, recon, progress):
        return reconstruction_loss(targets, recon, self.cfg.loss)

    def image_score(self, maps):
        return max_of_average_pooled(maps, self.cfg.score_pool_kernel)

    def make_optimizer(self, iterations: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """AdamW with a 10x step decay at ``lr_step_at`` of the iterations."""
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, step_schedule(iterations, self.cfg.lr_step_at))
