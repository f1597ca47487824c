"""Which stages a backbone config asks for, checked against the network's architecture.

``backbone.layers`` and ``backbone.image_size`` only make sense for a given network: a block index past
a ViT's depth, a feature level a CNN does not have, an image size its patches do not divide. The
architecture is known without weights (timm networks built on PyTorch's meta device, which allocates
nothing; open_clip's model config), so every program checks these before any work (``check_backbone``)
and fails in one line naming the key, instead of failing in every extraction actor once Ray runs.
The backbones derive their stages from the same functions.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from ..settings import BackboneConfig

DEFAULT_CNN_LEVELS = [1, 2]  # timm out_indices: strides 4 and 8 on most timm CNNs


class BackboneError(UserError, ValueError):
    """A backbone setting does not fit the network (layers, image size) or names no known network."""


def evenly_divided_stages(depth: int, num_stages: int = 4) -> list[int]:
    """0-based block indices that end ``num_stages`` equal stages (24 blocks -> [5, 11, 17, 23])."""
    if depth % num_stages:
        raise ValueError(f"{depth} blocks cannot be divided into {num_stages} equal stages; set backbone.layers")
    step = depth // num_stages
    return [step * (i + 1) - 1 for i in range(num_stages)]


def vit_stages(cfg: BackboneConfig, depth: int, patch: int, key: str = "backbone") -> tuple[int, list[int]]:
    """A ViT's patch grid side and the blocks whose tokens are the stages."""
    if cfg.image_size % patch:
        raise BackboneError(f"{key}.image_size {cfg.image_size} is not a multiple of {cfg.name}'s patch size "
                            f"{patch}; use e.g. {cfg.image_size // patch * patch or patch}")
    try:
        layers = cfg.layers or evenly_divided_stages(depth)
    except ValueError:
        raise BackboneError(f"{key}.layers: {cfg.name}'s {depth} blocks cannot be divided into 4 equal stages; "
                            f"set {key}.layers to block indices 0-{depth - 1}") from None
    if max(layers) >= depth:
        raise BackboneError(f"{key}.layers {layers} out of range: {cfg.name} has {depth} blocks (0-{depth - 1})")
    return cfg.image_size // patch, layers


def cnn_stages(cfg: BackboneConfig, reductions: list[int], key: str = "backbone") -> tuple[int, list[int]]:
    """A CNN's grid side (its finest chosen level) and its chosen feature levels; ``reductions`` are the
    strides of every level the network has."""
    layers = cfg.layers or DEFAULT_CNN_LEVELS
    if max(layers) >= len(reductions):
        raise BackboneError(f"{key}.layers {layers} out of range: {cfg.name} has {len(reductions)} feature "
                            f"levels (0-{len(reductions) - 1}, strides {reductions})")
    finest = min(reductions[i] for i in layers)
    if cfg.image_size // finest < 2:
        raise BackboneError(f"{key}.image_size {cfg.image_size} is too small for {cfg.name}'s stride {finest} "
                            f"at levels {layers}: the feature grid would be under 2x2")
    return cfg.image_size // finest, layers


def create_timm_model(name: str, **kwargs) -> torch.nn.Module:
    """A timm model with random weights (weights are loaded by us, never from a hub)."""
    import timm

    if not timm.is_model(name.split(".")[0]):
        raise BackboneError(f"unknown timm model '{name}'")
    return timm.create_model(name, pretrained=False, **kwargs)


def _check_open_clip(cfg: BackboneConfig, key: str) -> None:
    import open_clip

    config = open_clip.get_model_config(cfg.name)
    if config is None and ":" not in cfg.name:  # hf-hub:org/model and local-dir:path are resolved when built
        raise BackboneError(f"unknown open_clip model '{cfg.name}'")
    vision = (config or {}).get("vision_cfg", {})
    depth, patch = vision.get("layers"), vision.get("patch_size")
    if isinstance(depth, int) and isinstance(patch, int):  # a timm tower or a hub config is checked when built
        vit_stages(cfg, depth, patch, key)
    elif depth is not None:
        raise BackboneError(f"{key}.name: open_clip model '{cfg.name}' is not a ViT (family open_clip takes CLIP "
                            "ViTs such as ViT-B-16)")


def _check_timm_vit(cfg: BackboneConfig, key: str) -> None:
    with torch.device("meta"):
        model = create_timm_model(cfg.name, num_classes=0)
    vit_stages(cfg, len(model.blocks), model.patch_embed.patch_size[0], key)


def _check_timm_cnn(cfg: BackboneConfig, key: str) -> None:
    kwargs = {} if cfg.pad_type is None else {"pad_type": cfg.pad_type}
    with torch.device("meta"):
        model = create_timm_model(cfg.name, features_only=True, **kwargs)
    cnn_stages(cfg, [level["reduction"] for level in model.feature_info.info], key)


_CHECKS = {"open_clip": _check_open_clip, "timm_vit": _check_timm_vit, "timm_cnn": _check_timm_cnn}


def check_backbone(cfg: BackboneConfig, key: str = "backbone") -> None:
    """Refuse, in one line naming ``key`` (the config section), layers or an image size the network
    cannot give, or a network its family does not know; builds nothing with weights."""
    try:
        _CHECKS[cfg.family](cfg, key)
    except BackboneError as err:
        raise BackboneError(err if str(err).startswith(key) else f"{key}.name: {err}") from None
