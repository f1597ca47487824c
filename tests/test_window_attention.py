"""SOWA building blocks against their definitions: window partition/reverse, VV attention, the
frozen window adapter, Dice and Focal losses."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.detectors.losses import dice_loss, focal_loss
from pipeline.detectors.window_attention import (
    FrozenWindowAttention,
    vv_attention,
    window_partition,
    window_reverse,
)


@pytest.mark.parametrize("shape, window", [((2, 6, 6, 4), (3, 3)), ((1, 8, 4, 3), (2, 4)), ((3, 4, 4, 5), (4, 4))])
def test_partition_and_reverse_round_trip(shape, window):
    x = torch.randn(shape)
    h, w = window
    windows = window_partition(x, h, w)
    assert windows.shape == (shape[0] * (shape[1] // h) * (shape[2] // w), h * w, shape[3])
    assert torch.equal(windows[0], x[0, :h, :w].reshape(h * w, -1))  # first window: top-left block
    if shape[2] > w:  # the next window is the block to its right
        assert torch.equal(windows[1], x[0, :h, w:2 * w].reshape(h * w, -1))
    assert torch.equal(window_reverse(windows, h, w, shape[1], shape[2]), x)
    with pytest.raises(ValueError, match="does not split"):
        window_partition(x, h + 1, w)


def test_vv_attention_equals_its_formula():
    torch.manual_seed(0)
    x, wv, bv = torch.randn(2, 5, 8), torch.randn(8, 8), torch.randn(8)
    out = vv_attention(x, wv, bv, heads=2)
    for n in range(2):
        v = x[n] @ wv.T + bv
        for head in range(2):
            vh = v[:, head * 4:(head + 1) * 4]
            expected = torch.softmax(vh @ vh.T / 2.0, dim=-1) @ vh
            assert torch.allclose(out[n, :, head * 4:(head + 1) * 4], expected, atol=1e-5)


def test_frozen_window_adapter_uses_the_frozen_weights_and_trains_only_its_projection():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    adapter = FrozenWindowAttention(mha, (2, 2), out_dim=6)
    tokens = torch.randn(1, 16, 8)
    out = adapter(tokens, side=4)
    windows = window_partition(tokens.view(1, 4, 4, 8), 2, 2)
    attended = mha.out_proj(vv_attention(windows, mha.in_proj_weight[16:], mha.in_proj_bias[16:], 2))
    expected = adapter.project(window_reverse(attended, 2, 2, 4, 4).reshape(1, 16, 8))
    assert torch.allclose(out, expected, atol=1e-6)
    assert [n for n, p in adapter.named_parameters()] == ["project.weight", "project.bias"]


def test_dice_and_focal_losses_on_hand_cases():
    mask = torch.tensor([[[1, 0], [0, 0]]])
    perfect = mask.float()
    assert dice_loss(perfect, mask).item() == pytest.approx(0.0)
    half = torch.full((1, 2, 2), 0.5)  # |P.M| = 0.5, |P| = 2, |M| = 1
    assert dice_loss(half, mask, eps=0.0).item() == pytest.approx(1 - 1.0 / 3.0)
    probs = torch.stack([1 - half, half], dim=1)
    # gamma 0: plain cross-entropy, -log 0.5 everywhere; gamma 2: scaled by (1 - 0.5)^2
    assert focal_loss(probs, mask, gamma=0.0).item() == pytest.approx(-torch.log(torch.tensor(0.5)).item())
    assert focal_loss(probs, mask, gamma=2.0).item() == pytest.approx(0.25 * 0.693147, rel=1e-5)
    logits = torch.randn(2, 2, 3, 3)
    target = torch.randint(0, 2, (2, 3, 3))
    assert focal_loss(F.softmax(logits, 1), target, gamma=0.0).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-5)
