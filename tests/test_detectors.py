"""ViTAD and Dinomaly: building blocks against their definitions, training on generated data, checkpoints."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.data.synthetic import generate_dataset
from pipeline.detectors.checkpoint import load_checkpoint, save_checkpoint
from pipeline.detectors.layers import Attention, linear_attention
from pipeline.detectors.losses import (
    anomaly_map,
    cosine_distance_map,
    hard_mining_weights,
    max_of_average_pooled,
    mean_of_top_fraction,
    reconstruction_loss,
)
from pipeline.detectors.optim import StableAdamW, step_schedule, warmup_cosine_schedule
from pipeline.detectors.registry import build_detector
from pipeline.detectors.training import evaluate_detector, load_split, train_detector
from pipeline.settings import DetectorConfig, config_from_dict

TINY = {"name": "vit_tiny_patch16_224", "image_size": 64, "random_init": True}


def detector_config(kind: str, iterations: int = 60) -> DetectorConfig:
    section = {"encoder": dict(TINY)}
    if kind == "dinomaly":
        section.update(encoder={**TINY, "layers": list(range(2, 10))}, resize=None)
    return config_from_dict(DetectorConfig, {"kind": kind, kind: section,
                                             "training": {"iterations": iterations, "batch_size": 8,
                                                          "gaussian_sigma": 1.0}})


# ---- building blocks ----

def test_linear_attention_equals_its_formula():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 6)
    phi = lambda x: torch.where(x > 0, x + 1, torch.exp(x))  # ELU(x) + 1
    expected = torch.zeros(2, 3, 5, 6)
    for b in range(2):
        for h in range(3):
            for i in range(5):
                weights = torch.stack([phi(q[b, h, i]) @ phi(k[b, h, j]) for j in range(5)])
                expected[b, h, i] = (weights[:, None] * v[b, h]).sum(0) / weights.sum()
    assert torch.allclose(linear_attention(q, k, v), expected, atol=1e-5)


def test_attention_module_kinds_match_manual_computation():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 8)
    for kind in ("softmax", "linear"):
        attn = Attention(8, heads=2, kind=kind)
        q, k, v = attn.qkv(x).view(2, 7, 3, 2, 4).permute(2, 0, 3, 1, 4)
        if kind == "softmax":
            mixed = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) @ v
        else:
            mixed = linear_attention(q, k, v)
        expected = attn.proj(mixed.transpose(1, 2).reshape(2, 7, 8))
        assert torch.allclose(attn(x), expected, atol=1e-5), kind
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, heads=3)


def test_hard_mining_keeps_the_hardest_points_and_scales_only_the_gradient():
    distance = torch.tensor([[[0.1, 0.5], [0.3, 0.9]]])
    weights = hard_mining_weights(distance, discard_rate=0.5, easy_weight=0.1)
    expected = torch.tensor([[0.1, 1.0], [0.1, 1.0]])  # the 2 largest of 4 keep full weight
    assert torch.allclose(weights.squeeze(), expected)
    assert hard_mining_weights(distance, 0.0, 0.1).min() == 1.0  # no discarding at the start of training

    torch.manual_seed(0)
    enc = torch.randn(2, 6, 3, 3)
    dec_flat = torch.randn(2, 6, 3, 3, requires_grad=True)
    dec_hm = dec_flat.detach().clone().requires_grad_(True)
    flat = reconstruction_loss([enc], [dec_flat], "flat")
    hm = reconstruction_loss([enc], [dec_hm], "global_hm", discard_rate=0.7, easy_weight=0.1)
    assert torch.allclose(flat, hm)  # same loss value: hard mining only rescales gradients
    flat.backward()
    hm.backward()
    w = hard_mining_weights(cosine_distance_map(enc, dec_flat.detach()), 0.7, 0.1)
    assert torch.allclose(dec_hm.grad, dec_flat.grad * w, atol=1e-7)
    assert (w == 1.0).sum() == round(18 * 0.3)


def test_loss_values_on_hand_cases():
    e = torch.zeros(1, 2, 1, 2)
    e[0, 0, 0, :] = 1.0  # both points (1, 0)
    d = torch.zeros(1, 2, 1, 2)
    d[0, 0, 0, 0] = 1.0  # point 0 identical
    d[0, 1, 0, 1] = 1.0  # point 1 orthogonal: (0, 1)
    assert cosine_distance_map(e, d).tolist() == [[[0.0, 1.0]]]
    assert reconstruction_loss([e], [d], "pointwise").item() == pytest.approx(0.5)
    # flattened: e = (1, 1, 0, 0), d = (1, 0, 0, 1) -> cos = 1 / 2
    assert reconstruction_loss([e], [d], "flat").item() == pytest.approx(0.5)
    assert reconstruction_loss([e, e], [d, e], "pointwise").item() == pytest.approx(0.25)  # mean over pairs
    with pytest.raises(ValueError, match="loss variant"):
        reconstruction_loss([e], [d], "l2")


def test_maps_and_image_scores():
    e = [torch.randn(2, 4, 2, 2) for _ in range(2)]
    d = [torch.randn(2, 4, 2, 2) for _ in range(2)]
    per_pair = [F.interpolate(cosine_distance_map(a, b)[:, None], size=(8, 8), mode="bilinear",
                              align_corners=False)[:, 0] for a, b in zip(e, d)]
    assert torch.allclose(anomaly_map(e, d, 8, "sum"), per_pair[0] + per_pair[1])
    assert torch.allclose(anomaly_map(e, d, 8, "mean"), (per_pair[0] + per_pair[1]) / 2)

    maps = torch.zeros(1, 4, 4)
    maps[0, 0, 0] = 1.0
    maps[0, 3, 3] = 4.0
    assert max_of_average_pooled(maps, 2).item() == pytest.approx(1.0)  # the 2x2 window holding the 4
    assert max_of_average_pooled(maps, 1).item() == pytest.approx(4.0)
    assert mean_of_top_fraction(maps, 2 / 16).item() == pytest.approx(2.5)  # mean of {4, 1}
    assert mean_of_top_fraction(maps, 0.001).item() == pytest.approx(4.0)  # at least one pixel


def test_stable_adamw_is_amsgrad_adamw_without_spikes_and_clips_a_spike():
    torch.manual_seed(0)
    p_ours = torch.nn.Parameter(torch.randn(5))
    p_ref = torch.nn.Parameter(p_ours.detach().clone())
    ours = StableAdamW([p_ours], lr=0.01, weight_decay=0.1, amsgrad=True)
    ref = torch.optim.AdamW([p_ref], lr=0.01, weight_decay=0.1, amsgrad=True)
    grad = torch.randn(5)
    for _ in range(5):  # a steady gradient: g^2 equals its running average, no clipping
        for p, opt in ((p_ours, ours), (p_ref, ref)):
            p.grad = grad.clone()
            opt.step()
    assert torch.allclose(p_ours, p_ref, atol=1e-6)
    before_ours, before_ref = p_ours.detach().clone(), p_ref.detach().clone()
    for p, opt in ((p_ours, ours), (p_ref, ref)):
        p.grad = grad * 1000.0  # a loss spike
        opt.step()
    assert (p_ours - before_ours).norm() < 0.5 * (p_ref - before_ref).norm()


def test_schedules():
    step = step_schedule(100, 0.8)
    assert [step(i) for i in (0, 79, 80, 99)] == [1.0, 1.0, 0.1, 0.1]
    cosine = warmup_cosine_schedule(1000, 0.01, 0.1)
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(999) == pytest.approx(0.1) and 0.1 < cosine(500) < 1.0
    assert cosine(10 + (999 - 10) // 2) == pytest.approx(0.55, abs=1e-3)  # half-way down the cosine


def test_dinomaly_hard_mining_rate_ramps_up():
    det = build_detector(detector_config("dinomaly"))
    rate = det.discard_rate
    assert rate(0.0) == 0.0 and rate(0.05) == pytest.approx(0.45) and rate(0.1) == rate(0.9) == pytest.approx(0.9)


# ---- training on generated data ----

@pytest.fixture(scope="module")
def product_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("products")
    generate_dataset(str(root), categories=["weave", "disc"], n_train=16, n_test_good=6, n_test_defect=6,
                     image_size=64)
    train = load_split(str(root), "mvtec", ["weave", "disc"], "train", 64, normal_only=True)
    test = load_split(str(root), "mvtec", ["weave", "disc"], "test", 64)
    return train, test


@pytest.mark.parametrize("kind", ["vitad", "dinomaly"])
def test_training_lowers_the_loss_and_separates_defects_better_than_untrained(kind, product_data):
    train, test = product_data
    cfg = detector_config(kind, iterations=60)
    det = build_detector(cfg)
    before = evaluate_detector(det, test, 8, torch.device("cpu"))["mean"]
    reports = []
    result = train_detector(det, train, cfg, validation=test, device="cpu", report=reports.append)
    after = result.evaluations[-1]
    assert len(reports) == 60 and reports[-1]["image_auroc"] == after["image_auroc"]
    assert np.mean(result.losses[-5:]) < 0.5 * np.mean(result.losses[:5])
    # measured: ViTAD mAD 0.35 -> 0.80, image AUROC 0.58 -> 0.97; Dinomaly mAD 0.49 -> 0.79
    assert after["mad"] > before["mad"] + 0.15
    assert after["image_auroc"] >= before["image_auroc"] and after["pixel_auroc"] > before["pixel_auroc"] + 0.2
    assert all(math.isfinite(v) for v in after.values())


def test_checkpoint_round_trip_locally_and_on_s3(product_data, tmp_path, s3_bucket):
    train, test = product_data
    cfg = detector_config("dinomaly", iterations=5)
    det = build_detector(cfg)
    train_detector(det, train, cfg, device="cpu")
    x = det.preprocess(test.images[:4])
    maps, scores = det.predict(x)
    for uri in (str(tmp_path / "ckpt"), f"s3://{s3_bucket}/sweeps/best"):
        save_checkpoint(det, cfg, uri, metrics={"mad": 0.5})
        loaded, loaded_cfg, meta = load_checkpoint(uri)
        assert loaded_cfg == cfg and meta["metrics"] == {"mad": 0.5}
        loaded_maps, loaded_scores = loaded.predict(x)
        assert torch.allclose(loaded_maps, maps) and torch.allclose(loaded_scores, scores)

    # weights of another detector under this config are refused, not half-loaded
    vitad = detector_config("vitad")
    save_checkpoint(build_detector(vitad), vitad, str(tmp_path / "vitad"))
    (tmp_path / "ckpt" / "model.safetensors").write_bytes((tmp_path / "vitad" / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="does not fit a dinomaly detector"):
        load_checkpoint(str(tmp_path / "ckpt"))
