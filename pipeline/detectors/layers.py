"""Transformer pieces of the reconstruction decoders: attention (softmax or linear), blocks, bottleneck."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = ELU(x) + 1: a positive kernel feature map, so attention weights stay positive."""
    return F.elu(x) + 1.0


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Linear attention (Katharopoulos et al.; Dinomaly's decoder mixer), (B, H, L, d) inputs.

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j)). The key-value summary is
    computed once, so the cost is O(L d^2) instead of O(L^2 d); and because no softmax sharpens the
    weights, a query cannot simply copy its own key (the "identity shortcut" Dinomaly avoids).
    """
    q, k = elu_feature_map(q), elu_feature_map(k)
    kv = torch.einsum("bhld,bhle->bhde", k, v)
    normaliser = torch.einsum("bhld,bhd->bhl", q, k.sum(dim=2)).clamp_min(eps)
    return torch.einsum("bhld,bhde->bhle", q, kv) / normaliser.unsqueeze(-1)


class Attention(nn.Module):
    """Multi-head self-attention over tokens (B, L, C), softmax or linear."""

    def __init__(self, dim: int, heads: int, kind: str = "softmax") -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {heads} heads")
        if kind not in ("softmax", "linear"):
            raise ValueError(f"attention kind must be 'softmax' or 'linear', got {kind!r}")
        self.heads, self.kind = heads, kind
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, c = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v) if self.kind == "softmax" else linear_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, length, c))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, attention: str = "softmax", mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, attention)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class NoisyBottleneck(nn.Module):
    """Dinomaly's bottleneck: an MLP whose dropout is the noise that keeps the decoder from learning
    an identity map (it must restore normal features from corrupted ones, and so cannot restore
    anomalous ones it never saw)."""

    def __init__(self, dim: int, dropout: float, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
