"""How far a group's night moved from its previous nights: the two shift statistics and the alert rule.

MuSc scores each image against the other images of the same night, so a change that hits every part
of a line alike (a camera moved, the lighting changed) leaves tonight's scores where they were: each
part still looks like the others. The images' embeddings do move. Hence two statistics:

- ``embedding_shift``: the distance of tonight's mean image embedding from the previous nights'
  mean, in units of the previous nights' per-image spread (the RMS distance of an image to their
  mean), with the sampling noise of the two means taken out (an unbiased estimate of the squared
  distance of the true means, clipped at 0): about 0 on a normal night whatever its size, about
  |shift| / spread when every image moved alike. Each night stores its count, mean and spread
  (``EmbeddingMoments``), so later nights pool them without reading old features.
- ``score_shift``: the two-sample Kolmogorov-Smirnov statistic of tonight's scores against the
  pooled scores of the previous nights (and its p-value): what a trained detector, which scores each
  image alone and has no embeddings here, gets; for MuSc it sees a change of the score
  distribution's shape (a share of the parts changed), not a change every part shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow.parquet as pq
from scipy.stats import ks_2samp

from ..settings import TrendsConfig
from .codec import tensor_values
from .scores_table import STATUS_OK


@dataclass(frozen=True)
class EmbeddingMoments:
    """Count, mean and spread (RMS distance to the mean) of a night's image embeddings."""

    n: int
    mean: np.ndarray  # (D,)
    spread: float

    @classmethod
    def of(cls, embeddings: np.ndarray) -> EmbeddingMoments | None:
        """The moments of (N, D) embeddings; None without any."""
        values = np.asarray(embeddings, dtype=np.float64)
        if values.ndim != 2 or len(values) == 0:
            return None
        mean = values.mean(axis=0)
        return cls(len(values), mean, float(np.sqrt(np.mean(np.sum((values - mean) ** 2, axis=1)))))

    @classmethod
    def pooled(cls, parts: Sequence[EmbeddingMoments]) -> EmbeddingMoments | None:
        """The moments of all the parts' images together (law of total variance); None without any."""
        parts = [p for p in parts if p is not None and p.n > 0]
        if not parts:
            return None
        n = sum(p.n for p in parts)
        mean = sum(p.n * p.mean for p in parts) / n
        squares = sum(p.n * (p.spread ** 2 + float(np.sum((p.mean - mean) ** 2))) for p in parts)
        return cls(n, mean, float(np.sqrt(squares / n)))

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": [float(v) for v in self.mean], "spread": self.spread}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> EmbeddingMoments | None:
        return None if not data else cls(int(data["n"]), np.asarray(data["mean"], dtype=np.float64),
                                         float(data["spread"]))


def embedding_shift(tonight: EmbeddingMoments | None, before: EmbeddingMoments | None) -> float | None:
    """sqrt(max(0, |mean_t - mean_b|^2 / s^2 - 1/n_t - 1/n_b)), s^2 the previous images' unbiased variance
    (summed over dimensions): the estimated distance of the two nights' true means in per-image spreads.
    None when it is undefined (no images, fewer than 2 before, no spread, other embedding sizes)."""
    if tonight is None or before is None or before.n < 2 or tonight.mean.shape != before.mean.shape:
        return None
    variance = before.spread ** 2 * before.n / (before.n - 1)
    if variance <= 0:
        return None
    squared = float(np.sum((tonight.mean - before.mean) ** 2)) / variance - 1 / tonight.n - 1 / before.n
    return float(np.sqrt(max(0.0, squared)))


def score_shift(tonight: np.ndarray, before: np.ndarray) -> tuple[float | None, float | None]:
    """The two-sample KS statistic of tonight's scores against the previous nights' and its p-value."""
    if len(tonight) == 0 or len(before) == 0:
        return None, None
    result = ks_2samp(np.asarray(tonight, dtype=np.float64), np.asarray(before, dtype=np.float64))
    return float(result.statistic), float(result.pvalue)


def embedding_moments(shard_uris: Sequence[str],
                      storage_options: dict[str, Any] | None = None) -> EmbeddingMoments | None:
    """The moments of a group's readable images from its feature shards (only the ``status`` and
    ``embedding`` columns are read); None for shards without embeddings (a trained detector's)."""
    parts = []
    for uri in shard_uris:
        fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
        with fs.open(path, "rb") as fh:
            parquet = pq.ParquetFile(fh)
            if "embedding" not in parquet.schema_arrow.names:
                return None
            table = parquet.read(columns=["status", "embedding"])
        ok = np.asarray(table.column("status").to_pylist()) == STATUS_OK
        if ok.any():
            parts.append(EmbeddingMoments.of(tensor_values(table.column("embedding"))[ok]))
    return EmbeddingMoments.pooled(parts)


@dataclass(frozen=True)
class Shift:
    """A group's night against its previous nights."""

    previous_nights: int
    flag_rate: float | None
    score_shift: float | None = None
    score_shift_p: float | None = None
    embedding_shift: float | None = None

    def alert(self, cfg: TrendsConfig, zero_shot: bool = True) -> tuple[bool, str | None]:
        """(alert, reason): the flag rate outside its band on any night; the shifts over theirs once the
        group has ``min_nights`` previous nights (before that, the reason says drift is not checked).
        ``zero_shot``: MuSc or PatchEAD (the score band's default is off for them)."""
        reasons = []
        low, high = cfg.flag_rate_band
        if self.flag_rate is not None and not low <= self.flag_rate <= high:
            reasons.append(f"flag rate {self.flag_rate:.3g} outside [{low:g}, {high:g}]")
        if self.previous_nights < cfg.min_nights:
            if not reasons:
                return False, (f"drift not checked: {self.previous_nights} previous night(s), "
                               f"trends.min_nights is {cfg.min_nights}")
        else:
            if (cfg.max_embedding_shift is not None and self.embedding_shift is not None
                    and self.embedding_shift > cfg.max_embedding_shift):
                reasons.append(f"embedding shift {self.embedding_shift:.3g} > {cfg.max_embedding_shift:g}")
            band = cfg.score_band(zero_shot)
            if (band is not None and self.score_shift is not None and self.score_shift > band
                    and self.score_shift_p < cfg.score_shift_p):
                reasons.append(f"score shift (KS) {self.score_shift:.3g} > {band:g}, "
                               f"p {self.score_shift_p:.2g} < {cfg.score_shift_p:g}")
        return (True, "; ".join(reasons)) if reasons else (False, None)
