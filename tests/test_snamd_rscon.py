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


def naive_window_rescoring(raw: torch.Tensor, features: torch.Tensor, windows: list[int],
                           normalise: bool) -> torch.Tensor:
    """Eq. 5 by hand: per window k (1 added when missing), per image, its k most similar images by the
    feature dot product (itself included) weighted by their similarity, normalised to sum 1."""
    scores = raw.double()
    if normalise:
        scores = (scores - scores.min()) / (scores.max() - scores.min())
    sim = features.double() @ features.double().T
    n = len(scores)
    windows = windows if 1 in windows else [*windows, 1]
    out = torch.zeros(n, dtype=torch.float64)
    for k in windows:
        for i in range(n):
            order = sorted(range(n), key=lambda j: -float(sim[i, j]))[:min(k, n)]
            out[i] += sum(sim[i, j] * scores[j] for j in order) / sum(sim[i, j] for j in order)
    return out / len(windows)


def naive_salient(tokens: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
    """Each image's token at its highest-scoring patch, by an explicit scan."""
    flat = patch.flatten(1)
    rows = []
    for i in range(flat.shape[0]):
        best = max(range(flat.shape[1]), key=lambda m: float(flat[i, m]))
        rows.append(tokens[i, best])
    return torch.stack(rows)


@pytest.mark.parametrize("normalise", [True, False])
@pytest.mark.parametrize("stages, expected_stage", [(3, 1), (2, 0), (1, 0)])
def test_rscon_equals_naive_salient_rescoring(normalise, stages, expected_stage):
    from pipeline.engine.rescoring import RescoringInputs, rescore

    g = torch.Generator().manual_seed(stages)
    n, h, w, c = 7, 3, 4, 5
    per_stage = [torch.nn.functional.normalize(torch.randn(n, h * w, c, generator=g), dim=-1) for _ in range(stages)]
    patch, raw = torch.rand(n, h, w, generator=g), torch.rand(n, generator=g) * 3 + 1
    members = Features([torch.zeros(n, 1, h, w)] * stages, torch.nn.functional.normalize(torch.randn(n, 4), dim=-1))
    asked = []
    inputs = RescoringInputs(raw, patch, members, lambda s: asked.append(s) or per_stage[s])
    cfg = MuscConfig(rescoring="rscon", rscon_windows=[3, 7])  # 1 joins the windows; 7 > N clips to N
    got = rescore("rscon", inputs, cfg, normalise)
    assert asked == [expected_stage]  # the second-to-last stage
    expected = naive_window_rescoring(raw, naive_salient(per_stage[expected_stage], patch), [3, 7], normalise)
    assert torch.allclose(got.double(), expected, atol=1e-5)
    # not RsCIN's global embeddings: the same windows there give other scores
    by_embedding = naive_window_rescoring(raw, members.embedding, [3, 7], normalise)
    assert not torch.allclose(got.double(), by_embedding, atol=1e-3)
    # no windows: the raw scores
    assert torch.equal(rescore("rscon", inputs, MuscConfig(rescoring="rscon", rscon_windows=[]), normalise), raw)


def test_score_features_rscon_with_references_on_the_raw_scale():
    """The nightly job's call: N scored images + R references, keep_scale; RsCon over all N + R members
    from SNAMD tokens of the second-to-last stage, split into scores and the references' scores."""
    g = torch.Generator().manual_seed(11)
    stages = [torch.randn(8, 6, 4, 4, generator=g), torch.randn(8, 10, 4, 4, generator=g),
              torch.randn(8, 7, 4, 4, generator=g)]
    members = Features(stages, torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=-1))
    scored, references = members.select(torch.arange(5)), members.select(torch.arange(5, 8))
    cfg = MuscConfig(aggregation="snamd", rescoring="rscon", aggregation_degrees=[1, 3], rscon_windows=[2])
    got = score_features(scored, cfg, keep_scale=True, references=references)
    patch = sum(mutual_scores(snamd(s, [1, 3], "auto"), cfg.topmin_max) for s in stages) / 3  # (8, 16)
    raw = patch.max(dim=1).values
    salient = naive_salient(snamd(stages[1], [1, 3], "auto"), patch)
    expected = naive_window_rescoring(raw, salient, [2], normalise=False)
    assert torch.allclose(got.image_scores_raw, raw[:5], atol=1e-5)
    assert torch.allclose(got.image_scores.double(), expected[:5], atol=1e-5)
    assert torch.allclose(got.reference_scores.double(), expected[5:], atol=1e-5)
