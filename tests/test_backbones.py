"""Backbones: stage taps, position-embedding resizing, weight loading and its refusals."""

import dataclasses
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.engine.backbones import build_backbone
from pipeline.engine.stages import evenly_divided_stages
from pipeline.engine.weights import WeightsError, read_state_dict
from pipeline.settings import BackboneConfig


def images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_evenly_divided_stages():
    assert evenly_divided_stages(24) == [5, 11, 17, 23]
    assert evenly_divided_stages(12) == [2, 5, 8, 11]
    with pytest.raises(ValueError, match="equal stages"):
        evenly_divided_stages(10)


def test_no_weights_refuses_with_instructions():
    with pytest.raises(WeightsError, match="hub downloads are unavailable.*backbone.weights.*random_init"):
        build_backbone(BackboneConfig(family="timm_vit", name="vit_small_patch16_224"))


def test_weights_and_random_init_are_exclusive(tmp_path):
    with pytest.raises(WeightsError, match="mutually exclusive"):
        build_backbone(BackboneConfig(family="timm_vit", name="vit_small_patch16_224",
                                      weights=str(tmp_path / "w.safetensors"), random_init=True))


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "none.safetensors"
    with pytest.raises(FileNotFoundError, match="none.safetensors"):
        build_backbone(BackboneConfig(family="timm_vit", name="vit_small_patch16_224", weights=str(missing)))


def test_open_clip_vit_at_non_native_size_with_interpolated_positions():
    torch.manual_seed(0)
    cfg = BackboneConfig(family="open_clip", name="ViT-B-16", random_init=True, image_size=160)
    backbone = build_backbone(cfg)
    assert "RANDOM INIT" in backbone.description
    assert backbone.layers == [2, 5, 8, 11]
    assert backbone.visual.positional_embedding.shape == (1 + 10 * 10, 768)
    feats = backbone.extract(images(2, 160))
    assert [tuple(s.shape) for s in feats.stages] == [(2, 768, 10, 10)] * 4
    assert torch.allclose(feats.embedding.norm(dim=-1), torch.ones(2), atol=1e-5)
    # the last stage equals the transformer's own output tokens: taps are at block ends
    x = backbone.preprocess(images(2, 160))
    with torch.inference_mode():
        tokens = backbone.visual.transformer(backbone.visual._embeds(x))
    assert torch.allclose(feats.stages[-1].flatten(2).transpose(1, 2), tokens[:, 1:], atol=1e-4)


def test_open_clip_rejects_size_not_multiple_of_patch():
    with pytest.raises(ValueError, match="multiple of"):
        build_backbone(BackboneConfig(family="open_clip", name="ViT-B-16", random_init=True, image_size=100))


def test_timm_vit_weights_round_trip_and_mismatch(tmp_path):
    torch.manual_seed(0)
    cfg = BackboneConfig(family="timm_vit", name="vit_small_patch16_224", random_init=True, image_size=224)
    source = build_backbone(cfg)
    path = tmp_path / "vit_s16.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    loaded = build_backbone(BackboneConfig(family="timm_vit", name="vit_small_patch16_224", weights=str(path),
                                           image_size=112))
    assert not loaded.random_init and "RANDOM" not in loaded.description
    batch = images(2, 112)
    # same weights at a new size: the loaded model equals the source resized the same way
    source.model.set_input_size(img_size=(112, 112))
    source.image_size = 112
    a, b = source.extract(batch), loaded.extract(batch)
    for sa, sb in zip(a.stages, b.stages):
        assert torch.allclose(sa, sb, atol=1e-5)
    assert [tuple(s.shape) for s in b.stages] == [(2, 384, 7, 7)] * 4
    with pytest.raises(WeightsError, match="shape mismatches"):
        build_backbone(BackboneConfig(family="timm_vit", name="vit_base_patch16_224", weights=str(path)))


def test_torch_checkpoint_is_read_without_unpickling_objects(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    assert torch.equal(read_state_dict(path)["w"], torch.ones(2))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pth"
    torch.save({"w": Evil()}, bad)
    with pytest.raises(WeightsError, match="cannot read weights file"):
        read_state_dict(bad)


def test_cuda_request_without_gpu_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        build_backbone(BackboneConfig(family="timm_cnn", name="resnet18", random_init=True, device="cuda"))


def test_timm_cnn_levels_resampled_to_finest_grid():
    cfg = BackboneConfig(family="timm_cnn", name="resnet18", random_init=True, image_size=128, layers=[1, 2, 3])
    feats = build_backbone(cfg).extract(images(2, 128))
    assert [tuple(s.shape) for s in feats.stages] == [(2, 64, 32, 32), (2, 128, 32, 32), (2, 256, 32, 32)]
    assert feats.embedding.shape == (2, 256)


def test_timm_cnn_real_weights_load_strictly(mobilenet_weights, tmp_path):
    cfg = BackboneConfig(family="timm_cnn", name="mobilenetv2_100", weights=str(mobilenet_weights), pad_type="same",
                         mean=[0.5] * 3, std=[0.5] * 3, layers=[2, 3], image_size=256)
    backbone = build_backbone(cfg)
    feats = backbone.extract(images(2, 256))
    assert [tuple(s.shape) for s in feats.stages] == [(2, 32, 32, 32), (2, 96, 32, 32)]
    assert torch.allclose(feats.embedding.norm(dim=-1), torch.ones(2), atol=1e-5)
    # a checkpoint of another architecture fails with a clear message
    with pytest.raises(WeightsError, match="do not fit"):
        build_backbone(BackboneConfig(family="timm_cnn", name="resnet18", weights=str(mobilenet_weights)))


@pytest.mark.parametrize("family, name", [("open_clip", "ViT-B-16"), ("timm_cnn", "resnet18")])
def test_bf16_on_cpu_runs_the_network_in_bf16_close_to_fp32(family, name):
    """CPU bf16 casts the network (autocast there is several times slower than fp32) and keeps the
    features within 3% of fp32's; the normalisation constants stay fp32."""
    cfg = BackboneConfig(family=family, name=name, random_init=True, image_size=64, device="cpu")
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    exact = backbone.extract(images(2, 64))
    backbone.cfg = dataclasses.replace(cfg, precision="bf16")
    reduced = backbone.extract(images(2, 64))
    assert {p.dtype for p in backbone.parameters()} == {torch.bfloat16}
    assert backbone.mean.dtype == backbone.std.dtype == torch.float32
    for got, want in zip([*reduced.stages, reduced.embedding], [*exact.stages, exact.embedding]):
        assert got.dtype == torch.float32
        assert 0 < (got - want).norm() / want.norm() < 0.03


@pytest.mark.parametrize("family", ["open_clip", "timm_vit", "timm_cnn"])
def test_unknown_model_name_is_named(family):
    with pytest.raises(ValueError, match="unknown .*no-such-net"):
        build_backbone(BackboneConfig(family=family, name="no-such-net", random_init=True))


@pytest.mark.parametrize("family, name, changes, says", [
    ("timm_cnn", "convnext_tiny", {"layers": [1, 4]}, "backbone.layers [1, 4] out of range: convnext_tiny has 4 "
                                                      "feature levels (0-3, strides [4, 8, 16, 32])"),
    ("timm_cnn", "resnet18", {"layers": [4], "image_size": 32}, "image_size 32 is too small for resnet18's stride 32"),
    ("timm_vit", "vit_tiny_patch16_224", {"layers": [2, 12]}, "layers [2, 12] out of range: vit_tiny_patch16_224 "
                                                              "has 12 blocks (0-11)"),
    ("timm_vit", "vit_tiny_patch16_224", {"image_size": 100}, "image_size 100 is not a multiple of "
                                                              "vit_tiny_patch16_224's patch size 16; use e.g. 96"),
    ("open_clip", "ViT-B-16", {"layers": [11, 12]}, "backbone.layers [11, 12] out of range: ViT-B-16 has 12 blocks"),
    ("open_clip", "RN50", {}, "backbone.name: open_clip model 'RN50' is not a ViT"),
    ("open_clip", "no-such-net", {}, "backbone.name: unknown open_clip model 'no-such-net'"),
    ("timm_vit", "no-such-net", {}, "backbone.name: unknown timm model 'no-such-net'"),
])
def test_layers_and_image_size_are_checked_against_the_network_without_weights(family, name, changes, says):
    """backbone.layers=[9] on a 4-level CNN passed every check and failed in each extraction actor."""
    from pipeline.engine.stages import BackboneError, check_backbone

    cfg = BackboneConfig(family=family, name=name, random_init=True, **changes)
    with pytest.raises(BackboneError, match=re.escape(says)):
        check_backbone(cfg)
    with pytest.raises(BackboneError, match=re.escape(says)):  # the backbone itself says the same
        build_backbone(cfg)


def test_backbones_that_fit_pass_the_check():
    from pipeline.engine.stages import check_backbone

    for family, name, changes in (("timm_cnn", "convnext_tiny", {"layers": [0, 3]}), ("timm_cnn", "resnet18", {}),
                                  ("timm_vit", "vit_tiny_patch16_224", {"layers": [11], "image_size": 96}),
                                  ("open_clip", "ViT-L-14-336", {"image_size": 518})):
        check_backbone(BackboneConfig(family=family, name=name, random_init=True, **changes))
