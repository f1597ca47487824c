"""Mutual Scoring Mechanism (MuSc, Sec. 3.2, Eq. 1-2), exact and tiled.

For one (stage, degree) pair every patch m of image i gets, from every other image j, the distance
to its nearest patch in j: a_m(j) = min_n ||p_m^i - p_n^j||. The patch score is the mean of the
smallest X% of those N-1 values (optionally skipping the smallest Y%).

Tokens are unit vectors, so ||a - b|| = sqrt(2 - 2 a.b): the nearest patch is the one with the
largest dot product, and one matrix product Z_I Z_J^T between two blocks of images gives both I's
scores from J (row maxima) and J's scores from I (column maxima). Each unordered image pair is
therefore computed once (inside a diagonal tile, each image against the later ones), in tiles of
``tile`` x ``tile`` images, and per patch only the k_hi best
per-image similarities are kept (a running top-k), so memory is bounded by the tile and the kept
values, never by the N^2 M^2 similarity matrix. Distances are taken only of the kept values.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# On CPU, a similarity tile of about this size stays in cache and keeps the max-reductions cheap.
CPU_TILE_BYTES = 32 * 2**20

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def interval_bounds(n_others: int, topmin_max: float, topmin_min: float = 0.0) -> tuple[int, int]:
    """Positions [k_lo, k_hi) of the sorted N-1 distances that are averaged.

    k_hi = floor(X * (N-1)) as the published code computes it, but at least 1 so small N still works
    (the published code averages an empty set when X * (N-1) < 1); k_lo = floor(Y * (N-1)) < k_hi.
    """
    if n_others < 1:
        raise ValueError("mutual scoring needs at least 2 images: an image cannot be scored against itself alone")
    k_hi = max(1, int(n_others * topmin_max))
    k_lo = min(int(n_others * topmin_min), k_hi - 1)
    return k_lo, k_hi


def tile_budget_bytes(device: torch.device, memory_budget_mb: int | None, cpu_bytes: int) -> int:
    """Bytes a tile may use: ``memory_budget_mb`` when given, a quarter of free memory on CUDA, else ``cpu_bytes``."""
    if memory_budget_mb is not None:
        return memory_budget_mb * 2**20
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 4
    return cpu_bytes


def auto_tile_images(n: int, m: int, device: torch.device, memory_budget_mb: int | None = None) -> int:
    """Images per tile side so the (tile*M) x (tile*M) similarity tile fits the budget.

    Budget: ``memory_budget_mb`` when given; on CUDA a quarter of the free memory; on CPU a
    cache-sized tile (larger tiles are slower there, the max-reductions become memory bound).
    """
    budget = tile_budget_bytes(device, memory_budget_mb, CPU_TILE_BYTES)
    # fp32 tile plus its two max-reductions (each at most a 1/M fraction of it)
    side = math.isqrt(int(budget / (4 * (1 + 2 / max(m, 1)))))
    return max(1, min(n, side // max(m, 1)))


def resolve_matmul_dtype(precision: str, device: torch.device) -> torch.dtype:
    """'auto' is fp16 on CUDA (unit vectors fit its range, 10-bit mantissa) and fp32 elsewhere.

    bf16 also runs on CPU, where CPUs with AMX or AVX512-BF16 multiply it several times faster than
    fp32 (slower than fp32 without them); CPU fp16 has no fast path and is refused.
    """
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = _DTYPES[precision]
    if device.type != "cuda" and dtype == torch.float16:
        raise ValueError(f"matmul precision fp16 is only supported on CUDA; use fp32 or bf16 on {device.type}")
    return dtype


MATCH_RULES = ("nearest", "farthest")


def _merge_topk(best: torch.Tensor, start: int, new: torch.Tensor, largest: bool = True) -> None:
    """Fold new per-image similarities (b, M, j) into the kept top-k (or bottom-k) of rows start..start+b."""
    rows = slice(start, start + new.shape[0])
    merged = torch.cat([best[rows], new], dim=2)
    best[rows] = torch.topk(merged, best.shape[2], dim=2, largest=largest).values


def _check_rule(name: str, value: str) -> bool:
    """True for 'nearest' (largest similarity), False for 'farthest'."""
    if value not in MATCH_RULES:
        raise ValueError(f"{name} must be one of {MATCH_RULES}, got {value!r}")
    return value == "nearest"


def _match_rules(patch_match: str, image_selection: str) -> tuple[Callable[..., torch.Tensor], bool]:
    """The reduction over another image's patches, and whether the kept per-image values are the largest."""
    reduce = torch.amax if _check_rule("patch_match", patch_match) else torch.amin
    return reduce, _check_rule("image_selection", image_selection)


def _kept_values(shape: tuple[int, int, int], keep_largest: bool, device: torch.device) -> torch.Tensor:
    """The running top-k (bottom-k) buffer, filled so that any real similarity replaces the filler."""
    return torch.full(shape, -torch.inf if keep_largest else torch.inf, device=device)


def top_image_similarities(
    z: torch.Tensor,
    k: int,
    tile_images: int | None = None,
    memory_budget_mb: int | None = None,
    matmul_precision: str = "auto",
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    patch_match: str = "nearest",
    image_selection: str = "nearest",
) -> torch.Tensor:
    """For every patch, its k best nearest-patch similarities over the other images.

    ``z`` (N, M, C) holds unit tokens. Returns (N, M, k) fp32 on ``device``, sorted descending:
    entry [i, m, t] is the (t+1)-th largest over j != i of max_n z[i, m] . z[j, n].
    ``progress(done, total)`` is called after each tile.

    The two rules are what MuSc and PatchEAD differ in: ``patch_match`` 'farthest' takes the least
    similar patch of each other image (min over n instead of max), ``image_selection`` 'farthest'
    keeps the k least similar images (sorted ascending) instead of the k most similar.
    """
    n, m, c = z.shape
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
    reduce, keep_largest = _match_rules(patch_match, image_selection)
    device = torch.device(device) if device is not None else z.device
    dtype = resolve_matmul_dtype(matmul_precision, device)
    tile = tile_images or auto_tile_images(n, m, device, memory_budget_mb)
    zc = z.to(device=device, dtype=dtype)
    best = _kept_values((n, m, k), keep_largest, device)

    # one reused tile buffer: a fresh multi-MB output per matmul costs more in page faults than the
    # matmul itself when C is small
    buffer = torch.empty(tile * m * tile * m, device=device, dtype=dtype)

    def score_pair_block(i0: int, i1: int, j0: int, j1: int) -> None:
        """Images i0:i1 against j0:j1 (disjoint): one matmul, row maxima for i, column maxima for j."""
        bi, bj = i1 - i0, j1 - j0
        sim = buffer[: bi * m * bj * m].view(bi * m, bj * m)
        torch.mm(zc[i0:i1].reshape(bi * m, c), zc[j0:j1].reshape(bj * m, c).T, out=sim)
        sim = sim.view(bi, m, bj, m)
        _merge_topk(best, i0, reduce(sim, dim=3).float(), keep_largest)  # (bi, M, bj): i's patches in j
        _merge_topk(best, j0, reduce(sim, dim=1).float().permute(1, 2, 0), keep_largest)  # (bj, M, bi): j's in i

    starts = list(range(0, n, tile))
    total = len(starts) * (len(starts) + 1) // 2
    done = 0
    for a, i0 in enumerate(starts):
        i1 = min(i0 + tile, n)
        # diagonal tile: each image against the later ones of the tile, so no pair is computed twice
        for i in range(i0, i1 - 1):
            score_pair_block(i, i + 1, i + 1, i1)
        for j0 in starts[a + 1:]:
            score_pair_block(i0, i1, j0, min(j0 + tile, n))
            done += 1
            if progress is not None:
                progress(done, total)
        done += 1
        if progress is not None:
            progress(done, total)
    return best


def reference_similarities(
    queries: torch.Tensor,
    references: torch.Tensor,
    k: int,
    tile_images: int | None = None,
    memory_budget_mb: int | None = None,
    matmul_precision: str = "auto",
    device: torch.device | str | None = None,
    patch_match: str = "nearest",
    image_selection: str = "nearest",
) -> torch.Tensor:
    """As ``top_image_similarities``, but every query (Q, M, C) against a separate set of reference
    images (R, M', C) (few-shot: the normal prompts) instead of against the other queries."""
    q, m, c = queries.shape
    r, mr, _ = references.shape
    if not 1 <= k <= r:
        raise ValueError(f"k must be in [1, R] = [1, {r}], got {k}")
    reduce, keep_largest = _match_rules(patch_match, image_selection)
    device = torch.device(device) if device is not None else queries.device
    dtype = resolve_matmul_dtype(matmul_precision, device)
    tile = tile_images or auto_tile_images(max(q, r), max(m, mr), device, memory_budget_mb)
    zq, zr = queries.to(device=device, dtype=dtype), references.to(device=device, dtype=dtype)
    best = _kept_values((q, m, k), keep_largest, device)
    for i0 in range(0, q, tile):
        i1 = min(i0 + tile, q)
        for j0 in range(0, r, tile):
            j1 = min(j0 + tile, r)
            sim = (zq[i0:i1].reshape(-1, c) @ zr[j0:j1].reshape(-1, c).T).view(i1 - i0, m, j1 - j0, mr)
            _merge_topk(best, i0, reduce(sim, dim=3).float(), keep_largest)
    return best


def mutual_scores(
    z: torch.Tensor,
    topmin_max: float = 0.3,
    topmin_min: float = 0.0,
    tile_images: int | None = None,
    memory_budget_mb: int | None = None,
    matmul_precision: str = "auto",
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Eq. 1-2 for one (stage, degree): unit tokens (N, M, C) -> patch scores (N, M), fp32 on ``device``."""
    n = z.shape[0]
    k_lo, k_hi = interval_bounds(n - 1, topmin_max, topmin_min)
    best = top_image_similarities(z, k_hi, tile_images, memory_budget_mb, matmul_precision, device, progress)
    return interval_mean(best, k_lo)


def interval_mean(best: torch.Tensor, k_lo: int) -> torch.Tensor:
    """Eq. 2 from the kept similarities (N, M, k_hi), sorted descending: the mean distance over [k_lo, k_hi)."""
    # in place on one copy: the kept values are the largest buffer here
    distances = best[:, :, k_lo:].mul(-2.0).add_(2.0).clamp_(min=0.0).sqrt_()
    return distances.mean(dim=2)
