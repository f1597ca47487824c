"""SOWA's frozen window attention (FWA): value-value attention of a frozen CLIP layer inside windows.

SOWA (Hu et al.) adds after each of CLIP ViT's 4 stages an adapter that splits the patch grid into
h x w windows, applies value-value attention there with that stage's own frozen CLIP weights
(CLIP Surgery's observation: q-k attention of CLIP highlights background; v-v attention groups
semantically similar tokens), puts the windows back, and projects with one trainable linear layer
(Eq. 4). ``sowa.SOWA`` puts four of these on a frozen CLIP.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def window_partition(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/h * W/w, h*w, C): non-overlapping windows, row-major within each."""
    b, height, width, c = x.shape
    if height % h or width % w:
        raise ValueError(f"a {height}x{width} grid does not split into {h}x{w} windows")
    x = x.view(b, height // h, h, width // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h * w, c)


def window_reverse(windows: torch.Tensor, h: int, w: int, height: int, width: int) -> torch.Tensor:
    """Inverse of ``window_partition``: (B * H/h * W/w, h*w, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, height // h, width // w, h, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def value_attention(v: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, L, C) values split into heads of size d -> per head softmax(v v^T / sqrt(d)) v, (N, L, C)."""
    n, length, c = v.shape
    d = c // heads
    v = v.reshape(n, length, heads, d).transpose(1, 2)  # (N, H, L, d)
    weights = torch.softmax(v @ v.transpose(-1, -2) * d**-0.5, dim=-1)
    return (weights @ v).transpose(1, 2).reshape(n, length, c)


def vv_attention(x: torch.Tensor, v_weight: torch.Tensor, v_bias: torch.Tensor | None, heads: int) -> torch.Tensor:
    """Value-value self-attention, (N, L, C) -> (N, L, C), before the output projection.

    v = x W_v^T + b_v, split into heads of size d; per head out = softmax(v v^T / sqrt(d)) v.
    """
    return value_attention(F.linear(x, v_weight, v_bias), heads)


class FrozenWindowAttention(nn.Module):
    """One FWA adapter: windows -> frozen VV attention (+ the layer's frozen output projection) ->
    windows back -> trainable linear projection to the text-embedding width."""

    def __init__(self, clip_attention: nn.MultiheadAttention, window: tuple[int, int], out_dim: int,
                 norm: nn.Module | None = None) -> None:
        """``norm``: the layer's own pre-attention LayerNorm (frozen copy), applied to the tokens
        first, since the attention weights were trained on normalised inputs."""
        super().__init__()
        self.norm = None if norm is None else copy.deepcopy(norm).requires_grad_(False)
        c = clip_attention.embed_dim
        self.heads, self.window = clip_attention.num_heads, window
        # frozen copies of the stage's own attention weights (value part and output projection)
        self.register_buffer("v_weight", clip_attention.in_proj_weight[2 * c:].detach().clone())
        bias = clip_attention.in_proj_bias
        self.register_buffer("v_bias", None if bias is None else bias[2 * c:].detach().clone())
        self.register_buffer("out_weight", clip_attention.out_proj.weight.detach().clone())
        self.register_buffer("out_bias", clip_attention.out_proj.bias.detach().clone())
        self.project = nn.Linear(c, out_dim)

    def forward(self, tokens: torch.Tensor, side: int) -> torch.Tensor:
        """Patch tokens (B, side*side, C) -> (B, side*side, out_dim).

        The value and output projections act on each token alone, so they run on the whole grid
        (one large matrix product each) and only the attention itself runs per window; the frozen
        output projection and the trainable one are applied as their product, one matrix.
        """
        b, length, c = tokens.shape
        h, w = self.window
        if self.norm is not None:
            tokens = self.norm(tokens)
        v = F.linear(tokens, self.v_weight, self.v_bias).view(b, side, side, c)
        attended = window_reverse(value_attention(window_partition(v, h, w), self.heads), h, w, side, side)
        weight = self.project.weight @ self.out_weight
        bias = self.project.weight @ self.out_bias + self.project.bias
        return F.linear(attended.reshape(b, length, c), weight, bias)
