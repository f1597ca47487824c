"""Backbones: one way to build a network and get multi-stage patch features plus an image embedding.

Every backbone returns ``Features``: a list of per-stage feature grids (B, C, h, w), all on the same
grid, and an L2-normalised image embedding (B, D) for RsCIN. Three families are supported:

- ``open_clip``: CLIP ViTs (ViT-B-16, ViT-B-16-plus-240, ViT-L-14, ViT-L-14-336, ...). Stages are the
  patch tokens after chosen transformer blocks; the embedding is the projected CLIP image embedding.
- ``timm_vit``: DINO / DINOv2 ViTs from timm. Stages as above; the embedding is the final CLS token.
- ``timm_cnn``: any timm CNN through ``features_only``. Each chosen feature level is a stage; coarser
  levels are bilinearly resampled to the finest chosen grid; the embedding is the global-average-pooled
  deepest level.

Weights come from a local file or an fsspec URI (``storage.fetch_to_local``). Hub downloads are not
used: with no weights the loader refuses unless ``random_init`` is set explicitly.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..settings import BackboneConfig
from .features import Features
from .stages import DEFAULT_CNN_LEVELS, check_backbone, cnn_stages, create_timm_model, vit_stages
from .weights import configured_weights, fetch_weights, load_weights_strict

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def cls_patch_attention(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, heads: int,
                        prefix_tokens: int, q_norm: nn.Module | None = None,
                        k_norm: nn.Module | None = None) -> torch.Tensor:
    """Softmax attention of the CLS token (position 0) over the patch tokens, averaged over heads.

    ``x`` (B, N, C) is the attention layer's input and ``weight``/``bias`` its fused q, k, v input
    projection (3C, C); only the CLS query row is computed. Returns (B, g, g) for the g x g patches.
    """
    grid = math.isqrt(x.shape[1] - prefix_tokens)
    b, n, c = x.shape
    d = c // heads
    q = F.linear(x[:, :1], weight[:c], None if bias is None else bias[:c]).view(b, 1, heads, d).transpose(1, 2)
    k = F.linear(x, weight[c:2 * c], None if bias is None else bias[c:2 * c]).view(b, n, heads, d).transpose(1, 2)
    if q_norm is not None and k_norm is not None:
        q, k = q_norm(q), k_norm(k)
    weights = torch.softmax((q @ k.transpose(-1, -2)).float() * d**-0.5, dim=-1)  # (B, H, 1, N)
    return weights.mean(dim=1)[:, 0, prefix_tokens:].reshape(b, grid, grid)


class _InputCapture:
    """Keeps the input of a module's forward while the context is open (a forward pre-hook)."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.input = module, None

    def __enter__(self) -> _InputCapture:
        self.handle = self.module.register_forward_pre_hook(lambda _, args: setattr(self, "input", args[0]))
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; an explicit CUDA request without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"backbone.device is {name!r} but no CUDA device is available")
    return device


class Backbone(nn.Module, ABC):
    """A frozen feature extractor with its preprocessing; subclasses implement ``forward`` and set
    ``grid`` (the side of the common patch grid) and ``stage_dims`` (channels of each stage)."""

    grid: int
    stage_dims: list[int]

    def __init__(self, cfg: BackboneConfig, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.cfg = cfg
        self.random_init = cfg.weights is None
        self.image_size = cfg.image_size
        self.register_buffer("mean", torch.tensor(cfg.mean or mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std or std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        """Where the model's weights live (and where inputs are sent)."""
        return self.mean.device

    @property
    def description(self) -> str:
        """Human-readable identity, flagged loudly when the weights are random."""
        text = f"{self.cfg.family}:{self.cfg.name}@{self.image_size}"
        return text + " (RANDOM INIT: scores not meaningful)" if self.random_init else text

    @abstractmethod
    def forward(self, x: torch.Tensor) -> Features:
        """Normalised images (B, 3, S, S) -> features."""

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 RGB (B, S, S, 3) at ``image_size`` -> normalised float tensor (B, 3, S, S)."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"expected images of shape (B, {self.image_size}, {self.image_size}, 3), got {images.shape}")
        x = torch.tensor(images, device=self.device).permute(0, 3, 1, 2).float() / 255.0  # copies: Ray hands read-only arrays
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def extract(self, images: np.ndarray, out_dtype: torch.dtype = torch.float32) -> Features:
        """Features of a batch of uint8 RGB images, on the CPU in ``out_dtype``.

        In the configured precision ('auto': bf16 on CUDA, fp32 on CPU). CUDA autocasts. On CPU the
        network itself is cast to a reduced type: CPU autocast re-casts every weight on every call and
        runs several times slower than fp32, while bf16 weights run 2-3x faster than fp32 on CPUs with
        AMX, with the same feature error (under 1% relative). ``forward`` callers (the trained
        detectors' encoders) are not affected.
        """
        device = self.device
        precision = self.cfg.precision
        if precision == "auto":
            precision = "bf16" if device.type == "cuda" else "fp32"
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        x = self.preprocess(images)
        if dtype is None:
            feats = self(x)
        elif device.type == "cuda":
            with torch.autocast(device.type, dtype=dtype):
                feats = self(x)
        else:
            for network in self.children():  # mean and std (this module's buffers) stay fp32
                network.to(dtype)
            feats = self(x.to(dtype))
        return feats.to("cpu", out_dtype)

    def extract_batches(self, images: Iterator[np.ndarray] | Sequence[np.ndarray]) -> Iterator[Features]:
        """Yield features for consecutive ``cfg.batch_size`` chunks of single images (H, W, 3)."""
        batch: list[np.ndarray] = []
        for image in images:
            batch.append(image)
            if len(batch) == self.cfg.batch_size:
                yield self.extract(np.stack(batch))
                batch = []
        if batch:
            yield self.extract(np.stack(batch))

    def extract_all(self, images: Iterator[np.ndarray] | Sequence[np.ndarray],
                    progress: Callable[[int], None] | None = None) -> Features:
        """Features of all ``images`` (single (H, W, 3) images), extracted ``cfg.batch_size`` at a time;
        ``progress(done)`` after each batch."""
        parts: list[Features] = []
        for part in self.extract_batches(images):
            parts.append(part)
            if progress is not None:
                progress(sum(len(p) for p in parts))
        return Features.cat(parts)


def _tokens_to_grid(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, L, C) patch tokens -> (B, C, grid, grid)."""
    b, length, c = tokens.shape
    if length != grid * grid:
        raise ValueError(f"{length} patch tokens do not form a {grid}x{grid} grid")
    return tokens.transpose(1, 2).reshape(b, c, grid, grid)


def create_open_clip(cfg: BackboneConfig, with_text: bool = False) -> nn.Module:
    """An open_clip model with the configured weights.

    Feature extraction needs only the vision tower, so a vision-only checkpoint is accepted; with
    ``with_text`` (SOWA's prompts) the checkpoint must hold the whole model, text tower included.
    """
    import open_clip

    try:
        model = open_clip.create_model(cfg.name, pretrained=None)
    except RuntimeError as err:
        raise ValueError(f"unknown open_clip model '{cfg.name}': {err}") from err
    state = configured_weights(cfg)
    if state is not None:
        if with_text:
            load_weights_strict(model, state, cfg.weights or "", allow_unused=False)
        else:
            visual_state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
            load_weights_strict(model.visual, visual_state or state, cfg.weights or "", allow_unused=False)
    return model


class OpenClipViT(Backbone):
    """CLIP vision tower from open_clip with its position embedding resized to the input grid.

    ``visual`` is an already loaded tower (a model built by ``create_open_clip`` whose text tower
    is used elsewhere); by default the tower is created and loaded here.
    """

    def __init__(self, cfg: BackboneConfig, visual: nn.Module | None = None) -> None:
        super().__init__(cfg, CLIP_MEAN, CLIP_STD)
        if visual is None:
            visual = create_open_clip(cfg).visual
        patch = visual.patch_size[0] if isinstance(visual.patch_size, tuple) else visual.patch_size
        self.grid, self.layers = vit_stages(cfg, len(visual.transformer.resblocks), patch)
        self._resize_position_embedding(visual, self.grid)
        self.stage_dims = [int(visual.transformer.width)] * len(self.layers)
        self.visual = visual.eval().requires_grad_(False)

    @staticmethod
    def _resize_position_embedding(visual: nn.Module, grid: int) -> None:
        old = visual.positional_embedding.data
        old_grid = int(math.isqrt(old.shape[0] - 1))
        if old_grid != grid:
            cls_pos, patch_pos = old[:1], old[1:]
            patch_pos = patch_pos.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
            patch_pos = F.interpolate(patch_pos.float(), size=(grid, grid), mode="bicubic", align_corners=False)
            patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(old.dtype)
            visual.positional_embedding = nn.Parameter(torch.cat([cls_pos, patch_pos]), requires_grad=False)
        visual.grid_size = (grid, grid)
        patch = visual.patch_size[0] if isinstance(visual.patch_size, tuple) else visual.patch_size
        visual.image_size = (grid * patch, grid * patch)

    def forward(self, x: torch.Tensor) -> Features:
        attn = self.visual.transformer.resblocks[-1].attn
        with _InputCapture(attn) as last:
            out = self.visual.forward_intermediates(x, indices=self.layers, output_fmt="NLC")
        stages = [_tokens_to_grid(t, self.grid) for t in out["image_intermediates"]]
        attention = cls_patch_attention(last.input, attn.in_proj_weight, attn.in_proj_bias, attn.num_heads, 1)
        return Features(stages, F.normalize(out["image_features"].float(), dim=-1), attention)


class TimmViT(Backbone):
    """DINO / DINOv2 ViT from timm; prefix (CLS, register) tokens are dropped from the stages."""

    def __init__(self, cfg: BackboneConfig) -> None:
        model = create_timm_model(cfg.name, num_classes=0)
        cfg_mean = model.pretrained_cfg.get("mean", (0.485, 0.456, 0.406))
        cfg_std = model.pretrained_cfg.get("std", (0.229, 0.224, 0.225))
        super().__init__(cfg, cfg_mean, cfg_std)
        state = configured_weights(cfg)
        if state is not None:
            load_weights_strict(model, state, cfg.weights or "", allow_unused=True)
        self.grid, self.layers = vit_stages(cfg, len(model.blocks), model.patch_embed.patch_size[0])
        model.set_input_size(img_size=(cfg.image_size, cfg.image_size))
        self.stage_dims = [int(model.embed_dim)] * len(self.layers)
        self.model = model.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> Features:
        attn = self.model.blocks[-1].attn
        with _InputCapture(attn) as last:
            final, intermediates = self.model.forward_intermediates(x, indices=self.layers, output_fmt="NCHW")
        attention = cls_patch_attention(last.input, attn.qkv.weight, attn.qkv.bias, attn.num_heads,
                                        self.model.num_prefix_tokens, attn.q_norm, attn.k_norm)
        return Features(list(intermediates), F.normalize(final[:, 0].float(), dim=-1), attention)


class TimmCNN(Backbone):
    """timm CNN through ``features_only``; each chosen level is a stage, resampled to the finest grid."""

    def __init__(self, cfg: BackboneConfig) -> None:
        kwargs = {"features_only": True, "out_indices": tuple(cfg.layers or DEFAULT_CNN_LEVELS)}
        if cfg.pad_type is not None:
            kwargs["pad_type"] = cfg.pad_type
        model = create_timm_model(cfg.name, **kwargs)  # out_indices checked by build_backbone first
        cfg_mean = model.pretrained_cfg.get("mean", (0.485, 0.456, 0.406))
        cfg_std = model.pretrained_cfg.get("std", (0.229, 0.224, 0.225))
        super().__init__(cfg, cfg_mean, cfg_std)
        state = configured_weights(cfg)
        if state is not None:
            load_weights_strict(model, state, cfg.weights or "", allow_unused=True)
        self.grid, self.layers = cnn_stages(cfg, [level["reduction"] for level in model.feature_info.info])
        self.stage_dims = [int(c) for c in model.feature_info.channels()]
        self.model = model.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> Features:
        levels = self.model(x)
        stages = [
            lvl if lvl.shape[-1] == self.grid
            else F.interpolate(lvl, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
            for lvl in levels
        ]
        embedding = F.normalize(levels[-1].float().mean(dim=(2, 3)), dim=-1)
        return Features(stages, embedding)


_FAMILIES: dict[str, type[Backbone]] = {"open_clip": OpenClipViT, "timm_vit": TimmViT, "timm_cnn": TimmCNN}


def build_backbone(cfg: BackboneConfig, storage_options: dict[str, Any] | None = None) -> Backbone:
    """Build, load and move to its device the backbone that ``cfg`` describes; remote weights are
    fetched with ``storage_options``. Layers and image size are checked against the architecture first."""
    check_backbone(cfg)
    fetch_weights(cfg, storage_options)
    backbone = _FAMILIES[cfg.family](cfg)
    return backbone.to(resolve_device(cfg.device))
