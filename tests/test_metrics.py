"""Metrics against scikit-learn and against a direct AU-PRO implementation."""

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from pipeline.metrics import (
    PixelMetrics, category_metrics, format_table, image_metrics, mean_row, pixel_metrics,
)


def f1_max_sklearn(labels, scores):
    p, r, _ = precision_recall_curve(labels, scores)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0)
    return f1.max()


def blob_masks(n, size, rng):
    masks = np.zeros((n, size, size), bool)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.integers(5, size - 5), rng.integers(5, size - 5), rng.integers(2, 7)
            masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return masks


def naive_au_pro(maps, masks, limit=0.3):
    """Direct definition: every distinct score is a threshold; per-region overlap; trapezoid to `limit`."""
    regions = []
    for m, g in zip(maps, masks):
        lab, n = ndimage.label(g, structure=np.ones((3, 3)))
        regions += [m[lab == k] for k in range(1, n + 1)]
    normal = maps[~masks]
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        fprs.append((normal >= t).mean())
        pros.append(np.mean([(r >= t).mean() for r in regions]))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs <= limit
    x, y = fprs[keep], pros[keep]
    if x[-1] < limit:
        j = np.argmax(fprs > limit)
        y = np.append(y, y[-1] + (pros[j] - y[-1]) * (limit - x[-1]) / (fprs[j] - x[-1]))
        x = np.append(x, limit)
    return np.trapezoid(y, x) / limit


def test_image_metrics_equal_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.4 * labels, 1)  # many ties
    got = image_metrics(scores, labels)
    assert got["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert got["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert got["image_f1_max"] == pytest.approx(f1_max_sklearn(labels, scores), abs=1e-12)


def test_pixel_metrics_exact_when_scores_lie_on_the_bin_grid():
    rng = np.random.default_rng(1)
    masks = blob_masks(4, 40, rng)
    # 50 distinct levels on a 50-bin grid: bin i holds exactly score i, nothing is merged
    levels = rng.integers(0, 50, masks.shape) + 20 * masks
    maps = np.clip(levels, 0, 49).astype(np.float64)
    acc = PixelMetrics((0.0, 50.0), num_bins=50)
    acc.update(maps, masks)
    got = acc.compute()
    y, s = masks.ravel(), maps.ravel()
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert got["pixel_f1_max"] == pytest.approx(f1_max_sklearn(y, s), abs=1e-9)
    assert got["au_pro"] == pytest.approx(naive_au_pro(maps, masks), abs=1e-9)


def test_pixel_metrics_close_to_sklearn_on_continuous_scores():
    rng = np.random.default_rng(2)
    masks = blob_masks(5, 64, rng)
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    got = pixel_metrics(maps, masks)
    y, s = masks.ravel(), maps.ravel()
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-3)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-3)
    assert got["pixel_f1_max"] == pytest.approx(f1_max_sklearn(y, s), abs=1e-3)
    small = blob_masks(2, 24, rng)
    small_maps = rng.normal(size=small.shape) + small
    assert pixel_metrics(small_maps, small)["au_pro"] == pytest.approx(naive_au_pro(small_maps, small), abs=2e-3)


def test_au_pro_hand_cases():
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 2:4, 2:4] = True
    masks[0, 7:9, 6:9] = True
    perfect = masks.astype(float)
    assert pixel_metrics(perfect, masks)["au_pro"] == pytest.approx(1.0)
    # constant map: one threshold predicts everything (FPR 1, PRO 1); the curve from (0,0) to (1,1)
    # is the diagonal, whose area up to 0.3 is 0.3^2/2, normalised by 0.3 -> 0.15
    assert pixel_metrics(np.zeros((1, 10, 10)), masks)["au_pro"] == pytest.approx(0.15)
    # one region found perfectly, the other scored like the background: PRO jumps to 0.5 at FPR 0
    half = masks.astype(float)
    half[0, 7:9, 6:9] = 0.0
    assert pixel_metrics(half, masks)["au_pro"] == pytest.approx((0.5 * 0.3 + 0.5 * 0.3 * 0.3 / 2) / 0.3)


def test_streaming_equals_one_update():
    rng = np.random.default_rng(3)
    masks = blob_masks(6, 32, rng)
    maps = rng.random(masks.shape) + masks
    one = PixelMetrics((0.0, 2.0))
    one.update(maps, masks)
    many = PixelMetrics((0.0, 2.0))
    for m, g in zip(maps, masks):
        many.update(m, g)
    assert one.compute() == many.compute()


def test_memory_stays_bounded_for_1e8_pixels():
    rng = np.random.default_rng(4)
    acc = PixelMetrics((0.0, 1.0))
    mask = np.zeros((1000, 1000), bool)
    mask[100:200, 300:420] = True
    tracemalloc.start()
    for _ in range(100):  # 1e8 pixels, one 1000x1000 map at a time
        acc.update(rng.random((1000, 1000), dtype=np.float32), mask)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 100 * 2**20  # storing 1e8 float32 pixels would take 400 MB
    assert acc.normal.sum() + acc.anomalous.sum() == 10**8
    assert acc.compute()["pixel_auroc"] == pytest.approx(0.5, abs=0.01)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in shape"):
        PixelMetrics((0, 1)).update(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), bool))
    with pytest.raises(ValueError, match="NaN"):
        PixelMetrics((0, 1)).update(np.full((4, 4), np.nan), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="binary"):
        PixelMetrics((0, 1)).update(np.zeros((4, 4)), np.full((4, 4), 3))
    with pytest.raises(ValueError, match="one class"):
        image_metrics(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="no anomalous pixels"):
        acc = PixelMetrics((0, 1))
        acc.update(np.zeros((4, 4)), np.zeros((4, 4), bool))
        acc.compute()


def test_category_without_masks_and_table():
    scores, labels = np.array([0.1, 0.9, 0.2, 0.8]), np.array([0, 1, 0, 1])
    no_masks = category_metrics(scores, labels, np.zeros((4, 8, 8)), np.zeros((4, 8, 8), bool))
    assert np.isnan(no_masks["pixel_auroc"]) and no_masks["mad"] == pytest.approx(1.0)
    masks = np.zeros((4, 8, 8), bool)
    masks[1, 2:4, 2:4] = True
    with_masks = category_metrics(scores, labels, masks.astype(float), masks)
    assert with_masks["pixel_auroc"] == pytest.approx(1.0)
    mean = mean_row({"a": no_masks, "b": with_masks})
    assert mean["pixel_auroc"] == pytest.approx(1.0)  # NaN of "a" ignored
    table = format_table({"a": no_masks, "b": with_masks})
    assert "n/a" in table and table.splitlines()[-1].startswith("mean")
    assert len(table.splitlines()) == 4
