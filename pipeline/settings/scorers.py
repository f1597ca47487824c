"""Settings of the two zero-shot scorers, MuSc and PatchEAD (evaluation and the nightly job)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .backbone import ForegroundConfig
from .schema import FieldError, Section, setting


@dataclass
class AlignmentConfig(Section):
    """How PatchEAD+ alignment (``align: true``) picks its reference and which fits it refuses, so that
    aligning never makes scores worse than leaving an image as it is (a refused fit keeps the image
    unaligned). Only evaluation aligns; the nightly job refuses ``align``, so these keys never change
    a job's results and stay out of its identity (``run_only``)."""

    reference: Literal["best_matched", "first"] = setting(
        "The image a batch is warped onto: 'best_matched' tries reference_candidates images and keeps the one "
        "onto which the accepted fits of all others keep the most of their images in frame (the image most "
        "others match best with the smallest warps); 'first' is the batch's first image, whatever it shows "
        "(the behaviour before issue 17).",
        default="best_matched",
    )
    reference_candidates: int = setting(
        "best_matched: images tried as the reference, evenly spaced over the batch; each is matched with "
        "every image, so alignment costs this many matchings per image.",
        default=8, ge=1,
    )
    min_inliers: int = setting("Keypoint matches that must agree with a fit (RANSAC inliers).", default=8, ge=3)
    min_inlier_ratio: float = setting(
        "Fraction of the cross-checked keypoint matches that must agree with a fit: a spurious fit of a "
        "repeating pattern gathers a few inliers among many matches.",
        default=0.1, ge=0, le=1,
    )
    max_angle: float = setting(
        "Largest rotation (degrees, either way) a fit may have. 180 (no limit) by default: a part symmetric "
        "under a half turn (a plate) fits as well at 180 degrees as at 0; parts known to lie within a range "
        "should say so here.",
        default=180.0, ge=0, le=180,
    )
    max_scale_change: float = setting(
        "Largest change of scale a fit may imply (|scale - 1|); the warp itself never scales, so a fit that "
        "needs scaling explains the images badly.",
        default=0.1, ge=0,
    )
    min_similarity_gain: float = setting(
        "A fit is kept only when it makes the image more like the reference: the normalised cross-correlation "
        "of the blurred grey images (64 px, over the pixels the warp keeps) must rise by at least this much. "
        "-2 disables the check.",
        default=0.02, ge=-2, le=2,
    )
    min_aligned_fraction: float = setting(
        "A batch (PatchEAD few-shot: a query's references) is aligned only when at least this fraction of its "
        "fits is accepted, else left as it is: half a batch aligned leaves the rest in poses no aligned image "
        "shares (generated discs and tires lost 4 image AUROC so). 0 applies every accepted fit.",
        default=0.9, ge=0, le=1,
    )


@dataclass
class AutoMatchConfig(Section):
    """``match_radius: auto``: per batch, on ``sample_images`` of its images (evenly spaced), where full
    matching finds each patch's nearest patch in each other image (last stage, raw features); the
    smallest of ``radii`` within which at least ``min_aligned_fraction`` of them lie (Chebyshev, grid
    cells, from the patch's own position) is the batch's radius, else it is matched in full. No labels:
    a fixtured part's look-alikes sit where the patch is, a posed part's anywhere."""

    sample_images: int = setting(
        "Images the statistic is measured on (every pair of them, each a full matching of one stage): a few "
        "are enough, a pair costs what one image pair of one mutual-scoring pass does.",
        default=6, ge=2,
    )
    min_aligned_fraction: float = setting(
        "Fraction of the nearest patches that must lie within a radius for it to be chosen. Measured "
        "(bench_auto_match.py, mobilenetv2, 256 px, 32x32 grid): fixtured generated parts 0.75-0.92 within 2 "
        "cells, posed ones 0.47-0.49; a plain background or a uniform surface lowers it, as its patches have "
        "look-alikes anywhere.",
        default=0.6, gt=0, le=1,
    )
    radii: list[int] = setting("Candidate radii, the smallest safe one wins.", default_factory=lambda: [0, 1, 2],
                               ge=0)

    def check(self) -> None:
        if not self.radii:
            raise FieldError("radii", "needs at least one candidate radius")


@dataclass
class MuscConfig(Section):
    """The MuSc scorer: LNAMD degrees, mutual scoring interval, RsCIN windows, maps."""

    aggregation_degrees: list[int] = setting(
        "LNAMD neighbourhood sizes r (odd integers); each stage is scored at every degree.",
        default_factory=lambda: [1, 3, 5],
    )
    aggregation: Literal["lnamd", "snamd"] = setting(
        "How each stage's patch grid becomes the tokens mutual scoring compares: 'lnamd' (MuSc 2024) scores "
        "every degree of aggregation_degrees in its own pass; 'snamd' (MuSc-V2) fuses the degrees into one "
        "token per patch (each degree's neighbourhood mean weighted by similarity to the patch, "
        "snamd_temperature), so each stage is scored once: mutual scoring costs 1/len(aggregation_degrees).",
        default="lnamd", hashed_if_set=True,
    )
    snamd_temperature: float | Literal["auto"] = setting(
        "snamd only: T of the neighbour weights exp(-distance / T), distances between the layer-normalised "
        "tokens. 1.0 is the published formula; on our tokens it gives the centre 70-87% of a 3x3 window's "
        "weight on MobileNetV2 (median neighbour distance 3-4, C = 32 and 96) and 100% on a ViT-B-16 "
        "(median 14, C = 768; random init, no real ViT weights reachable): SNAMD then degenerates to "
        "degree 1. 'auto': the median neighbour distance of the stage over the batch (references "
        "included), so a typical neighbour weighs 1/e of the centre on any backbone (centre 25% of a 3x3 "
        "window). MVTec bottle, MobileNetV2: image / pixel AUROC 99.1 / 98.7 with 'auto', 99.1 / 98.5 with 1.0.",
        default="auto", hashed_if_set=True,
    )
    match_radius: int | Literal["auto"] | None = setting(
        "Which patches of the other images a patch is compared with: null compares with all of them (MuSc); "
        "an integer r only with those within r grid cells (Chebyshev) of its own position, for parts that sit "
        "in the same place in every image (fixtures): (2r+1)^2 / patches of the cost, and a normal structure "
        "at a place where the fixture has none is found; 'auto' chooses per batch (auto_match).",
        default=None, hashed_if_set=True,
    )
    auto_match: AutoMatchConfig = setting("How match_radius 'auto' chooses a batch's matching.",
                                          default_factory=AutoMatchConfig, hashed_if_set=True)
    rescoring: Literal["rscin", "rscon"] = setting(
        "How raw image scores are re-scored over similar images: 'rscin' (MuSc 2024) by the images' global "
        "embeddings, windows rscin_windows; 'rscon' (MuSc-V2) by each image's anomaly-salient token (its "
        "fused token at its highest-scoring patch, second-to-last stage), windows rscon_windows. Null or [] "
        "windows disable re-scoring.",
        default="rscin", hashed_if_set=True,
    )
    topmin_max: float = setting(
        "X of the interval average: keep the smallest X fraction of the N-1 per-image distances "
        "of a patch (at least one image).",
        default=0.3,
        gt=0,
        le=1,
    )
    topmin_min: float = setting(
        "Y of the interval average (paper appendix A.2.3): drop the smallest Y fraction first, "
        "averaging the [Y, X) interval. 0 keeps the paper's default.",
        default=0.0,
    )
    rscin_windows: list[int] | None = setting(
        "RsCIN k-nearest-neighbour windows (MVTec [1, 2, 3], VisA [1, 8, 9]); null or [] disables "
        "re-scoring.",
        default_factory=lambda: [1, 2, 3],
    )
    rscon_windows: list[int] | None = setting(
        "RsCon k-nearest-neighbour windows (published: [1, 7] for every dataset); 1 is always added, as the "
        "published code does (the image's own score is one of the averaged terms). Null or [] disables "
        "re-scoring.",
        default_factory=lambda: [1, 7], hashed_if_set=True,
    )
    gaussian_sigma: float = setting(
        "Sigma in pixels of the Gaussian smoothing of the upsampled anomaly maps; 0 disables it.",
        default=4.0,
        ge=0,
    )
    tile_images: int | None = setting(
        "Images per tile side in mutual scoring (a tile compares tile_images x tile_images images). "
        "null chooses it from the memory budget and the device.",
        default=None,
        ge=1,
    )
    memory_budget_mb: int | None = setting(
        "Memory the similarity tile may use in mutual scoring; null: a quarter of free GPU memory on "
        "CUDA, a cache-sized tile on CPU.",
        default=None,
        ge=1,
    )
    matmul_precision: Literal["auto", "fp32", "fp16", "bf16"] = setting(
        "Input precision of the mutual-scoring matmuls (always fp32 accumulation): 'auto' is fp16 on "
        "CUDA, fp32 on CPU. bf16 also runs on CPU (fast only with AMX / AVX512-BF16); fp16 is CUDA only.",
        default="auto",
    )
    foreground: ForegroundConfig = setting("Optional foreground mask (PatchEAD+ visual prompt).",
                                        default_factory=ForegroundConfig)
    align: bool = setting(
        "PatchEAD+ alignment for MuSc (evaluation only; the nightly job extracts before it could warp): "
        "warp every subset onto its reference before feature extraction (limits in alignment); patches a "
        "warp filled in get no score, and the maps are moved back onto each image. No 180-degree copies: "
        "mutual scoring compares every image with all the others.",
        default=False,
    )
    alignment: AlignmentConfig = setting("Reference choice and limits of align.", default_factory=AlignmentConfig,
                                         run_only=True)

    def check(self) -> None:
        if isinstance(self.match_radius, int) and self.match_radius < 0:
            raise FieldError("match_radius", f"must be null, 'auto' or an integer >= 0, got {self.match_radius}")
        if not self.aggregation_degrees or any(r < 1 or r % 2 == 0 for r in self.aggregation_degrees):
            raise FieldError("aggregation_degrees", f"must be odd positive integers, got {self.aggregation_degrees}")
        if not 0.0 <= self.topmin_min < self.topmin_max:
            raise FieldError("topmin_min", f"must be in [0, topmin_max), got {self.topmin_min}")
        for key in ("rscin_windows", "rscon_windows"):
            if any(k < 1 for k in getattr(self, key) or []):
                raise FieldError(key, f"windows must be >= 1, got {getattr(self, key)}")
        if not isinstance(self.snamd_temperature, str) and self.snamd_temperature <= 0:
            raise FieldError("snamd_temperature", f"must be a positive number or 'auto', got {self.snamd_temperature}")

    def precomputed_features_problem(self) -> tuple[str, str] | None:
        """(key, why) when these settings cannot score features extracted ahead of time, as the
        nightly job does; None when they can."""
        if self.align:
            return "align", "alignment is for evaluation: the job extracts features before it could warp"
        return None


@dataclass
class PatchEADConfig(Section):
    """PatchEAD (training-free, patch-only): cosine distances between raw patch tokens (Eq. 1-4)."""

    mode: Literal["batch", "fewshot"] = setting(
        "'batch' (zero-shot: each image against the rest of its batch) or 'fewshot' (against N known-good "
        "reference images).",
        default="batch",
    )
    batch_size: int = setting("Batch zero-shot: images per batch (paper: 64), seeded random batches.",
                         default=64, ge=2)
    image_fraction: float = setting(
        "Batch mode: K_P = max(1, fraction x N) reference images averaged per patch (paper: 0.3).", default=0.3,
        gt=0, le=1,
    )
    fewshot_images: int = setting("Few-shot mode: K_P (paper: 1).", default=1, ge=1)
    reference_images: int = setting(
        "Few-shot mode in evaluation: how many known-good train images of the category are the references "
        "(paper: 1, 2 or 4 shots).",
        default=4,
        ge=1,
        former_name="fewshot_prompts",
    )
    patch_match: Literal["nearest", "farthest"] = setting(
        "Eq. 2 per reference image: 'nearest' = min over its patches of the cosine distance (the reading "
        "consistent with nearest-neighbour matching, default); 'farthest' = max, as the text literally says.",
        default="nearest",
    )
    image_selection: Literal["nearest", "farthest"] = setting(
        "Eq. 3: average the K_P references with the smallest distances ('nearest', default) or the "
        "'top K_P highest-scoring' ones ('farthest', the literal text).",
        default="nearest",
    )
    top_patch_fraction: float = setting("Eq. 4: image score = mean of the top max(1, rho L) patch scores; rho.",
                                         default=0.01, gt=0, le=1)
    gaussian_sigma: float = setting("Smoothing of the upsampled maps in pixels (0: none).", default=4.0, ge=0)
    seed: int = setting("Seed of the batch split.", default=0)
    foreground: ForegroundConfig = setting("Optional foreground mask (PatchEAD+).", default_factory=ForegroundConfig)
    align: bool = setting(
        "PatchEAD+ alignment: warp images onto a common pose before feature extraction (batch: onto the "
        "batch's reference; few-shot: the references onto each query; limits in alignment); where a fit was "
        "accepted, every reference image also offers the patches of its 180-degree-rotated copy (never an "
        "image's own copy), and patches that a warp filled in are not scored.",
        default=False,
    )
    alignment: AlignmentConfig = setting("Reference choice and limits of align.", default_factory=AlignmentConfig,
                                         run_only=True)

    def precomputed_features_problem(self) -> tuple[str, str] | None:
        """(key, why) when these settings cannot score features extracted ahead of time, as the
        nightly job does (batches of its subsets); None when they can."""
        if self.mode != "batch" or self.align:
            return "", "the job runs PatchEAD in batch mode without alignment (mode: batch, align: false)"
        return None

