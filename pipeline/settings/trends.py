"""Settings of the per-group nightly table's trends: how many previous nights, and the alert bands."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import FieldError, Section, setting


DETECTOR_SCORE_SHIFT = 0.5  # max_score_shift's default for a trained detector


@dataclass
class TrendsConfig(Section):
    """Trends and drift alerts per group across nights (group_nights table, docs/nights.md). No key here
    changes a score, a flag or a heat map: the whole section is run_only, and the table stores the
    statistics, so other bands can be applied to past nights in SQL."""

    nights: int = setting(
        "Previous nights each group is compared with: the last this many run dates before tonight that have a "
        "successful run under output.prefix (the latest run of a night that ran twice).",
        default=7,
        ge=1,
    )
    min_nights: int = setting(
        "Previous nights a group needs before its shift can alert (fewer: no drift alert, and alert_reason "
        "says drift was not checked).",
        default=3,
        ge=1,
    )
    flag_rate_band: list[float] = setting(
        "[low, high]: a night whose flag rate (flagged / scored) is outside this band alerts, from the first "
        "night on. With flagging.policy top_fraction the rate is that fraction by construction.",
        default_factory=lambda: [0.0, 0.2],
        ge=0,
        le=1,
    )
    max_embedding_shift: float | None = setting(
        "Alert when tonight's mean image embedding is further than this from the previous nights' mean, in "
        "per-image spreads, sampling noise removed (about 0 on a normal night; a change every part shares, e.g. "
        "lighting, moves it: 15% brighter measured 0.44-0.64 with ImageNet MobileNetV2, normal nights of 12 "
        "parts at most 0.36, tests/benchmarks/bench_drift.py). MuSc and PatchEAD only. null: never.",
        default=0.3,
        gt=0,
    )
    max_score_shift: float | None = setting(
        "Alert when the Kolmogorov-Smirnov statistic of tonight's scores against the previous nights' pooled "
        "scores exceeds this and its p-value is below score_shift_p. null: 0.5 for a trained detector (each "
        "image scored alone: the only shift it has), none for musc and patchead, whose scores are relative "
        "within a night (tests/benchmarks/bench_drift.py: on MuSc the KS alerted on normal nights about as "
        "often as on brightened ones); 1: never.",
        default=None,
        gt=0,
        le=1,
    )
    score_shift_p: float = setting(
        "The p-value below which a score shift over max_score_shift alerts: small nights, whose KS statistic "
        "is large by chance, do not alert.",
        default=0.01,
        gt=0,
        le=1,
    )

    def score_band(self, zero_shot: bool) -> float | None:
        """The KS statistic a score shift must exceed to alert (max_score_shift, or its default per detector)."""
        if self.max_score_shift is not None:
            return self.max_score_shift
        return None if zero_shot else DETECTOR_SCORE_SHIFT

    def check(self) -> None:
        if len(self.flag_rate_band) != 2 or self.flag_rate_band[0] > self.flag_rate_band[1]:
            raise FieldError("flag_rate_band", f"must be [low, high] with low <= high, got {self.flag_rate_band}")
        if self.min_nights > self.nights:
            raise FieldError("min_nights", f"{self.min_nights} is more than trends.nights ({self.nights}): no "
                                           "night could ever alert on drift")

