"""Backbones: stage taps, position-embedding resizing, weight loading and its refusals."""

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.engine.backbones import build_backbone, evenly_divided_stages
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
