"""The evaluation protocols pinned on tiny hand-computed fixtures (no published code needed).

Each of the four points where the published MuSc code's evaluation differs from this project's gets
a fixture on which the two choices give known, different values, worked out by hand (the working
is in each test) or by a naive loop written here: map upsampling, MuSc's image score, mask
resizing and AU-PRO integration. The last tests run the evaluation command under both protocols.
"""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from pipeline.data.benchmarks import Sample, load_mask
from pipeline.data.images import resize_grey_mask
from pipeline.engine.features import Features
from pipeline.engine.musc import score_features
from pipeline.engine.timing import StageTimes
from pipeline.evaluation.benchmark import run_evaluation
from pipeline.evaluation.metrics import category_metrics, pixel_metrics, published_au_pro
from pipeline.evaluation.protocol import PROTOCOLS
from pipeline.settings import ConfigError, EvalConfig, MuscConfig, config_from_dict

PAPER, PROJECT = PROTOCOLS["paper"], PROTOCOLS["project"]


# 1. Upsampling. A 2x2 grid [[0, 1], [2, 3]] is the plane v = 2 y + x in grid coordinates, so every
# bilinear sample is 2 sy + sx at the source coordinates (sy, sx) of the output pixel. Upsampling to
# 4 pixels, align_corners=True samples s = i (2 - 1) / (4 - 1) = 0, 1/3, 2/3, 1; align_corners=False
# samples s = (i + 0.5) 2 / 4 - 0.5 = -1/4, 1/4, 3/4, 5/4, clamped to 0, 1/4, 3/4, 1.
PLANE = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
PLANE_PAPER = np.array([[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]) / 3
PLANE_PROJECT = np.array([[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10], [8, 9, 11, 12]]) / 4


def test_paper_upsamples_with_align_corners_and_never_smooths():
    np.testing.assert_allclose(PAPER.maps(PLANE, 4, sigma=4.0)[0].numpy(), PLANE_PAPER, atol=1e-6)
    np.testing.assert_allclose(PROJECT.maps(PLANE, 4, sigma=0.0)[0].numpy(), PLANE_PROJECT, atol=1e-6)
    # the project smooths with the scorer's sigma: the corners are pulled towards the middle
    smoothed = PROJECT.maps(PLANE, 4, sigma=4.0)[0].numpy()
    assert smoothed[0, 0] > PLANE_PROJECT[0, 0] and smoothed[3, 3] < PLANE_PROJECT[3, 3]


# 2. Image score. A 3x3 grid with 1 at the centre and 0 elsewhere, upsampled to 4 pixels: with
# align_corners=True the samples are s = 0, 2/3, 4/3, 2, none on the centre (1); the bilinear weight
# of the centre at (2/3, 2/3) is (1 - 1/3)^2 = 4/9, the map's max. The grid's max is 1.
# (align_corners=False samples 0, 5/8, 11/8, 2: its map peaks at (1 - 3/8)^2 = 25/64.)
PEAK = torch.zeros(1, 3, 3)
PEAK[0, 1, 1] = 1.0


def test_paper_image_score_is_the_max_of_its_map_not_of_the_grid():
    assert PAPER.image_score(4, sigma=4.0)(PEAK).item() == pytest.approx(4 / 9, abs=1e-7)
    assert PROJECT.image_score(4, sigma=4.0) is None  # the scorer's own: the max patch score, 1
    assert PROJECT.maps(PEAK, 4, sigma=0.0).max().item() == pytest.approx(25 / 64, abs=1e-7)


def test_musc_rescores_the_image_score_it_is_given():
    torch.manual_seed(0)
    stages = [torch.nn.functional.normalize(torch.randn(5, 8, 3, 3), dim=1) for _ in range(2)]
    features = Features(stages, torch.nn.functional.normalize(torch.randn(5, 16), dim=1))
    cfg = MuscConfig(aggregation_degrees=[1], rscin_windows=None)
    timings = StageTimes()
    result = score_features(features, cfg, image_score=PAPER.image_score(4, 4.0), timings=timings)
    expected = PAPER.maps(result.patch_scores, 4, 0.0).flatten(1).amax(dim=1)
    assert torch.equal(result.image_scores_raw, expected)
    grid_max = result.patch_scores.flatten(1).amax(dim=1)  # reached by the map only at a corner patch
    assert (result.image_scores_raw <= grid_max).all() and (result.image_scores_raw < grid_max).any()
    assert set(timings.seconds) == {"aggregate", "msm", "maps", "rescoring"}


# 3. Masks. An 8x8 mask whose top-left 4x4 block is 255, brought to 4x4. Nearest neighbour samples
# source pixels 1, 3, 5, 7: a 2x2 block (4 of 16 pixels, the defect's true quarter). PIL's bilinear
# filter shrinking by 2 has support 2: output 0 averages source pixels 0, 1, 2 (all 255), output 1
# sources 1-4 with weights 1/8, 3/8, 3/8, 1/8 (pixel 4 is 0: 255 * 7/8 = 223), output 2 sources
# 3-6 (255 / 8 = 32), output 3 sources 5-7 (0). Rows the same, so the grey result is
#   255 223 32 0 / 223 195 28 0 / 32 28 4 0 / 0 0 0 0
# and only one pixel stays 255 (MVTec AD: eroded), while nine are above 0 (VisA: dilated).
BLOCK = np.zeros((8, 8), dtype=np.uint8)
BLOCK[:4, :4] = 255


def corner(side: int) -> np.ndarray:
    out = np.zeros((4, 4), dtype=bool)
    out[:side, :side] = True
    return out


def test_paper_masks_are_bilinear_kept_at_255_or_above_0(tmp_path):
    np.testing.assert_array_equal(resize_grey_mask(BLOCK, 4, "bilinear_full"), corner(1))
    np.testing.assert_array_equal(resize_grey_mask(BLOCK, 4, "bilinear_any"), corner(3))
    path = tmp_path / "mask.png"
    Image.fromarray(BLOCK).save(path)
    sample = Sample("unused.png", "c", 1, "x", str(path))
    assert PAPER.mask_resampling("mvtec") == "bilinear_full" and PAPER.mask_resampling("visa") == "bilinear_any"
    assert PROJECT.mask_resampling("mvtec") == PROJECT.mask_resampling("visa") == "nearest"
    np.testing.assert_array_equal(load_mask(sample, 4, resampling=PAPER.mask_resampling("mvtec")), corner(1))
    np.testing.assert_array_equal(load_mask(sample, 4, resampling=PAPER.mask_resampling("visa")), corner(3))
    np.testing.assert_array_equal(load_mask(sample, 4, resampling=PROJECT.mask_resampling("mvtec")), corner(2))
    # the published code reads stored values: a 0/1 mask never reaches 255, so it is empty there
    Image.fromarray(BLOCK // 255).save(path)
    assert not load_mask(sample, 4, resampling="bilinear_full").any()
    np.testing.assert_array_equal(load_mask(sample, 4), corner(2))


# 4. AU-PRO. One 3x4 image: a 2-pixel region scoring 1.0 and 0.5001; 10 normal pixels scoring
# 0.6001, 0.2001, 0.1001 and seven 0.0. Curve points (FPR, PRO) from the top: (0, 1/2) at 1.0,
# (0.1, 1/2) at 0.6001, (0.1, 1) at 0.5001, (0.2, 1) at 0.2001, (0.3, 1) at 0.1001.
# Project: from (0, 0), area to FPR 0.3 = 0.1 * 1/2 + 0.1 * 1 + 0.1 * 1 = 0.25, / 0.3 = 5/6.
# Paper: thresholds k / 200 for k = 0..199, a pixel counts when strictly above. FPR is 0.3 for
# k <= 20 (dropped: not < 0.3), 0.2 for k = 21..40, 0.1 for k = 41..120, 0 for k >= 121; PRO is 1
# for k <= 100, 1/2 above. Rescaled FPRs 1, 1/2, 0: the steps 1 -> 1/2 at PRO 1 and 1/2 -> 0 at
# PRO 1/2 give 1/2 + 1/4 = 3/4.
def au_pro_fixture() -> tuple[np.ndarray, np.ndarray]:
    maps, masks = np.zeros((1, 3, 4)), np.zeros((1, 3, 4), dtype=bool)
    maps[0, 0, :2], masks[0, 0, :2] = (1.0, 0.5001), True
    maps[0, 2, :3] = (0.6001, 0.2001, 0.1001)
    return maps, masks


def test_paper_au_pro_integrates_200_thresholds_with_rescaled_fpr():
    maps, masks = au_pro_fixture()
    assert published_au_pro(maps, masks) == pytest.approx(0.75, abs=1e-12)
    assert pixel_metrics(maps, masks)["au_pro"] == pytest.approx(5 / 6, abs=1e-12)
    scores, labels = np.array([0.0, 1.0]), np.array([0, 1])
    both = np.concatenate([maps, maps]), np.concatenate([masks, masks])
    assert category_metrics(scores, labels, *both, au_pro=PAPER.au_pro)["au_pro"] == pytest.approx(0.75, abs=1e-12)
    assert category_metrics(scores, labels, *both, au_pro=PROJECT.au_pro)["au_pro"] == pytest.approx(5 / 6, abs=1e-12)


def naive_published_au_pro(maps: np.ndarray, masks: np.ndarray) -> float:
    """The published integration threshold by threshold: region by region PRO, FPR, the points
    with FPR < 0.3, FPRs rescaled to [0, 1], trapezoids in threshold order."""
    lo, hi = float(maps.min()), float(maps.max())  # the published maps are float64
    regions = []
    for score_map, mask in zip(maps, masks):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [score_map[labelled == k] for k in range(1, n + 1)]
    normal = maps[~masks]
    points = []
    for t in np.arange(lo, hi, (hi - lo) / 200):
        fpr = np.sum(normal > t) / normal.size
        if fpr < 0.3:
            points.append((fpr, np.mean([np.sum(r > t) / r.size for r in regions])))
    xs = [p[0] for p in points]
    lo_x, hi_x = min(xs), max(xs)
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        area += (x0 - x1) / (hi_x - lo_x) * (y0 + y1) / 2
    return area


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_published_au_pro_equals_a_threshold_by_threshold_loop(seed):
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 24, 24), dtype=bool)
    masks[0, 3:9, 4:12] = masks[0, 15:18, 15:22] = masks[1, 10:20, 2:5] = True
    maps = (rng.random(masks.shape) + 0.8 * masks).astype(np.float32)
    maps = ndimage.uniform_filter(maps, size=(1, 3, 3))
    assert published_au_pro(maps, masks) == pytest.approx(naive_published_au_pro(maps, masks), abs=1e-12)


def test_published_au_pro_is_nan_without_an_fpr_range():
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = True
    assert np.isnan(published_au_pro(np.zeros((1, 4, 4)), masks))


def demo(tmp_path, protocol: str, **extra) -> dict:
    return {
        "dataset": {"root": str(tmp_path / "data"), "layout": "mvtec", "categories": ["weave"]},
        "synthetic": {"enabled": True, "categories": ["weave"], "n_test_good": 4, "n_test_defect": 4,
                      "image_size": 128, "seed": 0},
        "backbone": {"family": "timm_cnn", "name": "resnet18", "random_init": True, "image_size": 64},
        "output_dir": str(tmp_path / protocol),
        "protocol": protocol,
        **extra,
    }


def test_evaluation_under_each_protocol_says_which_and_times_every_stage(tmp_path, capsys):
    results = {p: run_evaluation(config_from_dict(EvalConfig, demo(tmp_path, p)))["weave"] for p in PROTOCOLS}
    printed = capsys.readouterr().err
    paper, project = results["paper"], results["project"]
    n = len(paper.samples)
    # paper: the raw image score is its map's max; project: the grid's max, above the smoothed map's
    np.testing.assert_array_equal(paper.image_scores_raw, paper.maps.reshape(n, -1).max(axis=1))
    assert (project.image_scores_raw > project.maps.reshape(n, -1).max(axis=1)).all()
    masks = np.stack([load_mask(s, 64, resampling="bilinear_full") for s in paper.samples])
    assert paper.metrics["au_pro"] == published_au_pro(paper.maps, masks)
    assert masks.sum() < np.stack([load_mask(s, 64) for s in paper.samples]).sum()
    for name, result in results.items():
        out = tmp_path / name
        assert f"| protocol {name}\nprotocol {name}: " in (out / "metrics.txt").read_text()
        rows = list(csv.DictReader((out / "metrics.csv").open()))
        assert {row["protocol"] for row in rows} == {name}
        summary = json.loads((out / "metrics.json").read_text())
        assert summary["protocol"] == name
        stages = summary["stage_seconds"]["weave"]
        assert set(stages) == {"read", "extract", "aggregate", "msm", "maps", "rescoring", "metrics"}
        assert summary["seconds"]["weave"] == pytest.approx(result.seconds)
        assert sum(stages.values()) <= result.seconds
    assert printed.count("  mutual scoring ") == 2 and printed.count("  stages: read ") == 2


@pytest.mark.parametrize("extra, why", [
    ({"scorer": "patchead"}, "needs scorer: musc"),
    ({"musc": {"align": True}}, "has no alignment"),
    ({"musc": {"aggregation": "snamd"}}, "LNAMD only; set musc.aggregation: lnamd"),
    ({"musc": {"rescoring": "rscon"}}, "RsCIN only; set musc.rescoring: rscin"),
    ({"musc": {"match_radius": 1}}, "full matching only; set musc.match_radius: null"),
    ({"musc": {"match_radius": "auto"}}, "full matching only; set musc.match_radius: null"),
])
def test_paper_protocol_refuses_what_the_published_code_does_not_do(tmp_path, extra, why):
    with pytest.raises(ConfigError, match=f"config key 'protocol': .*{why}"):
        config_from_dict(EvalConfig, demo(tmp_path, "paper", **extra))
