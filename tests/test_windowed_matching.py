"""Windowed (position-aware) mutual scoring against a naive loop, and ``match_radius: auto``'s choice."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.engine.features import Features
from pipeline.engine.lnamd import lnamd
from pipeline.engine.matching import MatchChoice, choose_matching, nearest_displacement_fractions
from pipeline.engine.msm import mutual_scores
from pipeline.engine.musc import score_features
from pipeline.engine.windowed_msm import pair_blocks, windowed_mutual_scores, windowed_tile_images
from pipeline.settings import ConfigError, MuscConfig, config_from_dict


def naive_windowed(z: torch.Tensor, grid: tuple[int, int], radius: int, x: float, y: float = 0.0) -> torch.Tensor:
    """Eq. 1-2 with the window, literally: per patch, per other image, the min L2 distance over the cells
    of that image within Chebyshev distance ``radius`` of the patch's cell; sort; interval mean."""
    n, m, _ = z.shape
    h, w = grid
    z = z.double()
    k_hi = max(1, math.floor((n - 1) * x))
    k_lo = min(math.floor((n - 1) * y), k_hi - 1)
    out = torch.zeros(n, m, dtype=torch.float64)
    for i in range(n):
        for p in range(m):
            py, px = divmod(p, w)
            window = [q for q in range(m) if abs(q // w - py) <= radius and abs(q % w - px) <= radius]
            per_image = sorted(min(torch.linalg.vector_norm(z[i, p] - z[j, q]).item() for q in window)
                               for j in range(n) if j != i)
            out[i, p] = sum(per_image[k_lo:k_hi]) / (k_hi - k_lo)
    return out


def unit(n, m, c, seed=0):
    return F.normalize(torch.randn(n, m, c, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize(
    "n,h,w,radius,x,y,tile",
    [
        (5, 4, 4, 1, 0.5, 0.0, None),  # one tile: the tile against itself, half the window
        (7, 3, 5, 1, 0.3, 0.0, 2),     # non-square grid, ragged last tile
        (6, 5, 3, 0, 0.5, 0.0, 4),     # radius 0: the same cell only
        (9, 5, 5, 2, 0.5, 0.2, 3),     # odd grid, wider window, lower bound Y
        (4, 1, 7, 1, 1.0, 0.0, 1),     # one row, every image its own tile
        (3, 2, 2, 1, 0.3, 0.0, None),  # radius covering the grid
    ],
)
def test_windowed_equals_naive_loop(n, h, w, radius, x, y, tile):
    z = unit(n, h * w, 8, seed=n * 10 + h)
    got = windowed_mutual_scores(z, (h, w), radius, x, y, tile_images=tile)
    assert got.shape == (n, h * w)
    assert torch.allclose(got.double(), naive_windowed(z, (h, w), radius, x, y), atol=1e-5)


def test_a_radius_covering_the_grid_is_full_matching():
    z = unit(12, 6 * 5, 16, seed=4)
    full = mutual_scores(z, 0.3)
    for radius, tile in ((5, None), (7, 5)):
        assert torch.allclose(windowed_mutual_scores(z, (6, 5), radius, 0.3, tile_images=tile), full, atol=1e-5)


def test_each_unordered_pair_is_in_one_block_and_tiles_follow_the_budget():
    for n, tile in ((10, 3), (7, 7), (5, 1)):
        covered = [(a, b) for i0, i1, j0, j1 in pair_blocks(n, tile)
                   for a in range(i0, i1) for b in range(j0, j1) if a < b or (i0 != j0 and a != b)]
        assert sorted(covered) == list(itertools.combinations(range(n), 2))
    cpu = torch.device("cpu")
    assert windowed_tile_images(500, 1024, cpu, memory_budget_mb=20) == 32  # 5 x 4 bytes x M x 32^2 = 20 MiB
    assert windowed_tile_images(8, 1024, cpu, memory_budget_mb=1000) == 8
    assert windowed_tile_images(64, 4096, cpu, memory_budget_mb=256) == 32  # 57 fit: two equal tiles, not 57 + 7


def test_features_on_different_grids_are_refused_naming_both():
    a = Features([torch.zeros(2, 4, 14, 14)], torch.zeros(2, 3))
    b = Features([torch.zeros(1, 4, 16, 16)], torch.zeros(1, 3))
    with pytest.raises(ValueError, match="14x14 and 16x16"):
        Features.cat([a, b])


def test_match_radius_settings():
    assert config_from_dict(MuscConfig, {"match_radius": "auto"}).match_radius == "auto"
    with pytest.raises(ConfigError, match="match_radius"):
        config_from_dict(MuscConfig, {"match_radius": -1})
    with pytest.raises(ConfigError, match="auto_match.radii"):
        config_from_dict(MuscConfig, {"match_radius": "auto", "auto_match": {"radii": []}})


def test_score_features_with_references_uses_the_window_over_all_members():
    """musc.score_features with match_radius 1: every member scored over its N + R - 1 others inside the window."""
    n, r, degrees = 4, 2, [1, 3]
    g = torch.Generator().manual_seed(5)
    stage = torch.randn(n + r, 6, 4, 5, generator=g)
    embedding = F.normalize(torch.randn(n + r, 8, generator=g), dim=1)
    cfg = MuscConfig(aggregation_degrees=degrees, topmin_max=0.5, rscin_windows=None, match_radius=1)
    got = score_features(Features([stage[:n]], embedding[:n]), cfg, references=Features([stage[n:]], embedding[n:]))
    want = torch.stack([naive_windowed(lnamd(stage, d), (4, 5), 1, 0.5) for d in degrees]).mean(0)
    assert got.matching == MatchChoice(1)
    assert torch.allclose(got.patch_scores.flatten(1).double(), want[:n], atol=1e-5)


def _token_field(n: int, side: int, c: int, shifted: bool, seed: int = 0) -> torch.Tensor:
    """A part's features (n, C, side, side): one fixed random field of distinct tokens, plus noise;
    ``shifted``: each image's part moved by a random offset of several cells (a posed part)."""
    g = torch.Generator().manual_seed(seed)
    field = torch.randn(c, side, side, generator=g)
    images = []
    for _ in range(n):
        dy, dx = (torch.randint(3, side - 3, (2,), generator=g).tolist() if shifted else (0, 0))
        images.append(torch.roll(field, (dy, dx), dims=(1, 2)) + 0.3 * torch.randn(c, side, side, generator=g))
    return torch.stack(images)


def test_auto_chooses_a_radius_for_a_fixtured_batch_and_full_matching_for_a_posed_one():
    cfg = MuscConfig(match_radius="auto", aggregation_degrees=[1], rscin_windows=None)
    fixtured = choose_matching(cfg, _token_field(10, 12, 16, shifted=False))
    posed = choose_matching(cfg, _token_field(10, 12, 16, shifted=True))
    assert fixtured.radius == 0 and fixtured.aligned_fraction[0] > 0.95 and fixtured.sampled == 6
    assert posed.radius is None and posed.aligned_fraction[2] < cfg.auto_match.min_aligned_fraction
    # the statistic counts every ordered pair both ways: a batch whose sample is one image and its twin
    twin = _token_field(2, 6, 8, shifted=False)
    fractions, sampled = nearest_displacement_fractions(twin, [0, 1], sample=6)
    assert sampled == 2 and fractions[0] > 0.95
    # through the scorer: the batch's BatchScores carries the choice and its statistic
    stage = _token_field(8, 8, 16, shifted=False)
    result = score_features(Features([stage], F.normalize(torch.ones(8, 4), dim=1)), cfg)
    assert result.matching.radius == 0 and result.matching.as_dict()["matcher"] == "windowed"
    assert "radius 0 (auto" in result.matching.line()


def test_a_subset_whose_shards_hold_two_grids_is_refused_at_its_start_and_writes_nothing(tmp_path):
    """The job cannot know feature sizes before extraction: the subset task refuses in one line."""
    from pipeline.job.extract import shard_table
    from pipeline.job.layout import shard_uri
    from pipeline.job.plan import SubsetPlan
    from pipeline.job.subsets import score_subset
    from pipeline.storage import write_parquet

    prefix = str(tmp_path / "features")
    for shard_id, side in ((0, 4), (1, 5)):
        records = [{"uri": f"g/{shard_id}{i}.png", "group": "g", "label": None, "mask_uri": None} for i in range(2)]
        features = Features([torch.randn(2, 3, side, side)], F.normalize(torch.ones(2, 4), dim=1))
        write_parquet(shard_uri(prefix, shard_id), shard_table(records, ["", ""], features, "test"))
    result = tmp_path / "subset-00000.parquet"
    with pytest.raises(ValueError, match=r"different patch grids \(4x4 and 5x5\)"):
        score_subset(SubsetPlan("g", 0, (0, 1), 4), prefix, str(result), MuscConfig(match_radius=1))
    assert not result.exists()
