"""Exact mutual scoring (Eq. 1-2) against a naive loop-by-loop implementation of the paper."""

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.engine.features import Features
from pipeline.engine.lnamd import lnamd
from pipeline.engine.msm import (
    auto_tile_images,
    interval_bounds,
    mutual_scores,
    top_image_similarities,
)
from pipeline.engine.musc import score_features
from pipeline.engine.rscin import rscin
from pipeline.settings import MuscConfig


def naive_msm(z: torch.Tensor, x: float, y: float = 0.0) -> torch.Tensor:
    """Eq. 1-2 literally: for each patch, min L2 distance to each other image, sort, interval mean."""
    n, m, _ = z.shape
    z = z.double()
    out = torch.zeros(n, m, dtype=torch.float64)
    n_others = n - 1
    k_hi = max(1, math.floor(n_others * x))
    k_lo = min(math.floor(n_others * y), k_hi - 1)
    for i in range(n):
        for p in range(m):
            per_image = []
            for j in range(n):
                if j == i:
                    continue
                per_image.append(min(torch.linalg.vector_norm(z[i, p] - z[j, q]).item() for q in range(m)))
            per_image.sort()
            out[i, p] = sum(per_image[k_lo:k_hi]) / (k_hi - k_lo)
    return out


def unit(n, m, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, m, c, generator=g), dim=-1)


@pytest.mark.parametrize(
    "n,m,c,x,y,tile",
    [
        (2, 5, 8, 0.3, 0.0, None),   # N=2: 30% of 1 rounds to 0 -> one image used
        (3, 4, 16, 0.3, 0.0, 1),     # 30% of 2 rounds to 0
        (7, 6, 12, 0.3, 0.0, 2),     # ragged last tile
        (11, 9, 8, 0.5, 0.1, 3),     # with a lower bound Y
        (13, 4, 32, 0.3, 0.0, 5),
        (10, 7, 4, 1.0, 0.0, 4),     # X = 100%: plain average over all others
        (9, 3, 64, 0.3, 0.0, 20),    # tile larger than N
    ],
)
def test_tiled_msm_equals_naive_equations(n, m, c, x, y, tile):
    z = unit(n, m, c, seed=n * 100 + m)
    fast = mutual_scores(z, topmin_max=x, topmin_min=y, tile_images=tile)
    assert fast.shape == (n, m)
    assert torch.allclose(fast.double(), naive_msm(z, x, y), atol=1e-4)


def test_tiling_does_not_change_the_result():
    z = unit(17, 8, 16, seed=3)
    reference = mutual_scores(z, tile_images=17)
    for tile in (1, 2, 5, 8):
        assert torch.allclose(mutual_scores(z, tile_images=tile), reference, atol=1e-6)


def test_top_similarities_sorted_and_exclude_self():
    # image 0 and image 1 are identical; image 2 is different: image 0's best match must be image 1
    z = unit(3, 4, 8, seed=1)
    z[1] = z[0]
    best = top_image_similarities(z, k=2, tile_images=1)
    assert torch.allclose(best[0, :, 0], torch.ones(4), atol=1e-6)
    assert (best[..., 0] >= best[..., 1]).all()
    # a patch never matches itself: image 2's best similarity is below 1
    assert (best[2, :, 0] < 1 - 1e-3).all()


def test_duplicate_image_scores_zero_and_outlier_scores_high():
    z = unit(6, 5, 8, seed=2)
    z[1] = z[0]
    scores = mutual_scores(z, topmin_max=0.2)  # k = 1: nearest image only
    assert torch.allclose(scores[0], torch.zeros(5), atol=1e-3)


def test_interval_bounds():
    assert interval_bounds(1, 0.3) == (0, 1)
    assert interval_bounds(63, 0.3) == (0, 18)
    assert interval_bounds(100, 0.3, 0.1) == (10, 30)
    assert interval_bounds(3, 0.3, 0.2) == (0, 1)


def test_one_image_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 images"):
        mutual_scores(unit(1, 4, 8))


def test_auto_tile_respects_budget():
    device = torch.device("cpu")
    assert auto_tile_images(1000, 196, device, memory_budget_mb=1) == 2
    assert auto_tile_images(5, 196, device, memory_budget_mb=10_000) == 5
    assert auto_tile_images(1000, 10_000, device, memory_budget_mb=1) == 1


def test_fp16_matmul_rejected_on_cpu():
    with pytest.raises(ValueError, match="only supported on CUDA"):
        mutual_scores(unit(3, 4, 8), matmul_precision="fp16", device="cpu")


def test_bf16_matmul_on_cpu_close_to_exact():
    z = unit(20, 49, 256, seed=5)
    exact = mutual_scores(z, tile_images=3)
    assert (mutual_scores(z, tile_images=3, matmul_precision="bf16", device="cpu") - exact).abs().max() < 2e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision,tol", [("fp16", 2e-3), ("bf16", 2e-2), ("fp32", 1e-4)])
def test_gpu_reduced_precision_close_to_exact(precision, tol):
    z = unit(20, 49, 256, seed=5)
    exact = mutual_scores(z, tile_images=3)
    gpu = mutual_scores(z, tile_images=3, matmul_precision=precision, device="cuda").cpu()
    assert (gpu - exact).abs().max() < tol


def _features(stages: list[torch.Tensor], embedding: torch.Tensor, rows: slice) -> Features:
    return Features([s[rows] for s in stages], embedding[rows])


def test_references_are_members_of_the_interval_average_and_never_scored():
    """The rule of musc.score_features: each of the N images and R references is scored by Eq. 1-2 over
    its N + R - 1 other members (k = floor(X (N + R - 1))), RsCIN runs over all N + R; only the N
    scored images come back as scores, the references' results as their leave-one-out scores."""
    n, r, degrees = 4, 3, [1, 3]
    g = torch.Generator().manual_seed(3)
    stages = [torch.randn(n + r, 6, 3, 3, generator=g), torch.randn(n + r, 5, 3, 3, generator=g)]
    embedding = F.normalize(torch.randn(n + r, 8, generator=g), dim=1)
    cfg = MuscConfig(aggregation_degrees=degrees, topmin_max=0.5, rscin_windows=[1, 2])
    got = score_features(_features(stages, embedding, slice(0, n)), cfg, keep_scale=True,
                         references=_features(stages, embedding, slice(n, None)))
    patch = torch.stack([naive_msm(lnamd(s, d), 0.5) for s in stages for d in degrees]).mean(0)  # (N + R, M)
    raw = patch.max(dim=1).values
    final = rscin(raw.float(), embedding, [1, 2], normalise=False)
    assert got.patch_scores.shape == (n, 3, 3) and got.image_scores.shape == (n,)
    assert torch.allclose(got.patch_scores.flatten(1).double(), patch[:n], atol=1e-4)
    assert torch.allclose(got.image_scores_raw.double(), raw[:n], atol=1e-4)
    assert torch.allclose(got.image_scores, final[:n], atol=1e-4)
    assert torch.allclose(got.reference_scores, final[n:], atol=1e-4)
    alone = score_features(_features(stages, embedding, slice(0, n)), cfg, keep_scale=True)
    assert alone.reference_scores is None
    assert not torch.allclose(alone.patch_scores, got.patch_scores, atol=1e-3)  # the references did take part


@pytest.mark.parametrize("references, hidden", [(0, True), (4, True), (5, False), (20, False)])
def test_a_shared_defect_is_caught_once_the_interval_reaches_past_its_lookalikes(references, hidden):
    """4 of 10 parts carry the same defect patch, so each has 3 exact look-alikes. MuSc averages the
    floor(0.3 (9 + R)) smallest distances: with R <= 4 references those are all look-alikes (distance
    0, the defect is hidden); from R = 5 the interval holds a normal member too."""
    c, side = 8, 3
    normal, defect = torch.zeros(c), torch.zeros(c)
    normal[0], defect[1] = 1.0, 1.0
    tokens = normal.expand(10 + references, side * side, c).clone()
    tokens[:4, 0] = defect  # patch 0 of images 0-3
    stage = tokens.transpose(1, 2).reshape(-1, c, side, side)
    embedding = F.normalize(torch.ones(10 + references, 4), dim=1)
    cfg = MuscConfig(aggregation_degrees=[1], topmin_max=0.3, rscin_windows=None)
    got = score_features(Features([stage[:10]], embedding[:10]), cfg,
                         references=Features([stage[10:]], embedding[10:]) if references else None)
    defect_score = got.patch_scores[:4, 0, 0]
    assert got.image_scores.shape == (10,)
    if hidden:
        assert defect_score.max() < 1e-3
    else:
        assert defect_score.min() > 0.1
        assert got.image_scores[:4].min() > 10 * got.image_scores[4:].max()
