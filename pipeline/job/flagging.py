"""Which images of a group to flag for review, and where each ranks in its group.

Quality teams review a fixed budget of images or want statistical outliers, so three policies:
``top_fraction`` (the highest-scoring fraction of the group, at least one image), ``robust_z``
(modified z-score 0.6745 (x - median) / MAD above a cut, Iglewicz & Hoaglin's 3.5 by default; robust
to the defects themselves inflating the spread) and ``threshold`` (a fixed score, for a calibrated
production line).

Both group-relative policies flag a share of the night's parts by construction: on a night where half
the parts carry a defect they flag the top 5%, or (the median being defective) hardly any. With
references (known-good images scored as reference-only members of every subset), ``reference_fpr``
calibrates the line on them instead: each reference's leave-one-out score is what a good part scores
tonight, in tonight's subsets, so flagging the scores above the (1 - value) quantile of those keeps
the false-positive rate on good parts near ``value`` whatever the share of bad ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..settings import FlaggingConfig

# each policy's default parameter (None: required) and how its label shows the parameter
FLAG_POLICIES: dict[str, tuple[float | None, str]] = {"top_fraction": (0.05, "="), "robust_z": (3.5, ">"),
                                                      "threshold": (None, ">="), "reference_fpr": (0.05, "=")}


@dataclass(frozen=True)
class FlagRule:
    """A flag policy with its parameter filled in: what every row's ``flag_policy`` column records."""

    policy: str
    value: float

    @classmethod
    def from_settings(cls, cfg: FlaggingConfig) -> FlagRule:
        default, _ = FLAG_POLICIES[cfg.policy]
        value = cfg.value if cfg.value is not None else default
        if value is None:
            raise ValueError(f"flag policy {cfg.policy!r} needs a value")
        return cls(cfg.policy, value)

    @property
    def label(self) -> str:
        return f"{self.policy}{FLAG_POLICIES[self.policy][1]}{self.value:g}"

    def apply(self, scores: np.ndarray, reference_scores: np.ndarray | None = None) -> np.ndarray:
        return flag(scores, self.policy, self.value, reference_scores)

    def line(self, scores: np.ndarray, reference_scores: np.ndarray | None = None) -> float | None:
        """The score the rule drew its line at for these scores (``flag_line``): flagged are the scores
        at or above it (top_fraction, threshold) or above it (robust_z, reference_fpr); None without scores
        or references to draw it from."""
        return flag_line(scores, self.policy, self.value, reference_scores)


def rank_in_group(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank (1 = most anomalous; ties share the best rank) and percentile (% of the group scoring <= it)."""
    scores = np.asarray(scores, dtype=np.float64)
    ascending = np.sort(scores)
    higher = len(scores) - np.searchsorted(ascending, scores, side="right")
    at_or_below = np.searchsorted(ascending, scores, side="right")
    return higher + 1, 100.0 * at_or_below / len(scores)


def robust_z(scores: np.ndarray) -> np.ndarray:
    """Modified z-scores; with MAD = 0 the mean absolute deviation (scaled to match) stands in."""
    scores = np.asarray(scores, dtype=np.float64)
    deviation = scores - np.median(scores)
    mad = np.median(np.abs(deviation))
    if mad > 0:
        return 0.6745 * deviation / mad
    mean_ad = np.mean(np.abs(deviation))
    return deviation / (1.253314 * mean_ad) if mean_ad > 0 else np.zeros_like(scores)


def reference_threshold(reference_scores: np.ndarray, fpr: float) -> float:
    """The score above which at most a fraction ``fpr`` of the references' leave-one-out scores lie:
    their (1 - fpr) quantile, taken at an observed score (``fpr`` 0: the highest)."""
    values = np.asarray(reference_scores, dtype=np.float64)
    if values.size == 0:
        raise ValueError("the 'reference_fpr' flag policy needs the references' scores; this group has none")
    if not 0 <= fpr < 1:
        raise ValueError(f"reference_fpr must be in [0, 1), got {fpr}")
    return float(np.quantile(values, 1 - fpr, method="higher"))


def flag(scores: np.ndarray, policy: str, value: float, reference_scores: np.ndarray | None = None) -> np.ndarray:
    """Boolean flags for one group's scores under ``policy`` with its parameter ``value``
    (``reference_fpr``: calibrated on ``reference_scores``)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return np.zeros(0, dtype=bool)
    if policy == "top_fraction":
        if not 0 < value <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {value}")
        count = max(1, math.ceil(value * scores.size))
        flags = np.zeros(scores.size, dtype=bool)
        flags[np.argsort(-scores, kind="stable")[:count]] = True
        return flags
    if policy == "robust_z":
        return robust_z(scores) > value
    if policy == "threshold":
        return scores >= value
    if policy == "reference_fpr":
        return scores > reference_threshold(np.zeros(0) if reference_scores is None else reference_scores, value)
    raise ValueError(f"unknown flag policy {policy!r}; expected one of {list(FLAG_POLICIES)}")


def flag_line(scores: np.ndarray, policy: str, value: float,
              reference_scores: np.ndarray | None = None) -> float | None:
    """Where ``flag`` draws its line for ``policy`` (see ``FlagRule.line``)."""
    scores = np.asarray(scores, dtype=np.float64)
    if policy == "threshold":
        return float(value)
    if policy == "reference_fpr":
        references = np.zeros(0) if reference_scores is None else np.asarray(reference_scores)
        return reference_threshold(references, value) if references.size else None
    if scores.size == 0:
        return None
    if policy == "top_fraction":
        return float(np.sort(scores)[::-1][max(1, math.ceil(value * scores.size)) - 1])
    if policy == "robust_z":  # robust_z(x) > value, solved for x (robust_z is increasing in x)
        deviation = np.abs(scores - np.median(scores))
        mad = np.median(deviation)
        unit = mad / 0.6745 if mad > 0 else 1.253314 * np.mean(deviation)
        return float(np.median(scores) + value * unit) if unit > 0 else None
    raise ValueError(f"unknown flag policy {policy!r}; expected one of {list(FLAG_POLICIES)}")
