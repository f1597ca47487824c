"""Reconstruction losses and anomaly maps shared by the detectors.

Encoder and decoder features are (B, C, h, w) grids. The point-wise cosine distance
1 - cos(e[:, :, y, x], d[:, :, y, x]) is both the anomaly map and (averaged) ViTAD's loss; the
"flat" variant compares each image's whole feature map as one vector; Dinomaly's global loss with
hard mining down-weights the gradient of points that are already well reconstructed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_VARIANTS = ("pointwise", "flat", "global_hm")


def cosine_distance_map(encoded: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) pairs -> (B, h, w) point-wise cosine distance."""
    return 1.0 - F.cosine_similarity(encoded, decoded, dim=1)


def flat_cosine_distance(encoded: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) pairs -> (B,) cosine distance between whole flattened feature maps."""
    return 1.0 - F.cosine_similarity(encoded.flatten(1), decoded.flatten(1), dim=1)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``weights`` (broadcast)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weights)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (weights,) = ctx.saved_tensors
        return grad * weights, None


def hard_mining_weights(distance: torch.Tensor, discard_rate: float, easy_weight: float) -> torch.Tensor:
    """Per-point gradient weights: 1 for the hardest (1 - discard_rate) fraction of all points of the
    batch by distance, ``easy_weight`` for the rest (Dinomaly's loose loss). (B, h, w) -> (B, 1, h, w)."""
    if not 0.0 <= discard_rate < 1.0:
        raise ValueError(f"discard_rate must be in [0, 1), got {discard_rate}")
    flat = distance.detach().flatten()
    keep = max(1, int(round(flat.numel() * (1.0 - discard_rate))))
    threshold = torch.topk(flat, keep).values[-1]
    weights = torch.where(distance.detach() >= threshold, 1.0, easy_weight)
    return weights.unsqueeze(1).to(distance.dtype)


def reconstruction_loss(encoded: list[torch.Tensor], decoded: list[torch.Tensor], variant: str,
                        discard_rate: float = 0.0, easy_weight: float = 0.1) -> torch.Tensor:
    """Mean over pairs of the chosen loss; encoder features are targets (no gradient)."""
    if variant not in LOSS_VARIANTS:
        raise ValueError(f"loss variant must be one of {LOSS_VARIANTS}, got {variant!r}")
    if len(encoded) != len(decoded) or not encoded:
        raise ValueError(f"{len(encoded)} encoder and {len(decoded)} decoder feature maps")
    total = 0.0
    for e, d in zip(encoded, decoded):
        e = e.detach()
        if variant == "pointwise":
            total = total + cosine_distance_map(e, d).mean()
        elif variant == "flat":
            total = total + flat_cosine_distance(e, d).mean()
        else:
            # the loss is the global (flat) cosine distance; hard mining only rescales gradients
            weights = hard_mining_weights(cosine_distance_map(e, d), discard_rate, easy_weight)
            total = total + flat_cosine_distance(e, _ScaleGradient.apply(d, weights)).mean()
    return total / len(encoded)


def anomaly_map(encoded: list[torch.Tensor], decoded: list[torch.Tensor], size: int, reduce: str = "sum") -> torch.Tensor:
    """Per-pair cosine-distance maps upsampled to ``size`` and summed (ViTAD) or averaged (Dinomaly)."""
    maps = [F.interpolate(cosine_distance_map(e, d).unsqueeze(1), size=(size, size), mode="bilinear",
                          align_corners=False) for e, d in zip(encoded, decoded)]
    stacked = torch.cat(maps, dim=1)
    return (stacked.sum(dim=1) if reduce == "sum" else stacked.mean(dim=1))


def max_of_average_pooled(maps: torch.Tensor, kernel: int) -> torch.Tensor:
    """ViTAD's image score: the maximum of the map after average pooling (stride 1, no padding)."""
    kernel = min(kernel, maps.shape[-1])
    return F.avg_pool2d(maps.unsqueeze(1), kernel, stride=1).flatten(1).amax(dim=1)


def mean_of_top_fraction(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Dinomaly's image score: the mean of the highest ``fraction`` of each map's pixels (at least one)."""
    flat = maps.flatten(1)
    k = max(1, int(flat.shape[1] * fraction))
    return torch.topk(flat, k, dim=1).values.mean(dim=1)


def dice_loss(anomaly_prob: torch.Tensor, mask: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - (2 |P . M| + eps) / (|P| + |M| + eps) over all pixels of the batch (SOWA, Eq. 5);
    ``eps`` keeps an all-normal batch predicted all-normal at zero loss."""
    p, m = anomaly_prob.flatten(), mask.float().flatten()
    return 1.0 - (2.0 * (p * m).sum() + eps) / (p.sum() + m.sum() + eps)


def focal_loss(probs: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0, eps: float = 1e-8) -> torch.Tensor:
    """Mean over pixels of -(1 - p_t)^gamma log p_t, where ``probs`` (B, 2, H, W) are the softmax
    [normal, anomalous] probabilities and p_t the probability of the true class (SOWA, Eq. 5)."""
    p_true = probs.gather(1, mask.long().unsqueeze(1)).squeeze(1).clamp_min(eps)
    return (-(1.0 - p_true) ** gamma * torch.log(p_true)).mean()
