"""Foreground masks: the CLS attention against torch's own attention weights, the mask rule on a map
with a known background, and the effect on MuSc and PatchEAD patch scores."""

import numpy as np
import pytest
import torch

from pipeline.engine.backbones import build_backbone, cls_patch_attention
from pipeline.engine.features import Features
from pipeline.engine.foreground import foreground_weights
from pipeline.engine.musc import score_features
from pipeline.engine.patchead import score_patchead
from pipeline.settings import (
    BackboneConfig,
    ForegroundConfig,
    MuscConfig,
    PatchEADConfig,
)


def test_cls_attention_equals_torch_multihead_attention_weights():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.randn(2, 1 + 9, 16)
    _, weights = mha(x, x, x, need_weights=True, average_attn_weights=True)  # (B, N, N), heads averaged
    ours = cls_patch_attention(x, mha.in_proj_weight, mha.in_proj_bias, 4, prefix_tokens=1)
    assert torch.allclose(ours, weights[:, 0, 1:].reshape(2, 3, 3), atol=1e-6)


def test_vit_backbones_return_attention_on_the_patch_grid_and_cnns_none():
    images = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    # the paper's two backbones among them: DINOv2 ViT-B/14 with 4 registers (5 prefix tokens dropped)
    # and CLIP ViT-B/16+ at 240's patch size
    for family, name, size in (("timm_vit", "vit_tiny_patch16_224", 64), ("open_clip", "ViT-B-16", 64),
                               ("timm_vit", "vit_base_patch14_reg4_dinov2", 56), ("open_clip", "ViT-B-16-plus-240", 64)):
        backbone = build_backbone(BackboneConfig(family=family, name=name, random_init=True, image_size=size))
        feats = backbone.extract(np.ascontiguousarray(images[:, :size, :size]))
        assert feats.attention.shape == (2, 4, 4) and torch.all(feats.attention > 0)
        assert all(s.shape[-2:] == (4, 4) for s in feats.stages)
        assert torch.all(feats.attention.sum(dim=(1, 2)) <= 1.0 + 1e-5)  # softmax mass on the patches
    cnn = build_backbone(BackboneConfig(family="timm_cnn", name="resnet18", random_init=True, image_size=64))
    assert cnn.extract(images).attention is None


def test_mask_rule_on_a_map_with_a_known_background():
    attention = torch.full((1, 4, 4), 0.010)
    attention[0, 1:3, 1:3] = 0.200  # the object in the middle, background around it
    attention[0, 0, 0] = 0.0105  # background noise stays below the 5% threshold
    weights = foreground_weights(attention, threshold=0.05, background_weight=0.5)
    expected = torch.full((1, 4, 4), 0.5)
    expected[0, 1:3, 1:3] = 1.0
    assert torch.equal(weights, expected)
    assert torch.equal(foreground_weights(torch.ones(1, 2, 2)), torch.ones(1, 2, 2))  # flat: all foreground


@pytest.mark.parametrize("scorer", ["musc", "patchead"])
def test_scorers_weight_background_patches(scorer):
    torch.manual_seed(0)
    attention = torch.rand(6, 3, 3)
    feats = Features([torch.randn(6, 8, 3, 3)], torch.nn.functional.normalize(torch.randn(6, 4), dim=1), attention)
    on = ForegroundConfig(enabled=True, threshold=0.3, background_weight=0.5)
    if scorer == "musc":
        run = lambda fg: score_features(feats, MuscConfig(aggregation_degrees=[1], rscin_windows=None, foreground=fg))
    else:
        run = lambda fg: score_patchead(feats, PatchEADConfig(foreground=fg))
    plain, masked = run(ForegroundConfig()), run(on)
    assert torch.allclose(masked.patch_scores, plain.patch_scores * foreground_weights(attention, 0.3, 0.5))
    no_attention = Features(feats.stages, feats.embedding)
    with pytest.raises(ValueError, match="needs a ViT backbone"):
        score_patchead(no_attention, PatchEADConfig(foreground=on))
