"""Metrics against scikit-learn, a direct AU-PRO implementation and hand-computed values."""

import math
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
)

from pipeline.evaluation.metrics import (
    METRIC_NAMES,
    PixelMetrics,
    category_metrics,
    format_table,
    image_metrics,
    mean_row,
    pixel_metrics,
    published_au_pro,
)


def f1_max_sklearn(labels, scores):
    """F1-max from sklearn's precision-recall curve."""
    p, r, _ = precision_recall_curve(labels, scores)
    return np.max(np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0))


def f1_max_brute(labels, scores):
    """F1-max by trying every distinct score as the threshold "score >= t"."""
    labels = np.asarray(labels).astype(bool)
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp = np.sum(pred & labels)
        best = max(best, 2 * tp / (pred.sum() + labels.sum()))
    return best


def naive_au_pro(maps, masks, thresholds, limit=0.3):
    """AU-PRO straight from the definition, at the given thresholds ("score >= t").

    Regions: 8-connected components of each mask. Curve points (FPR, mean region overlap) from the
    highest threshold down, starting at (0, 0); trapezoids segment by segment, the one crossing
    FPR = limit cut there by linear interpolation; normalised by limit.
    """
    regions = []
    for score_map, mask in zip(maps, masks):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [score_map[labelled == k] for k in range(1, n + 1)]
    normal = maps[~masks]
    points = [(0.0, 0.0)]
    for t in sorted(thresholds, reverse=True):
        points.append((np.mean(normal >= t), np.mean([np.mean(r >= t) for r in regions])))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= limit:
            break
        if x1 > limit:
            x1, y1 = limit, y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def blob_masks(n, size, rng, max_blobs=3):
    """Masks with 1..max_blobs random discs each (various sizes, sometimes touching)."""
    masks = np.zeros((n, size, size), bool)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for _ in range(rng.integers(1, max_blobs + 1)):
            cy, cx, r = rng.integers(4, size - 4), rng.integers(4, size - 4), rng.integers(1, 7)
            masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return masks


def assert_matches_sklearn(got, masks, maps, abs_tol):
    y, s = masks.ravel(), maps.ravel()
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=abs_tol)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=abs_tol)
    assert got["pixel_f1_max"] == pytest.approx(f1_max_sklearn(y, s), abs=abs_tol)


# ---------------------------------------------------------------- image metrics


@pytest.mark.parametrize("seed", range(4))
def test_image_metrics_equal_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.4 * labels, 1)  # ~14 distinct values: many mixed ties
    got = image_metrics(scores, labels)
    assert got["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert got["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert got["image_f1_max"] == pytest.approx(f1_max_sklearn(labels, scores), abs=1e-12)
    assert got["image_f1_max"] == pytest.approx(f1_max_brute(labels, scores), abs=1e-12)
    assert image_metrics(scores, labels.astype(bool)) == got


@pytest.mark.parametrize(
    "scores, labels, message",
    [
        ([0.1, 0.2], [1, 1], "only one class"),
        ([0.1, 0.2], [0, 0], "only one class"),
        ([0.1, 0.2, 0.3], [0, 1], "3 scores but 2 labels"),
        ([0.1, np.nan], [0, 1], "NaN"),
        ([0.1, 0.2], [0, 2], "0 \\(normal\\) or 1"),
    ],
)
def test_image_metrics_reject_bad_inputs(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        image_metrics(np.array(scores), np.array(labels))


# ---------------------------------------------------------------- pixel AUROC / AP / F1-max


def grid_case(rng):
    """Scores on 16 levels that sit on both bin grids of PixelMetrics((-1, 3), 64, 16).

    Level k scores -1 + (k + 0.5) / 4: exact in binary, it lands in bin (k + 0.5) * 16 = 16k + 8 of
    64 bins and in PRO bin k of 16, so no bin holds two distinct scores and binning loses nothing.
    Normal and anomalous levels overlap, so most levels hold ties between the classes.
    """
    masks = blob_masks(5, 40, rng)
    masks[4] = False  # an image with only normal pixels still counts towards the FPR
    levels = np.clip(rng.integers(0, 11, masks.shape) + rng.integers(0, 7, masks.shape) * masks, 0, 15)
    return -1 + (levels + 0.5) / 4, masks


def test_pixel_metrics_exact_when_every_bin_holds_one_distinct_score():
    maps, masks = grid_case(np.random.default_rng(1))
    acc = PixelMetrics((-1.0, 3.0), num_bins=64, pro_num_thresholds=16)
    acc.update(maps, masks)
    got = acc.compute()
    assert_matches_sklearn(got, masks, maps, abs_tol=1e-9)
    assert got["pixel_f1_max"] == pytest.approx(f1_max_brute(masks.ravel(), maps.ravel()), abs=1e-9)
    assert got["au_pro"] == pytest.approx(naive_au_pro(maps, masks, np.unique(maps)), abs=1e-9)
    # the case is not degenerate: a trapezoid AP would differ from the step-wise one
    assert 0.6 < got["pixel_auroc"] < 0.95 and 0.1 < got["au_pro"] < 0.9


def test_pixel_metrics_exact_for_8bit_maps_with_default_bins():
    """Quantised maps (0..255): distinct scores are 1/255 of the range apart, far more than a bin."""
    rng = np.random.default_rng(5)
    masks = blob_masks(4, 48, rng)
    maps = np.clip(rng.normal(90, 40, masks.shape) + 60 * masks, 0, 255).astype(np.uint8)
    got = pixel_metrics(maps, masks)
    assert_matches_sklearn(got, masks, maps, abs_tol=1e-9)
    assert got["au_pro"] == pytest.approx(naive_au_pro(maps, masks, np.unique(maps)), abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_pixel_metrics_close_to_sklearn_on_continuous_scores(seed):
    rng = np.random.default_rng(seed)
    masks = blob_masks(4, 64, rng)
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    maps[0, 0, 0] = 8.0  # an outlier stretches the range: bins get coarser where the data is
    assert_matches_sklearn(pixel_metrics(maps, masks), masks, maps, abs_tol=1e-3)


def test_scores_outside_the_range_are_clipped_into_the_end_bins():
    masks = np.array([[True, False, True, False, True, False, False, True]])
    maps = np.array([[-5.0, 0.05, 0.05, 0.95, 7.0, 0.55, 1e300, 0.45]])
    acc = PixelMetrics((0.0, 1.0), num_bins=10)
    acc.update(maps, masks)
    assert acc.normal[0] == 1 and acc.anomalous[0] == 2  # -5 ties with 0.05 in the bottom bin
    assert acc.normal[9] == 2 and acc.anomalous[9] == 1  # 7 and 1e300 tie with 0.95 in the top bin
    tied = np.array([[0.05, 0.05, 0.05, 0.95, 0.95, 0.55, 0.95, 0.45]])
    assert_matches_sklearn(acc.compute(), masks, tied, abs_tol=1e-12)


# ---------------------------------------------------------------- AU-PRO


@pytest.mark.parametrize("seed", range(2))
def test_au_pro_equals_naive_at_the_bin_edges(seed):
    """With thresholds at the PRO bin edges the binned AU-PRO is the definition, to rounding."""
    rng = np.random.default_rng(seed)
    masks = blob_masks(4, 48, rng)
    maps = rng.normal(size=masks.shape) + 1.2 * masks
    lo, hi = maps.min(), maps.max()
    acc = PixelMetrics((lo, hi), num_bins=1024, pro_num_thresholds=128)
    acc.update(maps, masks)
    edges = lo + np.arange(128) * (hi - lo) / 128
    assert acc.compute()["au_pro"] == pytest.approx(naive_au_pro(maps, masks, edges), abs=1e-9)


def test_au_pro_close_to_exact_on_continuous_scores_with_default_bins():
    """Against the naive AU-PRO over every distinct score (the exact value)."""
    rng = np.random.default_rng(7)
    masks = blob_masks(3, 32, rng)
    maps = rng.normal(size=masks.shape) + masks
    exact = naive_au_pro(maps, masks, np.unique(maps))
    assert pixel_metrics(maps, masks)["au_pro"] == pytest.approx(exact, abs=1e-3)
    coarse = pixel_metrics(maps, masks, pro_num_thresholds=2**10)["au_pro"]
    assert coarse == pytest.approx(exact, abs=5e-3)


def step_au_pro(p, limit=0.3):
    """AU-PRO of the curve (0, 0) -> (0, p) -> (1, 1): one threshold separates, the next takes all."""
    y_at_limit = p + (1 - p) * limit
    return limit * (p + y_at_limit) / 2 / limit


def test_au_pro_hand_cases():
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 1:5, 1:6] = True  # region of 20 pixels
    masks[1, 7:8, 2:4] = True  # region of 2 pixels
    perfect = masks.astype(float)
    assert pixel_metrics(perfect, masks)["au_pro"] == pytest.approx(1.0, abs=1e-12)
    # constant map: the only threshold predicts everything, so the curve is the diagonal (0,0)-(1,1):
    # area 0.3^2 / 2 up to FPR 0.3, normalised by 0.3 -> 0.15
    assert pixel_metrics(np.zeros(masks.shape), masks)["au_pro"] == pytest.approx(0.15, abs=1e-12)
    # the big region found, the small one scored like the background: PRO is the mean over regions
    # (0.5), not the fraction of anomalous pixels (20 / 22)
    big_only = perfect.copy()
    big_only[1] = 0.0
    assert pixel_metrics(big_only, masks)["au_pro"] == pytest.approx(step_au_pro(0.5), abs=1e-12)
    assert step_au_pro(0.5) == pytest.approx(0.575)


def test_au_pro_regions_are_8_connected():
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 1:3, 1:3] = True  # 4 pixels
    masks[0, 3:6, 3:6] = True  # 9 pixels, touching the first only at a corner
    maps = np.zeros(masks.shape)
    maps[0, 1:3, 1:3] = 1.0
    # one region of 13 pixels with 4 found; 4-connectivity would give two regions and PRO 0.5
    assert pixel_metrics(maps, masks)["au_pro"] == pytest.approx(step_au_pro(4 / 13), abs=1e-12)


def test_au_pro_interpolates_at_the_fpr_limit():
    # 80 normal pixels: 8 score 2, 32 score 1, 40 score 0; one 20-pixel region: 10 score 2, 10 score 1.
    # Curve: (0, 0), (0.1, 0.5) at t=2, (0.5, 1) at t=1, (1, 1) at t=0; at FPR 0.3 PRO is 0.75.
    masks = np.zeros((1, 10, 10), bool)
    masks[0, :2] = True
    maps = np.zeros(masks.shape)
    maps[0, 0] = 2.0
    maps[0, 1] = 1.0
    normal = np.array([2.0] * 8 + [1.0] * 32 + [0.0] * 40)
    maps[0, 2:] = normal.reshape(8, 10)
    area = 0.1 * 0.5 / 2 + 0.2 * (0.5 + 0.75) / 2
    assert pixel_metrics(maps, masks)["au_pro"] == pytest.approx(area / 0.3, abs=1e-12)  # 0.5
    full = 0.1 * 0.5 / 2 + 0.4 * (0.5 + 1.0) / 2 + 0.5 * 1.0
    assert pixel_metrics(maps, masks, pro_fpr_limit=1.0)["au_pro"] == pytest.approx(full, abs=1e-12)


def test_constant_map_gives_the_tied_score_values():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 2:5, 2:6] = True
    got = pixel_metrics(np.full(masks.shape, 3.0), masks)
    prevalence = masks.mean()
    assert got["pixel_auroc"] == pytest.approx(0.5)
    assert got["pixel_ap"] == pytest.approx(prevalence)
    assert got["pixel_f1_max"] == pytest.approx(2 * prevalence / (1 + prevalence))
    assert got["au_pro"] == pytest.approx(0.15)


# ---------------------------------------------------------------- streaming and memory


def test_streaming_updates_give_identical_results():
    rng = np.random.default_rng(3)
    masks = blob_masks(7, 32, rng)
    maps = rng.random(masks.shape) + masks
    one = PixelMetrics((0.0, 2.0), pro_num_thresholds=2**12)
    one.update(maps, masks)
    per_image = PixelMetrics((0.0, 2.0), pro_num_thresholds=2**12)
    for score_map, mask in zip(maps, masks):
        per_image.update(score_map, mask.astype(np.uint8))  # (H, W) and 0/1 masks
    uneven = PixelMetrics((0.0, 2.0), pro_num_thresholds=2**12)
    for start, stop in [(0, 1), (1, 4), (4, 7)]:
        uneven.update(maps[start:stop], masks[start:stop])
    expected = one.compute()
    assert per_image.compute() == expected and uneven.compute() == expected
    assert one.num_regions == per_image.num_regions == uneven.num_regions


def test_memory_stays_bounded_for_1e8_pixels():
    rng = np.random.default_rng(4)
    mask = np.zeros((1000, 1000), bool)
    mask[100:200, 300:420] = True
    mask[600:610, 50:60] = True
    acc = PixelMetrics((0.0, 1.3))
    start = time.perf_counter()
    tracemalloc.start()
    try:
        for _ in range(100):  # 1e8 pixels, generated one 1000x1000 map at a time
            score_map = rng.random((1000, 1000), dtype=np.float32)
            score_map[mask] += 0.3
            acc.update(score_map, mask)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 30
    assert peak < 64 * 2**20, peak / 2**20  # storing the 1e8 float32 scores alone takes 381 MiB
    assert acc.normal.sum() + acc.anomalous.sum() == 10**8 and acc.num_regions == 200
    got = acc.compute()
    # normal ~ U(0, 1), anomalous ~ U(0.3, 1.3): AUROC = P(A > N) = 1 - 0.7^2 / 2
    assert got["pixel_auroc"] == pytest.approx(1 - 0.7**2 / 2, abs=2e-3)


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "maps, masks, message",
    [
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 5), bool), "differ in shape"),
        (np.full((4, 4), np.nan), np.zeros((4, 4), bool), "NaN"),
        (np.full((4, 4), np.inf), np.zeros((4, 4), bool), "infinity"),
        (np.zeros((4, 4)), np.full((4, 4), 255, np.uint8), "binary"),
        (np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4), bool), "\\(B, H, W\\)"),
    ],
)
def test_bad_pixel_inputs_raise(maps, masks, message):
    with pytest.raises(ValueError, match=message):
        PixelMetrics((0, 1)).update(maps, masks)
    if maps.ndim < 4:
        with pytest.raises(ValueError, match=message):
            pixel_metrics(maps, masks)


def test_compute_needs_both_normal_and_anomalous_pixels():
    acc = PixelMetrics((0, 1))
    acc.update(np.zeros((4, 4)), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="no anomalous pixels"):
        acc.compute()
    acc = PixelMetrics((0, 1))
    acc.update(np.zeros((4, 4)), np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="no normal pixels"):
        acc.compute()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"score_range": (1.0, 1.0)}, "low < high"),
        ({"score_range": (0.0, np.nan)}, "finite"),
        ({"score_range": (0.0, 1.0), "num_bins": 100, "pro_num_thresholds": 30}, "must divide"),
        ({"score_range": (0.0, 1.0), "pro_fpr_limit": 0.0}, "pro_fpr_limit"),
    ],
)
def test_bad_parameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PixelMetrics(**kwargs)


# ---------------------------------------------------------------- category rows and the table


def test_category_metrics_has_all_seven_and_their_mean():
    rng = np.random.default_rng(6)
    masks = blob_masks(6, 24, rng)
    masks[:2] = False
    labels = masks.any(axis=(1, 2)).astype(int)
    maps = rng.random(masks.shape) + masks
    scores = maps.max(axis=(1, 2)) + rng.normal(0, 0.3, 6)
    row = category_metrics(scores, labels, maps, masks)
    assert list(row) == [*METRIC_NAMES, "mad"]
    assert row == {**image_metrics(scores, labels), **pixel_metrics(maps, masks), "mad": row["mad"]}
    assert row["mad"] == pytest.approx(np.mean([row[m] for m in METRIC_NAMES]))


def test_category_without_anomalous_pixels_has_nan_pixel_metrics():
    scores, labels = np.array([0.1, 0.9, 0.2, 0.7]), np.array([0, 1, 0, 1])
    row = category_metrics(scores, labels, np.zeros((4, 8, 8)), np.zeros((4, 8, 8), bool))
    assert all(math.isnan(row[m]) for m in METRIC_NAMES[3:])
    assert row["mad"] == pytest.approx(np.mean([row["image_auroc"], row["image_ap"], row["image_f1_max"]]))


def test_mean_row_ignores_nan():
    per_category = {
        "a": {"image_auroc": 0.5, "pixel_auroc": float("nan"), "au_pro": float("nan")},
        "b": {"image_auroc": 1.0, "pixel_auroc": 0.8, "au_pro": float("nan")},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" warning for the all-NaN column
        mean = mean_row(per_category)
    assert mean["image_auroc"] == pytest.approx(0.75)
    assert mean["pixel_auroc"] == pytest.approx(0.8)
    assert math.isnan(mean["au_pro"])


def test_format_table_has_every_category_and_the_mean_row():
    full = dict(zip([*METRIC_NAMES, "mad"], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.6]))
    nan_pixels = {**full, **{m: float("nan") for m in METRIC_NAMES[3:]}, "image_auroc": 1.0, "mad": 0.8333}
    table = format_table({"bottle": full, "screw_without_masks": nan_pixels})
    lines = table.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1  # fixed width
    header, bottle, screw, mean = (line.split() for line in lines)
    assert header == ["category", *METRIC_NAMES, "mad"]
    assert bottle == ["bottle", "90.0", "80.0", "70.0", "60.0", "50.0", "40.0", "30.0", "60.0"]
    assert screw == ["screw_without_masks", "100.0", "80.0", "70.0", "n/a", "n/a", "n/a", "n/a", "83.3"]
    assert mean == ["mean", "95.0", "80.0", "70.0", "60.0", "50.0", "40.0", "30.0", "71.7"]


def test_pixels_outside_valid_are_in_no_pixel_metric():
    """Padding left out (``valid`` False) gives exactly the metrics of the maps cropped to the photo,
    for the histogram metrics and the published AU-PRO alike; the padding's scores do not matter."""
    rng = np.random.default_rng(3)
    maps = rng.random((4, 32, 32))
    masks = np.zeros((4, 32, 32), dtype=bool)
    masks[1, 10:14, 12:18] = masks[3, 20:25, 8:11] = True
    maps[masks] += 0.6
    valid = np.zeros_like(masks)
    valid[:, 6:28, :] = True  # a 2:1-ish photo padded above and below
    maps[~valid] = 5.0  # padding that would dominate every metric if it counted
    cropped = pixel_metrics(maps[:, 6:28], masks[:, 6:28])
    assert pixel_metrics(maps, masks, valid) == pytest.approx(cropped, abs=1e-9)
    assert published_au_pro(maps, masks, valid=valid) == pytest.approx(published_au_pro(maps[:, 6:28], masks[:, 6:28]))
    scored = category_metrics(np.arange(4.0), np.array([0, 1, 0, 1]), maps, masks, "published", valid)
    assert scored["pixel_auroc"] == pytest.approx(cropped["pixel_auroc"])
