"""Backbone settings shared by every program: the feature extractor and PatchEAD+'s foreground mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .schema import FieldError, Section, setting


@dataclass
class BackboneConfig(Section):
    """Which network turns images into multi-stage patch features and an image embedding."""

    family: Literal["open_clip", "timm_vit", "timm_cnn"] = setting(
        "Model family: 'open_clip' (CLIP ViTs, e.g. ViT-L-14-336), 'timm_vit' (DINO / DINOv2 ViTs), "
        "'timm_cnn' (any timm CNN with features_only, e.g. mobilenetv2_100, wide_resnet50_2).",
        default="open_clip",
    )
    name: str = setting("Model name in its family's registry (open_clip or timm).", default="ViT-B-16")
    weights: str | None = setting(
        "Checkpoint to load: a local path or any fsspec URI (s3://bucket/key, gs://, https:// on "
        "reachable networks). Safetensors or a PyTorch state dict; never unpickles arbitrary objects. "
        "Required unless random_init is true.",
        default=None,
        uri=True,
    )
    random_init: bool = setting(
        "Use randomly initialised weights. Only for tests and demos: every output made this way is "
        "marked as not meaningful.",
        default=False,
    )
    image_size: int = setting(
        "Square input size in pixels. ViTs: a multiple of the patch size; the position embedding is "
        "interpolated (e.g. ViT-L-14-336 at 518 gives a 37x37 grid).",
        default=224,
        gt=0,
    )
    layers: list[int] | None = setting(
        "ViTs: 0-based block indices whose output patch tokens are the stages (default: the ends of 4 "
        "evenly divided stages, e.g. [5, 11, 17, 23] for 24 blocks). CNNs: timm out_indices of the "
        "feature levels (default [1, 2]: strides 4 and 8 on most timm CNNs).",
        default=None,
    )
    pad_type: str | None = setting(
        "timm_cnn only: padding mode passed to timm (e.g. 'same' for TF-ported weights).", default=None
    )
    mean: list[float] | None = setting(
        "Per-channel normalisation mean for RGB in [0, 1] (default: the model's own).", default=None
    )
    std: list[float] | None = setting("Per-channel normalisation std (default: the model's own).", default=None)
    device: str = setting("'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.", default="auto",
                          run_only=True)
    batch_size: int = setting("Images per forward pass during feature extraction.", default=8, gt=0,
                         run_only=True)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting(
        "Precision of the forward pass: 'auto' is bf16 on CUDA and fp32 on CPU. CUDA autocasts; on CPU a "
        "reduced precision runs the network in that type (bf16: 2-3x faster than fp32 on CPUs with AMX).",
        default="auto"
    )
    cache_dir: str = setting(
        "Local directory where remote (s3://...) weights are copied once before loading.",
        default="~/.cache/musc-pipeline/weights",
        run_only=True,
    )

    def identifier(self) -> str:
        """``family/name@size``: the model in the scores table's ``backbone`` column, a value BI tools
        can group by (whether its scores mean anything is the ``scores_meaningful`` column)."""
        return f"{self.family}/{self.name}@{self.image_size}"

    def check(self) -> None:
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != 3:
                raise FieldError(key, f"needs 3 values (R, G, B), got {value}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise FieldError("std", f"values must be positive, got {self.std}")
        if self.layers is not None and (not self.layers or any(i < 0 for i in self.layers)):
            raise FieldError("layers", f"must be a non-empty list of non-negative indices, got {self.layers}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise FieldError("device", f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


@dataclass
class ForegroundConfig(Section):
    """PatchEAD+'s foreground mask, usable by MuSc too: down-weight background patch scores."""

    enabled: bool = setting(
        "Weight patch scores by the backbone's last-layer CLS-to-patch attention (ViT backbones only): "
        "min-max normalised per image, patches above threshold keep their score, the rest are scaled by "
        "background_weight.",
        default=False,
    )
    threshold: float = setting("Normalised attention above which a patch is foreground (paper: 0.05).", default=0.05,
                        ge=0, lt=1)
    background_weight: float = setting("Factor on background patch scores (paper: 0.5).", default=0.5,
                                ge=0, le=1)

