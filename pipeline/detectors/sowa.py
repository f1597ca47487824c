"""SOWA (Hu et al.): hierarchical frozen window attention on CLIP with dual learnable prompts.

A frozen CLIP ViT is cut into 4 stages; after each stage an FWA adapter (``window_attention``)
re-attends the patch tokens inside windows with that stage's own frozen weights and projects them
into the text space (Eq. 1, 4). Two prompts, "[L1]..[Ll] normal object" and "[L1]..[Ll] abnormal
object", have learnable word embeddings and go through the frozen text encoder (Eq. 3). Each
stage's patch features are compared with the two text features; the comparisons are summed over
stages (Eq. 2) and a softmax gives each patch's abnormal probability. Training fits only the
adapters' projections and the prompts, with Dice + Focal on the map and BCE on the CLS embedding's
probability (Eq. 5), on an auxiliary labelled set: the product being inspected is never seen.
Few-shot inference adds each patch's distance to a bank of known-good references' adapted features
(Appendix A).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.backbones import OpenClipViT, create_open_clip
from ..engine.maps import gaussian_blur
from ..engine.msm import reference_similarities
from ..settings import SOWAConfig
from .losses import dice_loss, focal_loss
from .window_attention import FrozenWindowAttention


class DualPrompts(nn.Module):
    """Learnable normal / abnormal prompts through CLIP's frozen text encoder -> (2, D) unit features."""

    def __init__(self, clip: nn.Module, tokenizer, length: int) -> None:
        super().__init__()
        if not hasattr(clip, "token_embedding"):
            raise ValueError(f"SOWA needs an open_clip model with CLIP's own text tower, not {type(clip).__name__}")
        placeholder = " ".join(["X"] * length)
        tokens = tokenizer([f"{placeholder} normal object", f"{placeholder} abnormal object"])
        with torch.no_grad():
            embedded = clip.token_embedding(tokens)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("embedded", embedded, persistent=False)  # frozen word embeddings
        self.register_buffer("positional_embedding", clip.positional_embedding.detach().clone(), persistent=False)
        self.register_buffer("attn_mask", clip.attn_mask.clone(), persistent=False)
        self.transformer, self.ln_final = clip.transformer.requires_grad_(False), clip.ln_final.requires_grad_(False)
        self.register_buffer("projection", clip.text_projection.detach().clone(), persistent=False)
        self.length = length
        # the [L1]..[Ll] of each prompt, after its start token; CLIP's word embeddings have std ~0.02
        self.context = nn.Parameter(torch.randn(2, length, embedded.shape[-1]) * 0.02)

    def forward(self) -> torch.Tensor:
        x = torch.cat([self.embedded[:, :1], self.context, self.embedded[:, 1 + self.length:]], dim=1)
        x = self.transformer(x + self.positional_embedding, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        end = x[torch.arange(2, device=x.device), self.tokens.argmax(dim=-1)]  # the end-of-text token
        return F.normalize(end @ self.projection, dim=-1)


class SOWA(nn.Module):
    """Frozen CLIP + 4 FWA adapters + dual prompts; ``predict`` gives maps and image scores."""

    def __init__(self, cfg: SOWAConfig, gaussian_sigma: float = 4.0) -> None:
        import open_clip

        super().__init__()
        clip = create_open_clip(cfg.clip, with_text=True)
        self.encoder = OpenClipViT(cfg.clip, clip.visual).eval().requires_grad_(False)
        if len(self.encoder.layers) != 4:
            raise ValueError(f"SOWA needs 4 CLIP stages, got layers {self.encoder.layers}")
        side = self.encoder.grid
        bad = [w for w in cfg.windows if side % w]
        if bad:
            raise ValueError(f"sowa.windows {bad} do not divide the {side}x{side} patch grid of {cfg.clip.name} "
                             f"at {cfg.clip.image_size} px")
        self.prompts = DualPrompts(clip, open_clip.get_tokenizer(cfg.clip.name), cfg.prompt_length)
        text_dim = self.prompts.projection.shape[1]
        blocks = clip.visual.transformer.resblocks
        self.adapters = nn.ModuleList(
            FrozenWindowAttention(blocks[i].attn, (w, w), text_dim, norm=blocks[i].ln_1)
            for i, w in zip(self.encoder.layers, cfg.windows))
        self.register_buffer("logit_scale", clip.logit_scale.detach().exp().clone(), persistent=False)
        self.register_buffer("stage_weights", torch.tensor(cfg.stage_weights), persistent=False)
        self.cfg, self.side, self.gaussian_sigma = cfg, side, gaussian_sigma
        self.reference_bank: list[torch.Tensor] | None = None  # per stage (1, references * L, D) unit features

    @property
    def image_size(self) -> int:
        return self.encoder.image_size

    def train(self, mode: bool = True) -> SOWA:
        super().train(mode)
        self.encoder.eval()
        self.prompts.transformer.eval()
        return self

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The adapters' projections and the prompt contexts: everything else is CLIP's."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def make_optimizer(self, iterations: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """Adam at a constant rate (the paper's recipe); ``iterations`` does not shape it."""
        optimizer = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.cfg.lr)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    def preprocess(self, images) -> torch.Tensor:
        return self.encoder.preprocess(images)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Normalised images -> fused patch logits (B, L, 2), image logits (B, 2) and the adapted
        per-stage patch features [(B, L, D)] (unit length)."""
        with torch.no_grad():
            features = self.encoder(x)
        text = self.prompts()
        adapted = [F.normalize(adapter(stage.flatten(2).transpose(1, 2).float(), self.side), dim=-1)
                   for adapter, stage in zip(self.adapters, features.stages)]
        fused = sum(w * (f @ text.T) for w, f in zip(self.stage_weights, adapted)) * self.logit_scale  # Eq. 2
        image_logits = self.logit_scale * features.embedding.float() @ text.T
        return fused, image_logits, adapted

    def pixel_probabilities(self, fused: torch.Tensor, size: int) -> torch.Tensor:
        """Fused patch logits (B, L, 2) -> softmax [normal, abnormal] probabilities (B, 2, size, size)."""
        probs = fused.softmax(dim=-1).transpose(1, 2).reshape(fused.shape[0], 2, self.side, self.side)
        return F.interpolate(probs, size=(size, size), mode="bilinear", align_corners=False)

    def training_loss(self, x: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, progress: float) -> torch.Tensor:
        """Eq. 5 on a labelled batch: masks (B, S, S) bool, labels (B,) 1 anomalous."""
        fused, image_logits, _ = self(x)
        probs = self.pixel_probabilities(fused, masks.shape[-1])
        # BCE on softmax([l0, l1])[1] = sigmoid(l1 - l0): the logit form is exact, stable and autocast-safe
        abnormal_logit = (image_logits[:, 1] - image_logits[:, 0]).float()
        cfg = self.cfg
        return (cfg.dice_weight * dice_loss(probs[:, 1].float(), masks)
                + cfg.focal_weight * focal_loss(probs.float(), masks, cfg.focal_gamma)
                + cfg.bce_weight * F.binary_cross_entropy_with_logits(abnormal_logit, labels.float()))

    @torch.no_grad()
    def set_references(self, x: torch.Tensor | None) -> None:
        """Few-shot: keep the adapted stage features of these normal images (None: back to zero-shot)."""
        if x is None:
            self.reference_bank = None
            return
        _, _, adapted = self(x)
        self.reference_bank = [f.reshape(1, -1, f.shape[-1]) for f in adapted]

    def fewshot_distances(self, adapted: list[torch.Tensor]) -> torch.Tensor:
        """(B, L): each patch's cosine distance to its nearest reference patch, averaged over stages."""
        if self.reference_bank is None:
            raise RuntimeError("no reference bank: call set_references with known-good images first")
        per_stage = [1.0 - reference_similarities(f, bank, 1)[..., 0] for f, bank in zip(adapted, self.reference_bank)]
        return torch.stack(per_stage).mean(dim=0)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images -> anomaly maps (B, S, S) and image scores (B,). No layer of SOWA acts
        differently in training (CLIP is kept in eval mode, the projections have no dropout), so the
        module's mode does not matter here."""
        fused, image_logits, adapted = self(x)
        size = x.shape[-1]
        maps = self.pixel_probabilities(fused, size)[:, 1]
        if self.reference_bank is not None:
            distances = self.fewshot_distances(adapted).view(-1, 1, self.side, self.side)
            maps = maps + F.interpolate(distances, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        maps = gaussian_blur(maps, self.gaussian_sigma)
        image = image_logits.softmax(dim=-1)[:, 1]
        peak = maps.flatten(1).amax(dim=1)
        scores = {"image": image, "map_max": peak, "mean": (image + peak) / 2}[self.cfg.image_score]
        return maps, scores
