"""SNAMD and RsCon (MuSc-V2) against naive loops of their equations, and their place in score_features."""

import math
import statistics

import pytest
import torch

from pipeline.engine.features import Features
from pipeline.engine.msm import mutual_scores
from pipeline.engine.musc import score_features
from pipeline.engine.snamd import snamd
from pipeline.settings import MuscConfig


def naive_snamd(stage: torch.Tensor, degrees: list[int], temperature: float | str) -> torch.Tensor:
    """Per image, patch and degree: LayerNorm over (C, H, W) by hand, the explicit r x r neighbourhood
    with zero vectors outside the grid (they count in the weight sum), weights exp(-||x_n - x_c|| / T),
    the weighted means averaged over the degrees, L2-normalised. 'auto': T = median on-grid neighbour
    distance (centre excluded) over the batch, within the largest window."""
    x = stage.double()
    n, c, h, w = x.shape
    mu = x.mean(dim=(1, 2, 3), keepdim=True)
    var = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    x = (x - mu) / torch.sqrt(var + 1e-5)
    half = max(degrees) // 2

    def at(b: int, i: int, j: int) -> torch.Tensor:
        return x[b, :, i, j] if 0 <= i < h and 0 <= j < w else torch.zeros(c, dtype=torch.float64)

    if temperature == "auto":
        found = [float((x[b, :, i + di, j + dj] - x[b, :, i, j]).norm())
                 for b in range(n) for i in range(h) for j in range(w)
                 for di in range(-half, half + 1) for dj in range(-half, half + 1)
                 if (di, dj) != (0, 0) and 0 <= i + di < h and 0 <= j + dj < w]
        temperature = statistics.median_low(found) if found else 1.0  # degree 1 alone: no neighbours
    out = torch.zeros(n, h * w, c, dtype=torch.float64)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                centre = x[b, :, i, j]
                per_degree = []
                for r in degrees:
                    total, weight_sum = torch.zeros(c, dtype=torch.float64), 0.0
                    for di in range(-(r // 2), r // 2 + 1):
                        for dj in range(-(r // 2), r // 2 + 1):
                            v = at(b, i + di, j + dj)
                            weight = math.exp(-float((v - centre).norm()) / temperature)
                            total += weight * v
                            weight_sum += weight
                    per_degree.append(total / weight_sum)
                fused = torch.stack(per_degree).mean(dim=0)
                out[b, i * w + j] = fused / fused.norm()
    return out


@pytest.mark.parametrize("degrees, temperature", [([1, 3, 5], 1.0), ([1, 3, 5], "auto"), ([3], 2.5), ([1], "auto"),
                                                  ([5, 3], 7.0)])
def test_snamd_equals_naive_loop(degrees, temperature):
    stage = torch.randn(3, 5, 6, 4, generator=torch.Generator().manual_seed(len(degrees))) * 2 + 0.5
    got = snamd(stage, degrees, temperature)
    assert got.shape == (3, 24, 5) and got.dtype == torch.float32
    assert torch.allclose(got.double(), naive_snamd(stage, degrees, temperature), atol=1e-5)
    # chunks of one image give the same tokens ('auto' still takes the median over the whole batch)
    assert torch.allclose(snamd(stage, degrees, temperature, chunk_bytes=1), got, atol=1e-6)


def test_snamd_temperature_moves_between_centre_only_and_plain_mean():
    """T -> 0 keeps only the centre (degree 1, LayerNorm'd, normalised); a huge T gives every neighbour
    (padding included) equal weight: the mean over degrees of LNAMD's zero-padded window means."""
    stage = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(3))
    x = torch.nn.functional.layer_norm(stage, stage.shape[1:])
    centre = torch.nn.functional.normalize(x.flatten(2).transpose(1, 2), dim=-1)
    assert torch.allclose(snamd(stage, [1, 3, 5], 1e-4), centre, atol=1e-6)
    plain = sum(torch.nn.functional.avg_pool2d(x, r, 1, r // 2, count_include_pad=True) for r in (1, 3, 5)) / 3
    expected = torch.nn.functional.normalize(plain.flatten(2).transpose(1, 2), dim=-1)
    assert torch.allclose(snamd(stage, [1, 3, 5], 1e9), expected, atol=1e-5)


def test_snamd_refuses_bad_degrees_and_temperatures():
    with pytest.raises(ValueError, match="odd"):
        snamd(torch.randn(1, 2, 3, 3), [1, 2])
    with pytest.raises(ValueError, match="positive number"):
        snamd(torch.randn(1, 2, 3, 3), [3], 0.0)


def test_score_features_with_snamd_runs_one_mutual_scoring_pass_per_stage():
    g = torch.Generator().manual_seed(5)
    stages = [torch.randn(6, 8, 5, 5, generator=g), torch.randn(6, 12, 5, 5, generator=g)]
    features = Features(stages, torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=-1))
    cfg = MuscConfig(aggregation="snamd", aggregation_degrees=[1, 3, 5], rscin_windows=None)
    calls = []
    got = score_features(features, cfg, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]  # LNAMD: 6 passes
    expected = sum(mutual_scores(snamd(s, [1, 3, 5], "auto"), cfg.topmin_max) for s in stages) / 2
    assert torch.allclose(got.patch_scores.flatten(1), expected, atol=1e-6)
