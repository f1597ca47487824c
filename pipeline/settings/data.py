"""Settings of the data a program reads: a benchmark dataset on disk, or one generated for demos and tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .schema import FieldError, Section, setting


@dataclass
class DatasetConfig(Section):
    """A benchmark dataset on local disk in one of the supported folder layouts."""

    root: str = setting("Dataset root directory.", default="demo_data")
    layout: Literal["mvtec", "visa", "btad", "mpdd"] = setting("Folder layout of the dataset.", default="mvtec")
    categories: list[str] | None = setting("Categories to evaluate; null means all found under root.", default=None)
    split_csv: str | None = setting(
        "VisA only: the split CSV (default <root>/split_csv/1cls.csv).", default=None
    )


@dataclass
class SyntheticConfig(Section):
    """Generate a synthetic dataset before evaluating (the demo and the tests use this)."""

    enabled: bool = setting("Generate the dataset into dataset.root when it does not exist yet.", default=False)
    categories: list[str] | None = setting("Synthetic categories to generate (null: all).", default=None)
    n_train: int = setting("Normal training images per category.", default=0, ge=0)
    n_test_good: int = setting("Normal test images per category.", default=10, ge=0)
    n_test_defect: int = setting("Defective test images per category.", default=10, ge=0)
    image_size: int = setting("Side of the generated images in pixels.", default=224, ge=32)
    seed: int = setting("Random seed of the generator.", default=0)
    brightness: dict[str, float] = setting(
        "Per product, a factor every pixel of its images is multiplied by (then clipped to 0-255), e.g. "
        "{weave: 1.15}: a line whose lighting changed (docs/nights.md). Products not named keep 1.",
        default_factory=dict,
    )

    def check(self) -> None:
        for product, factor in self.brightness.items():
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
                raise FieldError("brightness", f"{product}: a factor > 0, got {factor!r}")
