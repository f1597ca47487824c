"""Settings of a Ray Tune sweep of a trained detector (``python jobs/sweep.py``)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .data import DatasetConfig, SyntheticConfig
from .detectors import DetectorConfig
from .schema import FieldError, Section, setting

SEARCH_TYPES = ("loguniform", "uniform", "randint", "choice")


@dataclass
class SchedulerConfig(Section):
    """Early stopping of unpromising trials."""

    kind: Literal["asha", "fifo"] = setting("'asha' (async successive halving) or 'fifo' (no early stopping).",
                                            default="asha")
    grace_period: int = setting("ASHA: evaluations every trial gets before it can be stopped.", default=1)
    reduction_factor: int = setting("ASHA: keep the top 1/reduction_factor at each rung.", default=2)


@dataclass
class PseudoLabelConfig(Section):
    """Train on the images a MuSc run ranked most normal instead of a labelled train split."""

    scores_prefix: str | None = setting(
        "The scores/ folder of a nightly MuSc job (e.g. s3://bucket/musc/scores); null: use the dataset's "
        "train split.",
        default=None,
    )
    run_id: str | None = setting("Which run's scores to take (required with scores_prefix).", default=None)
    normal_fraction: float = setting(
        "Fraction of each group, lowest MuSc scores first, taken as normal (keep it below the share of good "
        "parts).",
        default=0.5,
        gt=0,
        le=1,
    )

    def check(self) -> None:
        if self.scores_prefix is not None and not self.run_id:
            raise FieldError("run_id", "pseudo labels need the run id whose scores to use")


@dataclass
class SweepConfig(Section):
    """`python jobs/sweep.py`: a Ray Tune sweep of a trained detector, results to object storage."""

    name: str = setting("Experiment name: the folder under storage_path and output_prefix.", default="sweep")
    detector: DetectorConfig = setting("The base detector config every trial starts from.",
                                    default_factory=DetectorConfig)
    dataset: DatasetConfig = setting("Training data (train split, normal images of every category) and the "
                                  "labelled validation data (test split).", default_factory=DatasetConfig)
    synthetic: SyntheticConfig = setting("Generate a synthetic dataset into dataset.root when it is missing.",
                                      default_factory=SyntheticConfig)
    pseudo_labels: PseudoLabelConfig = setting("Optional MuSc pseudo-normal training set.",
                                            default_factory=PseudoLabelConfig)
    auxiliary: DatasetConfig = setting(
        "SOWA only: the labelled dataset it trains on (its test split: images, labels and masks of other "
        "products, as the paper trains on VisA to score MVTec AD and vice versa); dataset is then only "
        "validated on (and gives the few-shot normal images from its train split).",
        default_factory=lambda: DatasetConfig(root="auxiliary_data"),
    )
    auxiliary_synthetic: SyntheticConfig = setting("Generate a synthetic auxiliary set into auxiliary.root when it "
                                                "is missing.", default_factory=SyntheticConfig)
    search_space: dict[str, Any] = setting(
        "Detector keys to search, e.g. {'vitad.lr': {type: loguniform, low: 1e-5, high: 1e-3}, "
        "'dinomaly.dropout': {type: choice, values: [0.1, 0.2, 0.4]}}. Types: loguniform, uniform, "
        "randint (low, high) and choice (values).",
        default_factory=dict,
    )
    num_samples: int = setting("Trials (samples drawn from the search space).", default=8, ge=1)
    metric: str = setting("Validation metric to optimise (one of the engine's: mad, image_auroc, ...).",
                       default="mad")
    mode: Literal["max", "min"] = setting("Whether the metric is maximised or minimised.", default="max")
    evaluations: int = setting(
        "Validation evaluations per trial, evenly spaced over its iterations (ASHA's time unit).", default=4,
        ge=1,
    )
    scheduler: SchedulerConfig = setting("Early stopping.", default_factory=SchedulerConfig)
    max_concurrent: int = setting("Trials run at once (0: as many as resources allow).", default=0)
    trial_cpus: float = setting("CPUs per trial.", default=1.0)
    trial_gpus: float = setting("GPUs per trial (fractions share a GPU).", default=0.0)
    storage_path: str = setting(
        "Where Tune keeps experiment state and checkpoints (s3://... or a local folder); re-running the "
        "same name resumes the sweep from there.",
        default="outputs/sweeps/tune",
    )
    output_prefix: str = setting(
        "Where the trials table (trials.parquet) and the best checkpoint and config (best/) are written.",
        default="outputs/sweeps",
    )
    storage_options: dict[str, Any] = setting("Passed to fsspec for output_prefix (e.g. endpoint_url).",
                                           default_factory=dict)
    seed: int = setting("Seed of the search-space sampling.", default=0)

    def check(self) -> None:
        for key, spec in self.search_space.items():
            _check_search_dimension(key, spec)
        if self.detector.kind == "sowa" and self.pseudo_labels.scores_prefix is not None:
            raise FieldError("pseudo_labels.scores_prefix",
                             "SOWA trains on a labelled auxiliary set, not on pseudo-normals")
        if self.detector.kind == "sowa" and Path(self.auxiliary.root) == Path(self.dataset.root):
            raise FieldError("auxiliary.root",
                             "SOWA must be trained on another dataset than the one it is validated on")
        if self.evaluations > self.detector.training.iterations:
            raise FieldError("evaluations", f"more evaluations ({self.evaluations}) than iterations "
                                            f"({self.detector.training.iterations})")


def _check_search_dimension(key: str, spec: Any) -> None:
    """A search-space entry must name a detector key and a well-formed distribution."""
    node: Any = DetectorConfig
    for part in key.split("."):
        fields = {f.name for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else set()
        if part not in fields:
            raise FieldError(f"search_space.{key}", f"'{part}' is not a detector config key")
        node = typing.get_type_hints(node)[part]
    if not isinstance(spec, dict) or spec.get("type") not in SEARCH_TYPES:
        raise FieldError(f"search_space.{key}", f"needs type: one of {list(SEARCH_TYPES)}, got {spec!r}")
    if spec["type"] == "choice":
        if not isinstance(spec.get("values"), list) or not spec["values"]:
            raise FieldError(f"search_space.{key}", "choice needs a non-empty list of values")
    elif not all(isinstance(spec.get(k), (int, float)) for k in ("low", "high")) or spec["low"] >= spec["high"]:
        raise FieldError(f"search_space.{key}", f"{spec['type']} needs numbers low < high, got {spec!r}")
    elif spec["type"] == "loguniform" and spec["low"] <= 0:
        raise FieldError(f"search_space.{key}", "loguniform needs low > 0")

