"""Anomaly-detection metrics shared by every detector: image level, pixel level, AU-PRO and mAD.

Image metrics are exact (scikit-learn): there is one score per image, so sorting them is cheap.

Pixel metrics see ~1e8 pixels on a full benchmark, so :class:`PixelMetrics` never sorts or stores
pixels. It keeps integer histograms of normal and anomalous pixel scores over ``num_bins``
equal-width bins and evaluates every metric with thresholds at the bin edges ("score >= edge"). A
bin that holds several distinct scores acts like one tied score, which is how scikit-learn treats
ties, so the results equal scikit-learn's exactly when no bin holds two distinct scores and differ
by O(1 / num_bins) otherwise.

AU-PRO follows the MVTec AD reference: ground-truth regions are the 8-connected components of each
mask image (``scipy.ndimage.label`` with a 3x3 structure of ones); PRO(t) is the mean over all
regions of the fraction of the region's pixels scoring >= t; FPR(t) is the fraction of normal
pixels (over all images) scoring >= t; the PRO-over-FPR curve starts at (0, 0), is integrated with
the trapezoid rule up to FPR = ``pro_fpr_limit`` (interpolated there) and divided by the limit so
that a perfect detector scores 1.0.

Per-region histograms would cost regions x bins memory. They are only ever used through their
normalised sum, so one float64 histogram replaces them: PRO(t) = sum over anomalous pixels scoring
>= t of 1 / (size of the pixel's region), divided by the number of regions. Memory is O(num_bins)
whatever the number of regions, and the curve is the same as with per-region histograms.

``published_au_pro`` integrates AU-PRO as the published MuSc code does (the evaluation's paper
protocol): 200 fixed thresholds, no cut at the limit, the kept FPRs stretched to [0, 1].
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

METRIC_NAMES: tuple[str, ...] = (
    "image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "au_pro",
)
PIXEL_METRIC_NAMES: tuple[str, ...] = METRIC_NAMES[3:]
TABLE_COLUMNS: tuple[str, ...] = (*METRIC_NAMES, "mad")
# how AU-PRO is integrated: PixelMetrics' histogram curve, or published_au_pro
AuProRule = Literal["histogram", "published"]

# 8-connectivity within an image, as the MVTec AD reference evaluation labels regions
REGION_STRUCTURE = np.ones((3, 3), dtype=bool)
# pixels per PixelMetrics.update() call in pixel_metrics(): bounds its temporaries (~70 MB)
_CHUNK_PIXELS = 2**22


def _f1_max(precision: np.ndarray, recall: np.ndarray) -> float:
    """Best F1 over the thresholds; points with precision + recall == 0 count as F1 = 0."""
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(denom.shape), where=denom > 0)
    return float(f1.max())


def image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Image AUROC, AP and F1-max as fractions in [0, 1]; ``labels`` are 1 for anomalous images."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.size != labels.size:
        raise ValueError(f"image metrics got {scores.size} scores but {labels.size} labels")
    if not np.isfinite(scores).all():
        raise ValueError("image scores contain NaN or infinity")
    classes = np.unique(labels)
    if not np.isin(classes, (0, 1)).all():
        raise ValueError(f"image labels must be 0 (normal) or 1 (anomalous), got values {classes[:10]}")
    if classes.size != 2:
        raise ValueError("image metrics need normal and anomalous images, but the labels hold only one class")
    precision, recall, _ = precision_recall_curve(labels, scores)
    return {
        "image_auroc": float(roc_auc_score(labels, scores)),
        "image_ap": float(average_precision_score(labels, scores)),
        "image_f1_max": _f1_max(precision, recall),
    }


def _validated(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, H, W) maps and bool masks, or ValueError naming what is wrong with the input."""
    maps, masks = np.asarray(maps), np.asarray(masks)
    if maps.shape != masks.shape:
        raise ValueError(f"anomaly maps {maps.shape} and masks {masks.shape} differ in shape")
    if maps.ndim == 2:
        maps, masks = maps[None], masks[None]
    if maps.ndim != 3:
        raise ValueError(f"anomaly maps must be (H, W) or (B, H, W), got shape {maps.shape}")
    if maps.dtype.kind not in "biuf":
        raise ValueError(f"anomaly maps must be real numbers, got dtype {maps.dtype}")
    if not np.isfinite(maps).all():
        raise ValueError("anomaly maps contain NaN or infinity")
    if masks.dtype != bool:
        if masks.dtype.kind not in "biuf" or not ((masks == 0) | (masks == 1)).all():
            raise ValueError("masks must be binary: bool or 0/1 values")
        masks = masks != 0
    return maps, masks


class PixelMetrics:
    """Streaming, binned pixel-level metrics: bounded memory for 1e8+ pixels.

    ``num_bins`` (default 2**16) equal-width bins over ``score_range`` hold the pixel scores; scores
    outside the range are clipped into the end bins. Memory is two int64 histograms plus one float64
    histogram (~1.5 MB by default), independent of the number of pixels and regions.

    AU-PRO uses ``pro_num_thresholds`` thresholds, which must divide ``num_bins`` so that they are a
    subset of the pixel thresholds (edges of groups of ``num_bins // pro_num_thresholds`` bins) and
    the FPR comes from the same normal-pixel histogram. The default (None) uses every bin edge:
    with the weighted histogram above, resolution costs nothing, so there is no reason to coarsen;
    a smaller value reproduces evaluations that use a fixed number of PRO thresholds.
    """

    def __init__(
        self,
        score_range: tuple[float, float],
        num_bins: int = 2**16,
        pro_num_thresholds: int | None = None,
        pro_fpr_limit: float = 0.3,
    ) -> None:
        lo, hi = float(score_range[0]), float(score_range[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"score_range must be finite with low < high, got {score_range}")
        if num_bins < 1:
            raise ValueError(f"num_bins must be positive, got {num_bins}")
        pro_num_thresholds = num_bins if pro_num_thresholds is None else pro_num_thresholds
        if pro_num_thresholds < 1 or num_bins % pro_num_thresholds:
            raise ValueError(f"pro_num_thresholds ({pro_num_thresholds}) must divide num_bins ({num_bins})")
        if not 0 < pro_fpr_limit <= 1:
            raise ValueError(f"pro_fpr_limit must be in (0, 1], got {pro_fpr_limit}")
        self.score_range = (lo, hi)
        self.num_bins = int(num_bins)
        self.pro_num_thresholds = int(pro_num_thresholds)
        self.pro_fpr_limit = float(pro_fpr_limit)
        self._scale = self.num_bins / (hi - lo)
        self.normal = np.zeros(self.num_bins, dtype=np.int64)  # normal pixels per bin
        self.anomalous = np.zeros(self.num_bins, dtype=np.int64)  # anomalous pixels per bin
        self.region_weight = np.zeros(self.pro_num_thresholds, dtype=np.float64)  # sum of 1/region size
        self.num_regions = 0

    def _bin_index(self, maps: np.ndarray) -> np.ndarray:
        """Bin of every score; clipping before the integer cast also keeps huge scores in the end bin."""
        x = np.subtract(maps, self.score_range[0], dtype=np.float64)
        x *= self._scale
        np.clip(x, 0, self.num_bins - 1, out=x)
        return x.astype(np.intp)

    def update(self, maps: np.ndarray, masks: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add anomaly maps (B, H, W) or (H, W) and their binary ground-truth masks of the same shape;
        pixels where ``valid`` (same shape) is False are left out (padding that is not part of a photo)."""
        maps, masks = _validated(maps, masks)
        bins = self._bin_index(maps)
        # one pass for both classes: anomalous pixels count in bins [num_bins, 2 * num_bins), left-out ones after
        np.add(bins, self.num_bins, out=bins, where=masks)
        if valid is not None:
            valid = np.asarray(valid, dtype=bool).reshape(masks.shape)
            bins[~valid] = 2 * self.num_bins
            masks = masks & valid
        counts = np.bincount(bins.ravel(), minlength=2 * self.num_bins + 1)
        self.normal += counts[: self.num_bins]
        self.anomalous += counts[self.num_bins : 2 * self.num_bins]
        pro_step = self.num_bins // self.pro_num_thresholds
        # image by image, so any split of the images into update() calls sums the float weights in
        # the same order and gives bit-identical results
        for image_bins, mask in zip(bins, masks):
            if not mask.any():
                continue
            regions, count = ndimage.label(mask, structure=REGION_STRUCTURE)
            region_of_pixel = regions[mask]
            size_of_pixel = np.bincount(region_of_pixel)[region_of_pixel]
            pro_bins = (image_bins[mask] - self.num_bins) // pro_step
            self.region_weight += np.bincount(pro_bins, weights=1.0 / size_of_pixel, minlength=self.pro_num_thresholds)
            self.num_regions += count

    def compute(self) -> dict[str, float]:
        """pixel_auroc, pixel_ap, pixel_f1_max and au_pro over everything added so far."""
        n_pos, n_neg = int(self.anomalous.sum()), int(self.normal.sum())
        if n_pos == 0:
            raise ValueError("no anomalous pixels were added: pixel metrics are undefined")
        if n_neg == 0:
            raise ValueError("no normal pixels were added: pixel metrics are undefined")
        # entry k: the top k bins are predicted anomalous (k = 0 predicts nothing)
        tp = np.concatenate([[0], np.cumsum(self.anomalous[::-1])])
        fp = np.concatenate([[0], np.cumsum(self.normal[::-1])])
        tpr, fpr = tp / n_pos, fp / n_neg
        predicted = tp + fp
        used = predicted > 0  # thresholds that predict something, as sklearn's distinct scores
        precision, recall = tp[used] / predicted[used], tpr[used]
        # step-wise sum of (R_n - R_{n-1}) P_n, as sklearn's average_precision_score
        ap = float(np.sum(np.diff(recall, prepend=0.0) * precision))
        # PRO thresholds are every pro_step-th bin edge; FPR from the coarsened normal histogram
        normal_pro = self.normal.reshape(self.pro_num_thresholds, -1).sum(axis=1)
        fpr_pro = np.concatenate([[0], np.cumsum(normal_pro[::-1])]) / n_neg
        pro = np.concatenate([[0.0], np.cumsum(self.region_weight[::-1])]) / self.num_regions
        return {
            "pixel_auroc": float(np.trapezoid(tpr, fpr)),
            "pixel_ap": ap,
            "pixel_f1_max": _f1_max(precision, recall),
            "au_pro": _area_up_to(fpr_pro, pro, self.pro_fpr_limit) / self.pro_fpr_limit,
        }


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under (x, y) for x in [0, limit]; x is non-decreasing from 0 and ends >= limit.

    The curve is cut at exactly x = limit by linear interpolation. Where several points share the
    last x below the limit (a vertical step), the interpolation starts from the highest of them.
    """
    inside = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
    xs, ys = x[:inside], y[:inside]
    if xs[-1] < limit:
        x0, y0, x1, y1 = x[inside - 1], y[inside - 1], x[inside], y[inside]
        xs = np.append(xs, limit)
        ys = np.append(ys, y0 + (y1 - y0) * (limit - x0) / (x1 - x0))
    return float(np.trapezoid(ys, xs))


def pixel_metrics(maps: np.ndarray, masks: np.ndarray, valid: np.ndarray | None = None, **kwargs) -> dict[str, float]:
    """Pixel metrics of in-memory maps (N, H, W) or (H, W), binned over [maps.min(), maps.max()] of
    the ``valid`` pixels (all when None).

    ``kwargs`` go to :class:`PixelMetrics`. The maps are fed a few million pixels at a time, so the
    temporaries stay bounded however many images there are. A constant map gets a unit-wide range
    (every pixel in the bottom bin, i.e. all scores tied).
    """
    maps, masks = _validated(maps, masks)
    valid = np.ones(masks.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(masks.shape)
    if not valid.any():
        raise ValueError("pixel metrics need at least one pixel")
    lo, hi = float(maps[valid].min()), float(maps[valid].max())
    acc = PixelMetrics((lo, hi if hi > lo else lo + 1.0), **kwargs)
    step = max(1, _CHUNK_PIXELS // max(1, maps[0].size))
    for start in range(0, len(maps), step):
        acc.update(maps[start : start + step], masks[start : start + step], valid[start : start + step])
    return acc.compute()


def published_au_pro(maps: np.ndarray, masks: np.ndarray, num_thresholds: int = 200,
                     fpr_limit: float = 0.3, valid: np.ndarray | None = None) -> float:
    """AU-PRO integrated as the published MuSc code does, on in-memory maps (N, H, W) or (H, W).

    Thresholds are ``np.arange(lo, hi, (hi - lo) / num_thresholds)`` over the maps' range (so the
    maximum is never one), a pixel counts when its score is strictly above; regions, PRO and FPR as
    in the module docstring. Only the points with FPR < ``fpr_limit`` are kept, their FPRs are
    min-max rescaled to [0, 1] and the trapezoid area under PRO over them is the result: the curve
    is neither cut at the limit nor started at FPR 0, and 200 steps resolve it coarsely. NaN when
    the kept points span no FPR range (the published code divides by zero there). Pixels where
    ``valid`` is False are left out.
    """
    maps, masks = _validated(maps, masks)
    valid = np.ones(masks.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(masks.shape)
    masks = masks & valid
    if not masks.any() or masks.sum() == valid.sum():
        raise ValueError("AU-PRO needs both anomalous and normal pixels")
    lo, hi = float(maps[valid].min()), float(maps[valid].max())
    if hi == lo:
        return float("nan")
    thresholds = np.arange(lo, hi, (hi - lo) / num_thresholds)
    # entry j: pixels above exactly the thresholds 0..j-1 (thresholds ascend)
    normal = np.zeros(len(thresholds) + 1, dtype=np.int64)
    region_weight = np.zeros(len(thresholds) + 1, dtype=np.float64)
    num_regions = 0
    for score_map, mask, inside in zip(maps, masks, valid):
        passed = np.searchsorted(thresholds, score_map, side="left")
        normal += np.bincount(passed[~mask & inside], minlength=len(normal))
        if mask.any():
            regions, count = ndimage.label(mask, structure=REGION_STRUCTURE)
            region_of_pixel = regions[mask]
            size_of_pixel = np.bincount(region_of_pixel)[region_of_pixel]
            region_weight += np.bincount(passed[mask], weights=1.0 / size_of_pixel, minlength=len(normal))
            num_regions += count
    # threshold k predicts the pixels of entries k+1.. as anomalous
    fpr = np.cumsum(normal[::-1])[::-1][1:] / normal.sum()
    pro = np.cumsum(region_weight[::-1])[::-1][1:] / num_regions
    kept = fpr < fpr_limit
    x = fpr[kept]
    if x.size < 2 or x.max() == x.min():
        return float("nan")
    return float(auc((x - x.min()) / (x.max() - x.min()), pro[kept]))


def category_metrics(
    image_scores: np.ndarray, image_labels: np.ndarray, maps: np.ndarray, masks: np.ndarray,
    au_pro: AuProRule = "histogram", valid: np.ndarray | None = None,
) -> dict[str, float]:
    """The seven metrics of one category, plus "mad", their mean.

    A category where no image has an anomalous pixel (e.g. anomalies without masks) has no defined
    pixel metric: they are NaN rather than an error, so the rest of a benchmark still reports, and
    "mad" is then the mean of the image metrics alone. Image metrics still need both classes.
    ``au_pro`` "published" replaces the histogram AU-PRO with ``published_au_pro``. Pixels where
    ``valid`` is False (padding) are in no pixel metric.
    """
    pixel = pixel_metrics(maps, masks, valid) if np.asarray(masks).any() else None
    if pixel is not None and au_pro == "published":
        pixel["au_pro"] = published_au_pro(maps, masks, valid=valid)
    return metrics_row(image_metrics(image_scores, image_labels), pixel)


def metrics_row(image: dict[str, float], pixel: dict[str, float] | None) -> dict[str, float]:
    """One table row from image metrics and pixel metrics (None: undefined, NaN), plus "mad"."""
    row = {**image, **(pixel or {name: float("nan") for name in PIXEL_METRIC_NAMES})}
    row["mad"] = float(np.mean([row[name] for name in METRIC_NAMES if not math.isnan(row[name])]))
    return row


def mean_row(per_category: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean over categories of every metric, ignoring NaN (NaN only where no category defines it)."""
    names = list(dict.fromkeys(name for row in per_category.values() for name in row)) or list(TABLE_COLUMNS)
    out = {}
    for name in names:
        values = [row[name] for row in per_category.values() if name in row and not math.isnan(row[name])]
        out[name] = float(np.mean(values)) if values else float("nan")
    return out


def format_table(per_category: dict[str, dict[str, float]]) -> str:
    """Paper-style fixed-width table: one row per category and a "mean" row, values in percent.

    Undefined values (NaN or missing) print as "n/a".
    """
    width = max([len("category"), len("mean"), *(len(name) for name in per_category)])
    cell = max(len(c) for c in TABLE_COLUMNS)
    lines = [f"{'category':<{width}}  " + " ".join(f"{c:>{cell}}" for c in TABLE_COLUMNS)]
    for name, row in [*per_category.items(), ("mean", mean_row(per_category))]:
        values = [row.get(c, float("nan")) for c in TABLE_COLUMNS]
        cells = [f"{'n/a':>{cell}}" if math.isnan(v) else f"{100 * v:>{cell}.1f}" for v in values]
        lines.append(f"{name:<{width}}  " + " ".join(cells))
    return "\n".join(lines)
