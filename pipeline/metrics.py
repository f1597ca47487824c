"""Anomaly-detection metrics shared by every detector (image level, pixel level, AU-PRO, mAD).

Image metrics are exact (scikit-learn). Pixel metrics see ~1e8 pixels on a full benchmark, so they
are computed from histograms over ``num_bins`` equal-width score bins, never by sorting all pixels:
thresholds sit at bin edges, ties inside a bin are treated as sklearn treats tied scores, and the
result equals sklearn's exactly when no bin holds two different scores (within 1/num_bins of the
score range otherwise).

AU-PRO uses the same bins. The PRO at threshold t is the mean over ground-truth regions of the
fraction of the region's pixels scoring >= t; that equals the sum over anomalous pixels scoring
>= t of 1 / (size of the pixel's region * number of regions), so one weighted histogram carries it
and memory stays O(num_bins) whatever the number of regions.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

METRIC_NAMES: tuple[str, ...] = (
    "image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "au_pro",
)
PIXEL_METRICS = METRIC_NAMES[3:]
# 8-connected regions, as the MVTec AD reference evaluation labels them
_REGION_STRUCTURE = np.ones((3, 3), dtype=bool)


def _f1_max(precision: np.ndarray, recall: np.ndarray) -> float:
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom, dtype=np.float64), where=denom > 0)
    return float(f1.max())


def image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Image AUROC, AP and F1-max (fractions in [0, 1]); labels are 1 for anomalous images."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.isfinite(scores).all():
        raise ValueError("image scores contain NaN or infinity")
    if np.unique(labels).size != 2:
        raise ValueError("image metrics need both normal and anomalous images; labels hold only one class")
    precision, recall, _ = precision_recall_curve(labels, scores)
    return {
        "image_auroc": float(roc_auc_score(labels, scores)),
        "image_ap": float(average_precision_score(labels, scores)),
        "image_f1_max": _f1_max(precision, recall),
    }


class PixelMetrics:
    """Streaming, binned pixel AUROC / AP / F1-max and AU-PRO: bounded memory for 1e8+ pixels."""

    def __init__(self, score_range: tuple[float, float], num_bins: int = 2**16, pro_fpr_limit: float = 0.3) -> None:
        lo, hi = float(score_range[0]), float(score_range[1])
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
            raise ValueError(f"invalid score range {score_range}")
        if not 0 < pro_fpr_limit <= 1:
            raise ValueError(f"pro_fpr_limit must be in (0, 1], got {pro_fpr_limit}")
        self.lo = lo
        self.scale = num_bins / (hi - lo) if hi > lo else 0.0
        self.num_bins = num_bins
        self.pro_fpr_limit = pro_fpr_limit
        self.normal = np.zeros(num_bins, dtype=np.int64)
        self.anomalous = np.zeros(num_bins, dtype=np.int64)
        self.region_weight = np.zeros(num_bins, dtype=np.float64)  # sum of 1 / region size per bin
        self.num_regions = 0

    def _bins(self, scores: np.ndarray) -> np.ndarray:
        idx = ((scores.astype(np.float64) - self.lo) * self.scale).astype(np.int64)
        return np.clip(idx, 0, self.num_bins - 1)

    def update(self, maps: np.ndarray, masks: np.ndarray) -> None:
        """Add maps (B, H, W) or (H, W) and their binary ground-truth masks of the same shape."""
        maps = np.asarray(maps)
        masks = np.asarray(masks)
        if maps.shape != masks.shape:
            raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
        if not np.isfinite(maps).all():
            raise ValueError("anomaly maps contain NaN or infinity")
        if masks.dtype != bool:
            if not np.isin(masks, (0, 1)).all():
                raise ValueError("masks must be binary (bool or 0/1)")
            masks = masks.astype(bool)
        if maps.ndim == 2:
            maps, masks = maps[None], masks[None]
        for score_map, mask in zip(maps, masks):
            bins = self._bins(score_map)
            self.normal += np.bincount(bins[~mask], minlength=self.num_bins)
            if not mask.any():
                continue
            self.anomalous += np.bincount(bins[mask], minlength=self.num_bins)
            regions, count = ndimage.label(mask, structure=_REGION_STRUCTURE)
            sizes = np.bincount(regions.ravel())
            labels = regions[mask]
            self.region_weight += np.bincount(bins[mask], weights=1.0 / sizes[labels], minlength=self.num_bins)
            self.num_regions += count

    def compute(self) -> dict[str, float]:
        """pixel_auroc, pixel_ap, pixel_f1_max, au_pro over everything added so far."""
        n_pos, n_neg = int(self.anomalous.sum()), int(self.normal.sum())
        if n_pos == 0:
            raise ValueError("no anomalous pixels: pixel metrics are undefined")
        if n_neg == 0:
            raise ValueError("no normal pixels: pixel metrics are undefined")
        # predicted positive = bins >= t, for t from the top bin down; prepend the empty prediction
        tp = np.concatenate([[0], np.cumsum(self.anomalous[::-1])])
        fp = np.concatenate([[0], np.cumsum(self.normal[::-1])])
        tpr, fpr = tp / n_pos, fp / n_neg
        auroc = float(np.trapezoid(tpr, fpr))
        predicted = tp + fp
        used = predicted > 0  # thresholds where something is predicted (sklearn's distinct scores)
        precision = tp[used] / predicted[used]
        recall = tpr[used]
        ap = float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))
        pro = np.concatenate([[0.0], np.cumsum(self.region_weight[::-1])]) / self.num_regions
        return {
            "pixel_auroc": auroc,
            "pixel_ap": ap,
            "pixel_f1_max": _f1_max(precision, recall),
            "au_pro": _area_up_to(fpr, pro, self.pro_fpr_limit) / self.pro_fpr_limit,
        }


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under (x, y), x non-decreasing from 0, cut at x = limit by linear interpolation."""
    inside = x <= limit
    xs, ys = x[inside], y[inside]
    if xs[-1] < limit:
        nxt = np.argmax(x > limit)
        # several points may share x == xs[-1]; interpolate from the last of them
        y_at = ys[-1] + (y[nxt] - ys[-1]) * (limit - xs[-1]) / (x[nxt] - xs[-1])
        xs, ys = np.append(xs, limit), np.append(ys, y_at)
    return float(np.trapezoid(ys, xs))


def pixel_metrics(maps: np.ndarray, masks: np.ndarray, chunk: int = 16, **kwargs) -> dict[str, float]:
    """Pixel metrics of in-memory maps (N, H, W): range from the maps, fed in chunks of images."""
    maps = np.asarray(maps)
    if maps.size == 0:
        raise ValueError("no anomaly maps")
    if not np.isfinite(maps).all():
        raise ValueError("anomaly maps contain NaN or infinity")
    acc = PixelMetrics((float(maps.min()), float(maps.max())), **kwargs)
    for start in range(0, len(maps), chunk):
        acc.update(maps[start:start + chunk], masks[start:start + chunk])
    return acc.compute()


def category_metrics(
    image_scores: np.ndarray, image_labels: np.ndarray, maps: np.ndarray, masks: np.ndarray
) -> dict[str, float]:
    """All seven metrics and mAD for one category.

    A category without any ground-truth anomalous pixel (no masks) gets NaN pixel metrics, and its
    mAD is the mean of the metrics that are defined.
    """
    row = image_metrics(image_scores, image_labels)
    if np.asarray(masks).any():
        row.update(pixel_metrics(maps, masks))
    else:
        row.update({name: float("nan") for name in PIXEL_METRICS})
    defined = [row[name] for name in METRIC_NAMES if not math.isnan(row[name])]
    row["mad"] = float(np.mean(defined))
    return row


def mean_row(per_category: dict[str, dict[str, float]]) -> dict[str, float]:
    """NaN-aware mean over categories of every metric (NaN only if no category defines it)."""
    names = list(next(iter(per_category.values())).keys()) if per_category else [*METRIC_NAMES, "mad"]
    out = {}
    for name in names:
        values = [row[name] for row in per_category.values() if not math.isnan(row[name])]
        out[name] = float(np.mean(values)) if values else float("nan")
    return out


def format_table(per_category: dict[str, dict[str, float]]) -> str:
    """Paper-style fixed-width table in percent: one row per category and a mean row."""
    columns = [*METRIC_NAMES, "mad"]
    width = max([len("category"), len("mean"), *(len(c) for c in per_category)])
    lines = [f"{'category':<{width}} " + " ".join(f"{c:>12}" for c in columns)]
    for name, row in [*per_category.items(), ("mean", mean_row(per_category))]:
        cells = ["         n/a" if math.isnan(row[c]) else f"{100 * row[c]:>12.1f}" for c in columns]
        lines.append(f"{name:<{width}} " + " ".join(cells))
    return "\n".join(lines)
