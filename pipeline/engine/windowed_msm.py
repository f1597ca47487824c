"""Position-aware (windowed) mutual scoring: MuSc's Eq. 1-2 with each patch compared only with the
patches of every other image that lie within ``radius`` grid cells (Chebyshev distance) of its own
position; cells outside the grid do not exist, so edge patches have smaller windows.

For fixtured parts a patch's look-alikes sit at the same place in every image, and a normal
structure at a place where the fixture has none has no look-alike there (full matching finds one
elsewhere on the part). It costs (2r+1)^2 / M of full matching's products.

The kernel keeps full matching's structure (``msm``): image tiles I x J, each unordered pair once
(a tile against itself: half the window, below; at radius 0 its pairs twice), a running top-k of the
per-image nearest similarities, the same interval average. Tokens are laid
out position-major (M, N, C), so for a window offset d = (dy, dx) the patches of J at p + d for a
run of positions p are one contiguous slice, and one batched matmul over positions (bI x C times
C x bJ per position) gives, for every p, the similarity of I's patch p with J's patch p + d. The
window relation is symmetric: the same product is J's patch p + d against I's patch p at offset -d,
so one product per offset updates both I's and J's per-image maxima. Rows wrap in the flattened
grid; the wrapped products are computed (a |dx|/w fraction) and never read. Memory is three
(M, bI, bJ) buffers per tile pair, sized by the same budget rules as ``msm``; the code is the same on
CPU and CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .msm import interval_bounds, interval_mean, resolve_matmul_dtype, tile_budget_bytes

# On CPU a batched matmul costs ~20 us per (position, block) whatever the block's size, so blocks of
# many images are much faster (N=64, 32x32 grid, C=256, radius 2: 4.0 GFLOP/s at 40 images a side,
# 9.6 at 64); each position's bI x bJ product stays in cache at any tile.
CPU_TILE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class _Offset:
    """One window offset (dy, dx): the rectangle of positions (ys, xs) whose shifted cell exists,
    its flattened run [start, stop) and the flattened shift dy * w + dx."""

    ys: slice
    xs: slice
    ys_shifted: slice
    xs_shifted: slice
    start: int
    stop: int
    shift: int


def _offsets(h: int, w: int, radius: int) -> list[_Offset]:
    """The window's offsets: (0, 0) first (it covers every position, so it initialises the maxima), then
    the half with dy > 0 or dy == 0 < dx, then their negatives (so ``[:1 + len // 2]`` is half a window)."""
    ry, rx = min(radius, h - 1), min(radius, w - 1)
    half = [(dy, dx) for dy in range(0, ry + 1) for dx in range(-rx, rx + 1) if dy > 0 or dx > 0]
    pairs = [(0, 0)] + half + [(-dy, -dx) for dy, dx in half]
    offsets = []
    for dy, dx in pairs:
        ys = slice(max(0, -dy), h - max(0, dy))
        xs = slice(max(0, -dx), w - max(0, dx))
        offsets.append(_Offset(ys, xs, slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx),
                               ys.start * w + xs.start, (ys.stop - 1) * w + xs.stop, dy * w + dx))
    return offsets


def window_flops(h: int, w: int, radius: int, c: int) -> int:
    """Useful multiply-adds x 2 of one image pair: per position, its window's cells times 2C."""
    cells = sum((o.ys.stop - o.ys.start) * (o.xs.stop - o.xs.start) for o in _offsets(h, w, radius))
    return 2 * c * cells


def windowed_tile_images(n: int, m: int, device: torch.device, memory_budget_mb: int | None = None) -> int:
    """Images per tile side so that a tile pair's buffers fit the budget (as ``msm.auto_tile_images``:
    ``memory_budget_mb``, else a quarter of free CUDA memory, else ``CPU_TILE_BYTES``)."""
    budget = tile_budget_bytes(device, memory_budget_mb, CPU_TILE_BYTES)
    # three (M, bI, bJ) buffers plus the top-k merge's concatenation and result
    side = max(1, min(n, math.isqrt(int(budget / (m * 4 * 5)))))
    # tiles of equal size: a ragged last tile of a few images makes small, slow matmuls (N=64 on a 64x64
    # grid, radius 1: 14.8 s with tiles of 57 + 7 images, 9.8 s with 32 + 32)
    return math.ceil(n / math.ceil(n / side))


def pair_blocks(n: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    """Image blocks (i0, i1, j0, j1) of at most ``tile`` a side that hold every unordered pair of 0..n-1:
    each tile against itself (i0 == j0), then against each later tile."""
    starts = range(0, n, tile)
    for a, i0 in enumerate(starts):
        i1 = min(i0 + tile, n)
        yield i0, i1, i0, i1
        for j0 in starts[a + 1:]:
            yield i0, i1, j0, min(j0 + tile, n)


def windowed_similarities(
    z: torch.Tensor,
    grid: tuple[int, int],
    radius: int,
    k: int,
    tile_images: int | None = None,
    memory_budget_mb: int | None = None,
    matmul_precision: str = "auto",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """For every patch, its k best per-image nearest similarities within the window, over the other images.

    ``z`` (N, M, C) holds unit tokens on the (h, w) ``grid`` (row-major). Returns (N, M, k) fp32 on
    ``device``, sorted descending: entry [i, p, t] is the (t+1)-th largest over j != i of
    max over cells q of j within ``radius`` of p of z[i, p] . z[j, q].
    """
    n, m, c = z.shape
    h, w = grid
    if h * w != m:
        raise ValueError(f"tokens of {m} patches do not lie on a {h}x{w} grid")
    if radius < 0:
        raise ValueError(f"match radius must be >= 0, got {radius}")
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
    device = torch.device(device) if device is not None else z.device
    dtype = resolve_matmul_dtype(matmul_precision, device)
    tile = tile_images or windowed_tile_images(n, m, device, memory_budget_mb)
    tokens = z.to(device=device, dtype=dtype).transpose(0, 1).contiguous()  # (M, N, C): position-major
    # position-major like the tokens, so that I's values (M, bI, bJ) fold in without a transpose
    best = torch.full((m, n, k), -torch.inf, device=device)
    offsets = _offsets(h, w, radius)
    buffers = torch.empty(3, m * tile * tile, device=device, dtype=dtype)
    for i0, i1, j0, j1 in pair_blocks(n, tile):
        bi, bj = i1 - i0, j1 - j0
        product, to_i, to_j = (b[: m * bi * bj].view(m, bi, bj) for b in buffers)
        torch.bmm(tokens[:, i0:i1], tokens[:, j0:j1].transpose(1, 2), out=to_i)  # offset (0, 0)
        to_j.copy_(to_i)
        grid_i, grid_j, grid_product = (t.view(h, w, bi, bj) for t in (to_i, to_j, product))
        # a tile against itself: image b's patch at offset d from a's is a's at -d from b's, so half the
        # window gives every pair once (radius 0: the one offset gives each pair twice; halving the tile
        # down to single images instead costs more, in small matmuls and top-k folds, than it saves)
        square = i0 == j0
        for o in offsets[1:1 + len(offsets) // 2] if square else offsets[1:]:
            # I's patches p in [start, stop) against J's at p + shift, one (bI x bJ) product per position
            torch.bmm(tokens[o.start:o.stop, i0:i1], tokens[o.start + o.shift:o.stop + o.shift, j0:j1].transpose(1, 2),
                      out=product[o.start:o.stop])
            valid = grid_product[o.ys, o.xs]
            mine, theirs = grid_i[o.ys, o.xs], grid_j[o.ys_shifted, o.xs_shifted]
            torch.maximum(mine, valid, out=mine)  # I's patch p, nearest in J so far
            torch.maximum(theirs, valid, out=theirs)  # J's patch p + d sees I's patch p at offset -d
        if square:  # to_j[q, a, b] is b's patch q against a: fold it into to_i[q, b, a]; never a against a
            torch.maximum(to_i, to_j.transpose(1, 2), out=to_i)
            to_i.diagonal(dim1=1, dim2=2).fill_(-torch.inf)
        else:
            _fold_top_k(best[:, j0:j1], to_j.transpose(1, 2))  # (M, bJ, bI): J's patches in each I
        _fold_top_k(best[:, i0:i1], to_i)  # (M, bI, bJ): I's patches in each J
    return best.transpose(0, 1).sort(dim=2, descending=True).values


def _fold_top_k(kept: torch.Tensor, new: torch.Tensor) -> None:
    """Fold per-image similarities (M, b, j) into the kept k largest (M, b, k), in place; unsorted
    (sorting once at the end is cheaper than at every fold)."""
    merged = torch.cat([kept, new.float()], dim=2)
    kept.copy_(torch.topk(merged, kept.shape[2], dim=2, sorted=False).values)


def windowed_mutual_scores(
    z: torch.Tensor,
    grid: tuple[int, int],
    radius: int,
    topmin_max: float = 0.3,
    topmin_min: float = 0.0,
    tile_images: int | None = None,
    memory_budget_mb: int | None = None,
    matmul_precision: str = "auto",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Eq. 1-2 with windowed matching: unit tokens (N, M, C) on ``grid`` -> patch scores (N, M), fp32."""
    k_lo, k_hi = interval_bounds(z.shape[0] - 1, topmin_max, topmin_min)
    best = windowed_similarities(z, grid, radius, k_hi, tile_images, memory_budget_mb, matmul_precision, device)
    return interval_mean(best, k_lo)
