"""Settings of the evaluation command (``python -m pipeline.evaluation``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .backbone import BackboneConfig
from .data import DatasetConfig, SyntheticConfig
from .schema import FieldError, Section, setting
from .scorers import MuscConfig, PatchEADConfig


@dataclass
class EvalDatasetConfig(DatasetConfig):
    """The evaluated dataset, and how its images become the square model input."""

    resize: Literal["squash", "pad", "refuse"] = setting(
        "How test images that are not square become the square model input (their masks follow, so pixel "
        "metrics stay on the defects). 'squash': resized to the square, as the published MuSc code does and "
        "as earlier versions did (a part looks narrower or wider by its aspect ratio). 'pad': centred on a "
        "black square first (shapes kept; the padding is left out of the pixel metrics, but its edge can "
        "still raise the image score of a padded image when few others are padded alike). 'refuse': squash, but "
        "refuse a category whose aspect ratios differ by more than 1.25x (crop them or evaluate separately).",
        default="squash",
    )


@dataclass
class EvalConfig(Section):
    """`python -m pipeline.evaluation`: MuSc or PatchEAD on a benchmark dataset, paper-style metrics table."""

    dataset: EvalDatasetConfig = setting("Which dataset to evaluate.", default_factory=EvalDatasetConfig)
    synthetic: SyntheticConfig = setting("Optional synthetic data generation.", default_factory=SyntheticConfig)
    backbone: BackboneConfig = setting("Feature extractor.", default_factory=BackboneConfig)
    scorer: Literal["musc", "patchead"] = setting(
        "Zero-shot scorer: MuSc or PatchEAD (settings in musc / patchead).", default="musc")
    musc: MuscConfig = setting("MuSc settings.", default_factory=MuscConfig)
    patchead: PatchEADConfig = setting(
        "PatchEAD settings. Batch mode scores each subset (divide_num) in seeded batches; few-shot mode scores "
        "every test image against the category's first patchead.reference_images known-good train images.",
        default_factory=PatchEADConfig,
    )
    divide_num: int = setting(
        "Split each category's test images into this many random subsets and score each subset on its "
        "own (paper Table 7); 1 scores the whole category at once.",
        default=1,
        ge=1,
    )
    protocol: Literal["project", "paper"] = setting(
        "How patch scores become maps, image scores, masks and AU-PRO. 'project': maps upsampled with "
        "align_corners=False and smoothed (the scorer's gaussian_sigma), image score = max patch score, masks "
        "resized nearest, AU-PRO over every threshold up to FPR 0.3. 'paper': the published MuSc code's "
        "choices, to reproduce its tables: align_corners=True, no smoothing (gaussian_sigma is not applied), "
        "image score = max of the upsampled map, bilinear masks kept where they stay 255 (VisA: above 0), "
        "AU-PRO over 200 thresholds with FPR < 0.3 rescaled to [0, 1]. MuSc (LNAMD + RsCIN) without alignment "
        "only: other choices are refused, not replaced.",
        default="project",
    )
    seed: int = setting("Seed of the subset split.", default=0)
    output_dir: str = setting("Where the metrics table (txt, csv, json) is written.", default="outputs/eval")
    save_maps: int = setting(
        "Write heat-map PNGs for up to this many images per category (the most anomalous first); 0: none.",
        default=0,
        ge=0,
    )

    def check(self) -> None:
        if self.scorer_settings().foreground.enabled and self.backbone.family == "timm_cnn":
            raise FieldError(f"{self.scorer}.foreground.enabled", "the foreground mask is a ViT's CLS attention and "
                                                                  "a timm_cnn backbone has none: set it false or "
                                                                  "choose an open_clip or timm_vit backbone")
        if self.protocol == "paper" and self.scorer != "musc":
            raise FieldError("protocol", "'paper' reproduces the published MuSc code and needs scorer: musc")
        if self.protocol == "paper" and self.musc.align:
            raise FieldError("protocol", "'paper' reproduces the published MuSc code, which has no alignment; "
                                         "set musc.align: false")
        for key, published, name in (("aggregation", "lnamd", "LNAMD"), ("rescoring", "rscin", "RsCIN"),
                                     ("match_radius", None, "full matching")):
            if self.protocol == "paper" and getattr(self.musc, key) != published:
                raise FieldError("protocol", f"'paper' reproduces the published MuSc code, which has "
                                             f"{name} only; set musc.{key}: {'null' if published is None else published}")

    def scorer_settings(self) -> MuscConfig | PatchEADConfig:
        """The settings of the chosen scorer."""
        return self.patchead if self.scorer == "patchead" else self.musc
