"""SNAMD: Similar Neighbourhood Aggregation with Multiple Degrees (MuSc-V2, TPAMI 2026).

LNAMD scores every degree r in its own mutual-scoring pass. SNAMD fuses the degrees into one token
per patch, so a stage costs one pass: each patch becomes the mean over the degrees r of the weighted
mean of its r x r neighbourhood, with weights exp(-||x_n - x_c|| / T) that favour neighbours like the
centre (a window that reaches over an edge blurs the patch less than LNAMD's plain mean), then the
token is L2-normalised.

As the published code (HUST-SLOW/MuSc-V2, ``models/modules/_SNAMD.py``): stride 1, zero padding; a
padded zero is a neighbour at distance ||x_c|| whose weight counts in the denominator and whose value
adds nothing; degrees are averaged after each is normalised by its own weight sum; L2 normalisation
last. Ours: the stage is first layer-normalised over (C, H, W) without affine parameters, as LNAMD does
(the published code gets ViT tokens that the backbone's own norm has scaled; CNN stages are raw), and
distances are divided by a temperature T (the published formula is T = 1, see ``resolve_temperature``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Working memory of one chunk of images (a few (n, C, H, W) fp32 temporaries): a 64 x 64 grid of 1024
# channels is 16 MiB per image, so 200 images are aggregated a handful at a time.
CHUNK_BYTES = 256 * 2**20


def _offsets(half: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-half, half + 1) for dx in range(-half, half + 1)]


def _shifted(padded: torch.Tensor, half: int, dy: int, dx: int) -> torch.Tensor:
    """The grid moved so that position p holds its neighbour p + (dy, dx) (a view of the zero-padded grid)."""
    h, w = padded.shape[-2] - 2 * half, padded.shape[-1] - 2 * half
    return padded[:, :, half + dy:half + dy + h, half + dx:half + dx + w]


def _neighbour_distances(x: torch.Tensor, half: int) -> torch.Tensor:
    """||x_{p+o} - x_p|| for every offset o of the (2 half + 1)^2 window, zeros outside the grid:
    (offsets, n, H, W)."""
    padded = F.pad(x, (half, half, half, half))
    return torch.stack([torch.linalg.vector_norm(_shifted(padded, half, dy, dx) - x, dim=1)
                        for dy, dx in _offsets(half)])


def _inside(half: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(offsets, 1, H, W) True where the neighbour at that offset lies on the grid, not in the padding."""
    rows, cols = torch.arange(h, device=device).view(h, 1), torch.arange(w, device=device).view(1, w)
    return torch.stack([((rows + dy >= 0) & (rows + dy < h) & (cols + dx >= 0) & (cols + dx < w)).unsqueeze(0)
                        for dy, dx in _offsets(half)])


def resolve_temperature(temperature: float | str, distances: torch.Tensor, inside: torch.Tensor) -> float:
    """T for one stage of a batch. A number is used as given (1.0: the published exp(-distance)).
    'auto': the median distance between a patch and its on-grid neighbours over the batch, so that a
    neighbour as different as a typical one gets 1/e of the centre's weight, whatever the backbone's
    width and smoothness (a fixed T = 1 gives the centre all the weight on wide ViT stages).
    ``distances`` (offsets, N, H, W); ``inside`` (offsets, 1, H, W) marks the on-grid neighbours."""
    if temperature != "auto":
        if isinstance(temperature, str) or temperature <= 0:
            raise ValueError(f"SNAMD temperature must be a positive number or 'auto', got {temperature!r}")
        return float(temperature)
    neighbours = inside.clone()
    neighbours[distances.shape[0] // 2] = False  # the centre itself
    kept = distances[neighbours.expand_as(distances)]
    median = float(kept.median()) if kept.numel() else 0.0
    return median if median > 0 else 1.0  # no neighbours (degree 1 only) or all alike: T does not matter


def snamd(stage: torch.Tensor, degrees: Sequence[int], temperature: float | str = "auto",
          chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """Fuse one stage's feature grid (N, C, H, W) over ``degrees`` -> unit tokens (N, H*W, C), fp32.

    Computed per window offset on whole images (no loop over patches), ``chunk_bytes`` of images at a
    time: the neighbour distances of every offset (kept for the whole batch: 'auto' needs them all
    before any weight), then per chunk each offset's weight, per degree the weight sum over its window,
    and one weighted sum of shifted grids with each offset's coefficient mean_r [o in r] w_o / sum_r.
    """
    if stage.ndim != 4:
        raise ValueError(f"expected a feature grid (N, C, H, W), got shape {tuple(stage.shape)}")
    if not degrees or any(r < 1 or r % 2 == 0 for r in degrees):
        raise ValueError(f"aggregation degrees must be odd positive integers, got {list(degrees)}")
    n, c, h, w = stage.shape
    half = max(degrees) // 2
    offsets = _offsets(half)
    step = max(1, chunk_bytes // (4 * c * h * w * 4))  # four fp32 grids of the chunk live at once
    chunks = [slice(start, start + step) for start in range(0, n, step)]
    normed = lambda part: F.layer_norm(stage[part].float(), (c, h, w))
    distances = torch.cat([_neighbour_distances(normed(part), half) for part in chunks], dim=1)
    t = resolve_temperature(temperature, distances, _inside(half, h, w, stage.device))
    # offset o is in degree r's window when both |dy| and |dx| are at most r // 2
    member = torch.tensor([[max(abs(dy), abs(dx)) <= r // 2 for dy, dx in offsets] for r in degrees],
                          dtype=torch.float32, device=stage.device)  # (degrees, offsets)
    out = torch.empty(n, h * w, c, device=stage.device)
    for part in chunks:
        x = normed(part)
        weights = torch.exp(distances[:, part] / -t)  # (offsets, n, H, W)
        sums = torch.einsum("ro,onhw->rnhw", member, weights)  # per degree: its window's weight sum
        coefficients = weights * torch.einsum("ro,rnhw->onhw", member, 1.0 / sums) / len(degrees)
        padded = F.pad(x, (half, half, half, half))
        fused = torch.zeros_like(x)
        for (dy, dx), coefficient in zip(offsets, coefficients):
            fused.addcmul_(_shifted(padded, half, dy, dx), coefficient.unsqueeze(1))
        out[part] = F.normalize(fused.flatten(2).transpose(1, 2), dim=-1)
    return out
