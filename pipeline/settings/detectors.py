"""Settings of the trained detectors (ViTAD, Dinomaly, SOWA) and of their training loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .backbone import BackboneConfig
from .schema import FieldError, Section, setting


def _vit_encoder(name: str, image_size: int, layers: list[int]) -> BackboneConfig:
    return BackboneConfig(family="timm_vit", name=name, image_size=image_size, layers=layers)


@dataclass
class ViTADConfig(Section):
    """ViTAD (Zhang et al.): plain ViT encoder -> one linear fuser -> plain ViT decoder one stage shorter."""

    encoder: BackboneConfig = setting(
        "Frozen encoder: a timm ViT split into 4 stages; layers are the 4 stage ends (DINO ViT-S/16: "
        "blocks 2, 5, 8, 11). The last stage feeds the fuser; stages 2-4 are the restraint stages.",
        default_factory=lambda: _vit_encoder("vit_small_patch16_224.dino", 256, [2, 5, 8, 11]),
    )
    decoder_depth: int = setting(
        "Decoder blocks, split evenly into 3 stages that reconstruct encoder stages 4, 3, 2 (9 for a "
        "12-block encoder: one stage shorter).",
        default=9,
        ge=1,
    )
    decoder_heads: int | None = setting("Decoder attention heads (null: embedding dim / 64).", default=None)
    loss: Literal["pointwise", "flat"] = setting(
        "'pointwise': mean over positions of the cosine distance per restraint stage (the paper's loss); "
        "'flat': cosine distance of the whole flattened feature map (the paper's Cos_f ablation).",
        default="pointwise",
    )
    score_pool_kernel: int = setting(
        "Image score = max of the anomaly map after average pooling with this kernel (pixels, stride 1).",
        default=16,
        ge=1,
    )
    lr: float = setting("AdamW learning rate (paper: 1e-4).", default=1e-4, gt=0)
    weight_decay: float = setting("AdamW weight decay (paper: 1e-4).", default=1e-4)
    lr_step_at: float = setting(
        "Step schedule: the learning rate drops 10x after this fraction of the iterations (paper: epoch 80 "
        "of 100).",
        default=0.8,
        gt=0,
        le=1,
    )

    def input_geometry(self) -> tuple[int, int | None]:
        """(encoder input size, None): images are resized straight to the encoder's size."""
        return self.encoder.image_size, None

    def check(self) -> None:
        if self.decoder_depth % 3:
            raise FieldError("decoder_depth", f"must split into 3 stages (a multiple of 3), got {self.decoder_depth}")


@dataclass
class DinomalyConfig(Section):
    """Dinomaly (Guo et al.): middle-layer taps -> noisy MLP bottleneck -> linear-attention decoder."""

    encoder: BackboneConfig = setting(
        "Frozen encoder: a DINOv2-with-registers ViT; layers are the tapped middle blocks (ViT-B: 2-9; "
        "ViT-L: 4, 6, ..., 18). Registers and CLS are dropped.",
        default_factory=lambda: _vit_encoder("vit_base_patch14_reg4_dinov2.lvd142m", 392, list(range(2, 10))),
    )
    resize: int | None = setting(
        "Resize images to this size, then centre-crop encoder.image_size (paper: 448 -> 392). null: "
        "resize straight to encoder.image_size.",
        default=448,
    )
    decoder_depth: int = setting("Decoder blocks (paper: 8, one per tapped layer).", default=8, ge=1)
    decoder_heads: int | None = setting("Decoder attention heads (null: embedding dim / 64).", default=None)
    attention: Literal["linear", "softmax"] = setting("Decoder token mixer (paper: linear).", default="linear")
    dropout: float = setting("Dropout rate of the noisy bottleneck (paper: 0.2; 0.4 for diverse data).",
                            default=0.2, ge=0, lt=1)
    groups: int = setting(
        "Loose constraint: tapped layers and decoder layers are averaged in this many contiguous groups and "
        "compared group to group (paper: 2).",
        default=2,
        ge=1,
    )
    loss: Literal["global_hm", "flat", "pointwise"] = setting(
        "'global_hm': global cosine loss with hard mining (paper); 'flat' without hard mining; "
        "'pointwise': mean point-wise cosine distance.",
        default="global_hm",
    )
    hard_mining_rate: float = setting(
        "Final fraction of well-reconstructed points whose gradient is down-weighted (paper: 0.9).", default=0.9,
        ge=0, lt=1,
    )
    hard_mining_warmup: float = setting(
        "The hard-mining rate rises linearly from 0 over this fraction of the iterations (paper: 1000 of "
        "10000).",
        default=0.1,
    )
    easy_grad_weight: float = setting("Gradient factor of the down-weighted points (paper: 0.1).", default=0.1)
    top_fraction: float = setting("Image score = mean of the top fraction of map pixels (paper: 0.01).",
                                  default=0.01, gt=0, le=1)
    lr: float = setting("StableAdamW peak learning rate (paper: 2e-3).", default=2e-3, gt=0)
    final_lr: float = setting("Learning rate at the end of the cosine decay (paper: 2e-4).", default=2e-4)
    warmup: float = setting("Linear warm-up over this fraction of the iterations (paper: 100 of 10000).", default=0.01)
    weight_decay: float = setting("Weight decay (paper: 1e-4).", default=1e-4)

    def input_geometry(self) -> tuple[int, int | None]:
        """(encoder input size, resize before the centre crop)."""
        return self.encoder.image_size, self.resize

    def check(self) -> None:
        if self.resize is not None and self.resize < self.encoder.image_size:
            raise FieldError("resize", f"must be >= encoder.image_size ({self.encoder.image_size}), got {self.resize}")


@dataclass
class SOWAConfig(Section):
    """SOWA (Hu et al.): frozen CLIP, a frozen-window attention adapter after each of its 4 stages,
    learnable normal/abnormal prompts; trained on an auxiliary labelled set (images with masks)."""

    clip: BackboneConfig = setting(
        "Frozen CLIP (family open_clip, a model with CLIP's own text tower, e.g. ViT-L-14-336). The weights "
        "must be the full open_clip checkpoint (vision and text). layers are the 4 stage ends (null: 4 "
        "evenly divided stages, 6 blocks each for ViT-L).",
        default_factory=lambda: BackboneConfig(family="open_clip", name="ViT-L-14-336", image_size=336),
    )
    windows: list[int] = setting(
        "Square window side (in patches) of each stage's adapter, shallow to deep; each must divide the patch "
        "grid (ViT-L-14-336 at 336 px: 24). Small windows keep shallow stages local, large ones let deep "
        "stages see more context.",
        default_factory=lambda: [2, 4, 6, 12],
    )
    stage_weights: list[float] = setting("alpha_i of Eq. 2: weight of each stage in the fused map (paper: 1.0).",
                                      default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    prompt_length: int = setting("Learnable word embeddings before 'normal object' / 'abnormal object' (paper: 12; at "
                                 "most 70, so the prompt fits CLIP's 77 tokens).",
                                 default=12, ge=1, le=70)
    lr: float = setting("Adam learning rate (paper: 1e-3).", default=1e-3, gt=0)
    dice_weight: float = setting("lambda_1 of Eq. 5: Dice loss on the fused map (paper: 1.0).", default=1.0, ge=0)
    focal_weight: float = setting("lambda_2 of Eq. 5: Focal loss on the fused map (paper: 1.0).", default=1.0, ge=0)
    bce_weight: float = setting("lambda_3 of Eq. 5: BCE on the image-level probability (paper: 1.0).", default=1.0,
                                ge=0)
    focal_gamma: float = setting("Focal loss focusing parameter.", default=2.0, ge=0)
    image_score: Literal["mean", "image", "map_max"] = setting(
        "Image score: 'image' = the CLS embedding's abnormal probability against the prompts, 'map_max' = "
        "the maximum of the (few-shot combined) anomaly map, 'mean' = their average.",
        default="mean",
    )
    reference_images: int = setting(
        "Few-shot inference: known-good reference images per category whose adapted stage features form the "
        "memory bank (each query patch's cosine distance to its nearest bank patch, averaged over stages, "
        "is added to the zero-shot map). 0: zero-shot. The nightly job takes its own keys, references and "
        "reference_images.",
        default=0,
        ge=0,
        former_name="shots",
    )

    @property
    def encoder(self) -> BackboneConfig:
        """The frozen image encoder (CLIP's vision tower), named like the other detectors' encoders."""
        return self.clip

    def input_geometry(self) -> tuple[int, int | None]:
        """(CLIP's input size, None)."""
        return self.clip.image_size, None

    def check(self) -> None:
        if self.clip.family != "open_clip":
            raise FieldError("clip.family", f"SOWA needs a CLIP model (open_clip), got {self.clip.family!r}")
        if len(self.windows) != 4 or any(w < 1 for w in self.windows):
            raise FieldError("windows", f"needs 4 positive window sides (one per stage), got {self.windows}")
        if len(self.stage_weights) != 4:
            raise FieldError("stage_weights", f"needs 4 weights (one per stage), got {self.stage_weights}")
        if self.clip.layers is not None and len(self.clip.layers) != 4:
            raise FieldError("clip.layers", f"SOWA has 4 stages: give 4 stage-end blocks, got {self.clip.layers}")


@dataclass
class TrainingConfig(Section):
    """How a detector is trained: one model on the normal images of all categories (multi-class)."""

    iterations: int = setting("Optimiser steps.", default=10000, ge=1)
    batch_size: int = setting("Images per step (paper: 8).", default=8, ge=1)
    amp: bool = setting("Mixed precision on CUDA (bf16 autocast); ignored on CPU.", default=True)
    seed: int = setting("Seed of the weight initialisation and batch order.", default=1)
    eval_every: int = setting("Evaluate on the validation split every this many steps (0: only at the end).",
                              default=0, ge=0)
    gaussian_sigma: float = setting("Gaussian smoothing of the anomaly maps in pixels (0: none).", default=4.0)


@dataclass
class DetectorConfig(Section):
    """A trained detector: which one, its settings, and how it is trained."""

    kind: Literal["vitad", "dinomaly", "sowa"] = setting(
        "Which detector: 'vitad' and 'dinomaly' reconstruct features and train on normal images; 'sowa' "
        "trains prompts and adapters of a frozen CLIP on an auxiliary labelled set.",
        default="vitad",
    )
    vitad: ViTADConfig = setting("ViTAD settings (used when kind is vitad).", default_factory=ViTADConfig)
    dinomaly: DinomalyConfig = setting("Dinomaly settings (used when kind is dinomaly).",
                                       default_factory=DinomalyConfig)
    sowa: SOWAConfig = setting("SOWA settings (used when kind is sowa).", default_factory=SOWAConfig)
    training: TrainingConfig = setting("Training loop.", default_factory=TrainingConfig)

    def chosen(self) -> ViTADConfig | DinomalyConfig | SOWAConfig:
        """The settings of the chosen detector."""
        return getattr(self, self.kind)

    def input_geometry(self) -> tuple[int, int | None]:
        """(encoder input size, resize before the centre crop or None) of the chosen detector."""
        return self.chosen().input_geometry()
