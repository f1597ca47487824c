"""The cost model prices a setting: passes per stage and compared patches per patch, counted by hand."""

from pathlib import Path

import pytest

from pipeline.job.cost import compared_pairs, msm_flops, night_cost, vit_flops
from pipeline.settings import JobConfig, load_config, with_values

NIGHTLY = Path(__file__).resolve().parents[1] / "conf" / "nightly.yaml"


@pytest.fixture(scope="module")
def nightly() -> JobConfig:
    return load_config(NIGHTLY, JobConfig, ["inputs.uris=[s3://b/x/]"])


def test_compared_pairs_count_clipped_windows():
    # 3x3 grid, r=1: corners see 2x2 = 4 cells, edges 2x3 = 6, the centre 9: 4*4 + 4*6 + 9 = 49
    assert compared_pairs((3, 3), 1) == 49
    assert compared_pairs((3, 3), 0) == 9  # the same cell only
    assert compared_pairs((3, 3), None) == 81  # every patch with every patch
    assert compared_pairs((3, 3), 2) == 81  # a window covering the grid is full matching
    # 4x2 grid, r=1: along the 4 rows 2+3+3+2 = 10, along the 2 columns 2+2 = 4
    assert compared_pairs((4, 2), 1) == 40
    # 37x37 interior windows (35 positions of 3 per axis) plus clipped borders: (35*3 + 2*2)^2
    assert compared_pairs((37, 37), 1) == 109 ** 2


def test_msm_flops_scale_with_pairs_channels_passes_and_window():
    # 4 images: 6 pairs; 2 stages of 8 and 16 channels; 3 passes; full 2x2 grid: 16 compared pairs
    assert msm_flops(4, (2, 2), [8, 16], 3, None) == 6 * 2 * 16 * 24 * 3
    assert msm_flops(4, (3, 3), [8], 1, 1) == 6 * 2 * 49 * 8


def test_the_2024_method_keeps_its_price_and_the_default_prices_one_pass_per_stage(nightly):
    paper = night_cost(with_values(nightly, {"musc.aggregation": "lnamd", "musc.match_radius": None}))
    assert (paper.grid, paper.width, paper.stages, paper.passes, paper.radius) == (37, 1024, 4, 3, None)
    assert paper.msm_flops == pytest.approx(199 / 2 * 2 * 1369**2 * 1024 * 4 * 3)
    assert paper.extract_flops == vit_flops(1024, 24, 1370, 14, 4.0)
    assert paper.gpu_hours(1e6) == pytest.approx(3.29, abs=0.01)  # the cost before issue 21
    default = night_cost(nightly)  # snamd, match_radius auto: priced as full matching, its upper bound
    assert (default.passes, default.radius) == (1, None)
    assert default.msm_flops == pytest.approx(paper.msm_flops / 3)
    assert default.gpu_hours(1e6) == pytest.approx(1.57, abs=0.01)


def test_a_radius_prices_only_its_windows(nightly):
    full, windowed = night_cost(nightly), night_cost(with_values(nightly, {"musc.match_radius": 1}))
    assert windowed.radius == 1
    assert windowed.msm_flops / full.msm_flops == pytest.approx(109**2 / 1369**2)
    assert windowed.extract_flops == full.extract_flops
    assert windowed.gpu_hours(1e6) == pytest.approx(full.extract_seconds * 1e6 / 3600 + 1e6 / 3600 *
                                                    full.msm_seconds * 109**2 / 1369**2)
    assert windowed.gpu_hours(1e6) == pytest.approx(0.72, abs=0.01)  # extraction is then nearly all of it
