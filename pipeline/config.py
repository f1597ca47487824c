"""Typed, validated configuration: the one place every YAML key is defined and documented.

Each config is a dataclass whose fields carry their documentation in ``metadata["doc"]``.
``load_config`` turns a YAML file (plus ``key.path=value`` overrides) into one of these, and
rejects unknown keys, wrong types and out-of-range values with a message that names the key.
``python -m pipeline.config`` prints every key with its type, default and documentation.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml


class ConfigError(ValueError):
    """A config value is missing, unknown, mistyped or out of range; the message names the key."""


def _doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field with its documentation attached (shown by ``describe``)."""
    if "default_factory" in kwargs:
        return field(default_factory=kwargs.pop("default_factory"), metadata={"doc": text})
    return field(metadata={"doc": text}, **kwargs)


@dataclass
class BackboneConfig:
    """Which network turns images into multi-stage patch features and an image embedding."""

    family: Literal["open_clip", "timm_vit", "timm_cnn"] = _doc(
        "Model family: 'open_clip' (CLIP ViTs, e.g. ViT-L-14-336), 'timm_vit' (DINO / DINOv2 ViTs), "
        "'timm_cnn' (any timm CNN with features_only, e.g. mobilenetv2_100, wide_resnet50_2).",
        default="open_clip",
    )
    name: str = _doc("Model name in its family's registry (open_clip or timm).", default="ViT-B-16")
    weights: str | None = _doc(
        "Checkpoint to load: a local path or any fsspec URI (s3://bucket/key, gs://, https:// on "
        "reachable networks). Safetensors or a PyTorch state dict; never unpickles arbitrary objects. "
        "Required unless random_init is true.",
        default=None,
    )
    random_init: bool = _doc(
        "Use randomly initialised weights. Only for tests and demos: every output made this way is "
        "marked as not meaningful.",
        default=False,
    )
    image_size: int = _doc(
        "Square input size in pixels. ViTs: a multiple of the patch size; the position embedding is "
        "interpolated (e.g. ViT-L-14-336 at 518 gives a 37x37 grid).",
        default=224,
    )
    layers: list[int] | None = _doc(
        "ViTs: 0-based block indices whose output patch tokens are the stages (default: the ends of 4 "
        "evenly divided stages, e.g. [5, 11, 17, 23] for 24 blocks). CNNs: timm out_indices of the "
        "feature levels (default [1, 2]: strides 4 and 8 on most timm CNNs).",
        default=None,
    )
    pad_type: str | None = _doc(
        "timm_cnn only: padding mode passed to timm (e.g. 'same' for TF-ported weights).", default=None
    )
    mean: list[float] | None = _doc(
        "Per-channel normalisation mean for RGB in [0, 1] (default: the model's own).", default=None
    )
    std: list[float] | None = _doc("Per-channel normalisation std (default: the model's own).", default=None)
    device: str = _doc("'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.", default="auto")
    batch_size: int = _doc("Images per forward pass during feature extraction.", default=8)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _doc(
        "Autocast precision for the forward pass: 'auto' is bf16 on CUDA and fp32 on CPU.", default="auto"
    )
    cache_dir: str = _doc(
        "Local directory where remote (s3://...) weights are copied once before loading.",
        default="~/.cache/musc-pipeline/weights",
    )


@dataclass
class ForegroundConfig:
    """PatchEAD+'s foreground mask, usable by MuSc too: down-weight background patch scores."""

    enabled: bool = _doc(
        "Weight patch scores by the backbone's last-layer CLS-to-patch attention (ViT backbones only): "
        "min-max normalised per image, patches above threshold keep their score, the rest are scaled by "
        "background_weight.",
        default=False,
    )
    threshold: float = _doc("Normalised attention above which a patch is foreground (paper: 0.05).", default=0.05)
    background_weight: float = _doc("Factor on background patch scores (paper: 0.5).", default=0.5)


@dataclass
class MuscConfig:
    """The MuSc scorer: LNAMD degrees, mutual scoring interval, RsCIN windows, maps."""

    aggregation_degrees: list[int] = _doc(
        "LNAMD neighbourhood sizes r (odd integers); each stage is scored at every degree.",
        default_factory=lambda: [1, 3, 5],
    )
    topmin_max: float = _doc(
        "X of the interval average: keep the smallest X fraction of the N-1 per-image distances "
        "of a patch (at least one image).",
        default=0.3,
    )
    topmin_min: float = _doc(
        "Y of the interval average (paper appendix A.2.3): drop the smallest Y fraction first, "
        "averaging the [Y, X) interval. 0 keeps the paper's default.",
        default=0.0,
    )
    rscin_windows: list[int] | None = _doc(
        "RsCIN k-nearest-neighbour windows (MVTec [1, 2, 3], VisA [1, 8, 9]); null or [] disables "
        "re-scoring.",
        default_factory=lambda: [1, 2, 3],
    )
    gaussian_sigma: float = _doc(
        "Sigma in pixels of the Gaussian smoothing of the upsampled anomaly maps; 0 disables it.",
        default=4.0,
    )
    tile_images: int | None = _doc(
        "Images per tile side in mutual scoring (a tile compares tile_images x tile_images images). "
        "null chooses it from the memory budget and the device.",
        default=None,
    )
    memory_budget_mb: int | None = _doc(
        "Memory the similarity tile may use in mutual scoring; null: a quarter of free GPU memory on "
        "CUDA, a cache-sized tile on CPU.",
        default=None,
    )
    matmul_precision: Literal["auto", "fp32", "fp16", "bf16"] = _doc(
        "Input precision of the mutual-scoring matmuls (always fp32 accumulation): 'auto' is fp16 on "
        "CUDA, fp32 on CPU.",
        default="auto",
    )
    foreground: ForegroundConfig = _doc("Optional foreground mask (PatchEAD+ visual prompt).",
                                        default_factory=ForegroundConfig)
    align: bool = _doc(
        "PatchEAD+ alignment for MuSc (evaluation only; the nightly job extracts before it could warp): "
        "warp every subset onto its first image before feature extraction; patches a warp filled in get "
        "no score, and the maps are moved back onto each image. No 180-degree copies: mutual scoring "
        "compares every image with all the others.",
        default=False,
    )


@dataclass
class PatchEADConfig:
    """PatchEAD (training-free, patch-only): cosine distances between raw patch tokens (Eq. 1-4)."""

    mode: Literal["batch", "fewshot"] = _doc(
        "'batch' (zero-shot: each image against the rest of its batch) or 'fewshot' (against N normal "
        "reference images).",
        default="batch",
    )
    batch_size: int = _doc("Batch zero-shot: images per batch (paper: 64), seeded random batches.", default=64)
    image_fraction: float = _doc(
        "Batch mode: K_P = max(1, fraction x N) reference images averaged per patch (paper: 0.3).", default=0.3
    )
    fewshot_images: int = _doc("Few-shot mode: K_P (paper: 1).", default=1)
    fewshot_prompts: int = _doc(
        "Few-shot mode in evaluation: how many normal train images of the category are the prompts (paper: "
        "1, 2 or 4 shots).",
        default=4,
    )
    patch_match: Literal["nearest", "farthest"] = _doc(
        "Eq. 2 per reference image: 'nearest' = min over its patches of the cosine distance (the reading "
        "consistent with nearest-neighbour matching, default); 'farthest' = max, as the text literally says.",
        default="nearest",
    )
    image_selection: Literal["nearest", "farthest"] = _doc(
        "Eq. 3: average the K_P references with the smallest distances ('nearest', default) or the "
        "'top K_P highest-scoring' ones ('farthest', the literal text).",
        default="nearest",
    )
    top_patch_fraction: float = _doc("Eq. 4: image score = mean of the top max(1, rho L) patch scores; rho.",
                                     default=0.01)
    gaussian_sigma: float = _doc("Smoothing of the upsampled maps in pixels (0: none).", default=4.0)
    seed: int = _doc("Seed of the batch split.", default=0)
    foreground: ForegroundConfig = _doc("Optional foreground mask (PatchEAD+).", default_factory=ForegroundConfig)
    align: bool = _doc(
        "PatchEAD+ alignment: warp images onto a common pose before feature extraction (batch: onto the "
        "batch's first image; few-shot: the prompts onto each query); every reference image also offers "
        "the patches of its 180-degree-rotated copy (never an image's own copy), and patches that a warp "
        "filled in are not scored.",
        default=False,
    )


@dataclass
class DatasetConfig:
    """A benchmark dataset on local disk in one of the supported folder layouts."""

    root: str = _doc("Dataset root directory.", default="demo_data")
    layout: Literal["mvtec", "visa", "btad", "mpdd"] = _doc("Folder layout of the dataset.", default="mvtec")
    categories: list[str] | None = _doc("Categories to evaluate; null means all found under root.", default=None)
    split_csv: str | None = _doc(
        "VisA only: the split CSV (default <root>/split_csv/1cls.csv).", default=None
    )


@dataclass
class SyntheticConfig:
    """Generate a synthetic dataset before evaluating (the demo and the tests use this)."""

    enabled: bool = _doc("Generate the dataset into dataset.root when it does not exist yet.", default=False)
    categories: list[str] | None = _doc("Synthetic categories to generate (null: all).", default=None)
    n_train: int = _doc("Normal training images per category.", default=0)
    n_test_good: int = _doc("Normal test images per category.", default=10)
    n_test_defect: int = _doc("Defective test images per category.", default=10)
    image_size: int = _doc("Side of the generated images in pixels.", default=224)
    seed: int = _doc("Random seed of the generator.", default=0)


@dataclass
class EvalConfig:
    """`python -m pipeline.evaluate`: MuSc on a benchmark dataset, paper-style metrics table."""

    dataset: DatasetConfig = _doc("Which dataset to evaluate.", default_factory=DatasetConfig)
    synthetic: SyntheticConfig = _doc("Optional synthetic data generation.", default_factory=SyntheticConfig)
    backbone: BackboneConfig = _doc("Feature extractor.", default_factory=BackboneConfig)
    scorer: Literal["musc", "patchead"] = _doc("Zero-shot scorer: MuSc or PatchEAD (settings in musc / patchead).",
                                               default="musc")
    musc: MuscConfig = _doc("MuSc settings.", default_factory=MuscConfig)
    patchead: PatchEADConfig = _doc(
        "PatchEAD settings. Batch mode scores each subset (divide_num) in seeded batches; few-shot mode scores "
        "every test image against the category's first patchead.fewshot_prompts normal train images.",
        default_factory=PatchEADConfig,
    )
    divide_num: int = _doc(
        "Split each category's test images into this many random subsets and score each subset on its "
        "own (paper Table 7); 1 scores the whole category at once.",
        default=1,
    )
    seed: int = _doc("Seed of the subset split.", default=0)
    output_dir: str = _doc("Where the metrics table (txt, csv, json) is written.", default="outputs/eval")
    save_maps: int = _doc(
        "Write heat-map PNGs for up to this many images per category (the most anomalous first); 0: none.",
        default=0,
    )

    def scorer_settings(self) -> MuscConfig | PatchEADConfig:
        """The settings of the chosen scorer."""
        return self.patchead if self.scorer == "patchead" else self.musc


@dataclass
class InputsConfig:
    """Which images the nightly job scores and how they are grouped (exactly one of uris / manifest)."""

    uris: list[str] | None = _doc(
        "Globs or prefixes of image URIs: s3://bucket/2026-11-22/**/*.png, a local folder, any fsspec URI. "
        "A prefix without wildcards means every image below it.",
        default=None,
    )
    manifest: str | None = _doc(
        "A Parquet or CSV table with a 'uri' column and optional 'group', 'label' (0/1, enables metrics) "
        "and 'mask_uri' columns.",
        default=None,
    )
    group_template: str | None = _doc(
        "With uris: a path template below the listing root, e.g. '{line}/{product}/{name}'; every field "
        "but {name} (and fields starting with '_', which match a folder but are ignored) forms the group "
        "key MuSc scores within. null: the parent folder is the group.",
        default=None,
    )


@dataclass
class OutputConfig:
    """Where the job writes its results."""

    prefix: str = _doc(
        "Output location: s3://bucket/path or a local folder. Holds scores/ (Hive-partitioned Parquet), "
        "heatmaps/, metrics/ and runs/<run_id>/ (manifest, _SUCCESS, intermediate shards).",
        default="outputs/nightly",
    )
    heatmaps: Literal["flagged", "all", "none"] = _doc(
        "Which images get a heat-map PNG (the photo beside the map over it, one colour scale per group).",
        default="flagged",
    )
    keep_features: bool = _doc(
        "Keep the fp16 feature shards (runs/<run_id>/features/) after a successful run. They are large "
        "(ViT-L-14-336 at 518 px: ~11 MB per image), so by default they are deleted once the run succeeded.",
        default=False,
    )


@dataclass
class ExtractionConfig:
    """Stage 1: decoding on CPU tasks, feature extraction in an actor pool."""

    shard_size: int = _doc(
        "Images per feature shard (one Parquet object, the unit of work and of re-run skipping). Part of "
        "the run's identity: changing it starts a new run id.",
        default=64,
    )
    num_actors: int = _doc("Feature-extraction actors (one backbone load each).", default=1)
    num_gpus_per_actor: float = _doc(
        "GPUs per extraction actor (0: CPU; fractions share a GPU between actors).", default=0.0
    )
    num_cpus_per_decode_task: float = _doc(
        "CPUs reserved per decoding task (read bytes, decode, resize). Decoding is light, and a value "
        "different from num_cpus_per_actor keeps Ray Data from fusing it into the extraction actors, so "
        "decoding overlaps extraction instead of queueing in front of it.",
        default=0.5,
    )
    num_cpus_per_actor: int = _doc(
        "CPU cores per extraction actor (its torch thread count). Leave cores for the decoding tasks: "
        "actors that reserve every CPU of the cluster starve them and the stage waits forever.",
        default=1,
    )


@dataclass
class ScoringConfig:
    """Stage 2: mutual scoring of subsets of each group, then per-group statistics."""

    max_subset_size: int = _doc(
        "At most this many images are scored together (MuSc's cost grows with the square of it; paper "
        "Table 7: subsets of 14-56 images lose at most 1.1 points of image AUROC). A group is split into "
        "as few seeded random subsets as keep each at most this size.",
        default=200,
    )
    seed: int = _doc("Seed of the subset split (per group, combined with the group name).", default=0)
    num_gpus_per_task: float = _doc("GPUs per subset-scoring task (0: CPU).", default=0.0)
    num_cpus_per_task: int = _doc("CPU cores per subset-scoring task (its torch thread count).", default=1)
    max_retries: int = _doc(
        "Ray retries of a scoring or group task whose worker died; the retried task rewrites the same "
        "objects, so no row is lost or duplicated.",
        default=3,
    )


@dataclass
class FlaggingConfig:
    """Which images of a group are flagged as anomalous for review."""

    policy: Literal["top_fraction", "robust_z", "threshold"] = _doc(
        "'robust_z' (default): modified z-score of the score within its group above value (default 3.5, "
        "Iglewicz-Hoaglin), i.e. statistical outliers only; 'top_fraction': the highest-scoring fraction "
        "value of each group (a fixed review budget, default 0.05); 'threshold': score >= value (a "
        "calibrated line; value required).",
        default="robust_z",
    )
    value: float | None = _doc("The policy's parameter (null: the policy's default).", default=None)


FLAG_DEFAULT_VALUES = {"robust_z": 3.5, "top_fraction": 0.05}


@dataclass
class JobConfig:
    """`python jobs/musc.py`: the nightly MuSc job on Ray (inputs -> features -> subsets -> scores)."""

    inputs: InputsConfig = _doc("What to score.", default_factory=InputsConfig)
    output: OutputConfig = _doc("Where results go.", default_factory=OutputConfig)
    run_id: str | None = _doc(
        "Name of this run ([A-Za-z0-9._-]). Re-running an existing run id resumes it: finished shards, "
        "subsets and groups are skipped. null: '<run_date>-<config hash>', so re-running the same night "
        "with the same config resumes.",
        default=None,
    )
    run_date: str | None = _doc(
        "The batch's date (YYYY-MM-DD), the scores partition. null: today (UTC) for a new run, the "
        "recorded date when resuming a run id.",
        default=None,
    )
    ray_address: str | None = _doc(
        "Ray cluster to use: null connects to the cluster the job was submitted to (ray job submit sets "
        "RAY_ADDRESS) or starts Ray locally; 'auto' or 'ray://host:10001' connect explicitly.",
        default=None,
    )
    storage_options: dict[str, Any] = _doc(
        "Passed to fsspec for every URI (s3fs: endpoint_url, client_kwargs.region_name, ...). Leave "
        "credentials to the environment, an AWS profile or the instance role; values are never logged.",
        default_factory=dict,
    )
    detector: Literal["musc", "patchead", "vitad", "dinomaly", "sowa"] = _doc(
        "Who scores: 'musc' or 'patchead' (zero-shot, images of a group scored against each other in seeded "
        "subsets; uses backbone, musc or patchead, scoring) or a trained 'vitad' / 'dinomaly' / 'sowa' from "
        "detector_checkpoint (each image on its own, O(N); backbone, musc and patchead are then unused; SOWA "
        "scores zero-shot, or few-shot with references). The outputs are the same tables either way.",
        default="musc",
    )
    detector_checkpoint: str | None = _doc(
        "Checkpoint folder of the trained detector (local or s3://, as jobs/sweep.py writes under best/).",
        default=None,
    )
    references: str | None = _doc(
        "SOWA few-shot: a prefix or glob of known-good images, grouped like the inputs (inputs.group_template, "
        "or one group per folder under the prefix); each group's first reference_images (by URI) form its "
        "memory bank. Every input group needs references. null: SOWA scores zero-shot.",
        default=None,
    )
    reference_images: int = _doc("SOWA few-shot: known-good images per group in the memory bank (paper: 1-4).",
                                 default=4)
    backbone: BackboneConfig = _doc("Feature extractor.", default_factory=BackboneConfig)
    musc: MuscConfig = _doc("MuSc settings (detector: musc).", default_factory=MuscConfig)
    patchead: PatchEADConfig = _doc(
        "PatchEAD settings (detector: patchead): batch mode only, each subset is a batch (subsets larger than "
        "patchead.batch_size are split again); no alignment, which warps images before extraction.",
        default_factory=PatchEADConfig,
    )
    extraction: ExtractionConfig = _doc("Feature-extraction stage (for a trained detector: its scoring actors).",
                                        default_factory=ExtractionConfig)
    scoring: ScoringConfig = _doc("Mutual-scoring stage.", default_factory=ScoringConfig)
    flagging: FlaggingConfig = _doc("Anomaly flags.", default_factory=FlaggingConfig)
    demo: SyntheticConfig = _doc(
        "Demo data: when enabled and inputs.manifest does not exist, generate a synthetic dataset in the "
        "manifest's folder and write the manifest (with labels and masks, so metrics are computed).",
        default_factory=SyntheticConfig,
    )

    def scores_subsets(self) -> bool:
        """Zero-shot scorers compare the images of a group (subsets of feature shards); trained detectors
        score each image alone in the first stage."""
        return self.detector in ("musc", "patchead")

    def scorer_settings(self) -> MuscConfig | PatchEADConfig:
        """The settings of the zero-shot scorer."""
        return self.patchead if self.detector == "patchead" else self.musc

    def flag_value(self) -> float:
        """The flag policy's parameter, with the documented default filled in."""
        return self.flagging.value if self.flagging.value is not None else FLAG_DEFAULT_VALUES[self.flagging.policy]


def _vit_encoder(name: str, image_size: int, layers: list[int]) -> BackboneConfig:
    return BackboneConfig(family="timm_vit", name=name, image_size=image_size, layers=layers)


@dataclass
class ViTADConfig:
    """ViTAD (Zhang et al.): plain ViT encoder -> one linear fuser -> plain ViT decoder one stage shorter."""

    encoder: BackboneConfig = _doc(
        "Frozen encoder: a timm ViT split into 4 stages; layers are the 4 stage ends (DINO ViT-S/16: "
        "blocks 2, 5, 8, 11). The last stage feeds the fuser; stages 2-4 are the restraint stages.",
        default_factory=lambda: _vit_encoder("vit_small_patch16_224.dino", 256, [2, 5, 8, 11]),
    )
    decoder_depth: int = _doc(
        "Decoder blocks, split evenly into 3 stages that reconstruct encoder stages 4, 3, 2 (9 for a "
        "12-block encoder: one stage shorter).",
        default=9,
    )
    decoder_heads: int | None = _doc("Decoder attention heads (null: embedding dim / 64).", default=None)
    loss: Literal["pointwise", "flat"] = _doc(
        "'pointwise': mean over positions of the cosine distance per restraint stage (the paper's loss); "
        "'flat': cosine distance of the whole flattened feature map (the paper's Cos_f ablation).",
        default="pointwise",
    )
    score_pool_kernel: int = _doc(
        "Image score = max of the anomaly map after average pooling with this kernel (pixels, stride 1).",
        default=16,
    )
    lr: float = _doc("AdamW learning rate (paper: 1e-4).", default=1e-4)
    weight_decay: float = _doc("AdamW weight decay (paper: 1e-4).", default=1e-4)
    lr_step_at: float = _doc(
        "Step schedule: the learning rate drops 10x after this fraction of the iterations (paper: epoch 80 "
        "of 100).",
        default=0.8,
    )


@dataclass
class DinomalyConfig:
    """Dinomaly (Guo et al.): middle-layer taps -> noisy MLP bottleneck -> linear-attention decoder."""

    encoder: BackboneConfig = _doc(
        "Frozen encoder: a DINOv2-with-registers ViT; layers are the tapped middle blocks (ViT-B: 2-9; "
        "ViT-L: 4, 6, ..., 18). Registers and CLS are dropped.",
        default_factory=lambda: _vit_encoder("vit_base_patch14_reg4_dinov2.lvd142m", 392, list(range(2, 10))),
    )
    resize: int | None = _doc(
        "Resize images to this size, then centre-crop encoder.image_size (paper: 448 -> 392). null: "
        "resize straight to encoder.image_size.",
        default=448,
    )
    decoder_depth: int = _doc("Decoder blocks (paper: 8, one per tapped layer).", default=8)
    decoder_heads: int | None = _doc("Decoder attention heads (null: embedding dim / 64).", default=None)
    attention: Literal["linear", "softmax"] = _doc("Decoder token mixer (paper: linear).", default="linear")
    dropout: float = _doc("Dropout rate of the noisy bottleneck (paper: 0.2; 0.4 for diverse data).", default=0.2)
    groups: int = _doc(
        "Loose constraint: tapped layers and decoder layers are averaged in this many contiguous groups and "
        "compared group to group (paper: 2).",
        default=2,
    )
    loss: Literal["global_hm", "flat", "pointwise"] = _doc(
        "'global_hm': global cosine loss with hard mining (paper); 'flat' without hard mining; "
        "'pointwise': mean point-wise cosine distance.",
        default="global_hm",
    )
    hard_mining_rate: float = _doc(
        "Final fraction of well-reconstructed points whose gradient is down-weighted (paper: 0.9).", default=0.9
    )
    hard_mining_warmup: float = _doc(
        "The hard-mining rate rises linearly from 0 over this fraction of the iterations (paper: 1000 of "
        "10000).",
        default=0.1,
    )
    easy_grad_weight: float = _doc("Gradient factor of the down-weighted points (paper: 0.1).", default=0.1)
    top_fraction: float = _doc("Image score = mean of the top fraction of map pixels (paper: 0.01).", default=0.01)
    lr: float = _doc("StableAdamW peak learning rate (paper: 2e-3).", default=2e-3)
    final_lr: float = _doc("Learning rate at the end of the cosine decay (paper: 2e-4).", default=2e-4)
    warmup: float = _doc("Linear warm-up over this fraction of the iterations (paper: 100 of 10000).", default=0.01)
    weight_decay: float = _doc("Weight decay (paper: 1e-4).", default=1e-4)


@dataclass
class SOWAConfig:
    """SOWA (Hu et al.): frozen CLIP, a frozen-window attention adapter after each of its 4 stages,
    learnable normal/abnormal prompts; trained on an auxiliary labelled set (images with masks)."""

    clip: BackboneConfig = _doc(
        "Frozen CLIP (family open_clip, a model with CLIP's own text tower, e.g. ViT-L-14-336). The weights "
        "must be the full open_clip checkpoint (vision and text). layers are the 4 stage ends (null: 4 "
        "evenly divided stages, 6 blocks each for ViT-L).",
        default_factory=lambda: BackboneConfig(family="open_clip", name="ViT-L-14-336", image_size=336),
    )
    windows: list[int] = _doc(
        "Square window side (in patches) of each stage's adapter, shallow to deep; each must divide the patch "
        "grid (ViT-L-14-336 at 336 px: 24). Small windows keep shallow stages local, large ones let deep "
        "stages see more context.",
        default_factory=lambda: [2, 4, 6, 12],
    )
    stage_weights: list[float] = _doc("alpha_i of Eq. 2: weight of each stage in the fused map (paper: 1.0).",
                                      default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    prompt_length: int = _doc("Learnable word embeddings before 'normal object' / 'abnormal object' (paper: 12).",
                              default=12)
    lr: float = _doc("Adam learning rate (paper: 1e-3).", default=1e-3)
    dice_weight: float = _doc("lambda_1 of Eq. 5: Dice loss on the fused map (paper: 1.0).", default=1.0)
    focal_weight: float = _doc("lambda_2 of Eq. 5: Focal loss on the fused map (paper: 1.0).", default=1.0)
    bce_weight: float = _doc("lambda_3 of Eq. 5: BCE on the image-level probability (paper: 1.0).", default=1.0)
    focal_gamma: float = _doc("Focal loss focusing parameter.", default=2.0)
    image_score: Literal["mean", "image", "map_max"] = _doc(
        "Image score: 'image' = the CLS embedding's abnormal probability against the prompts, 'map_max' = "
        "the maximum of the (few-shot combined) anomaly map, 'mean' = their average.",
        default="mean",
    )
    shots: int = _doc(
        "Few-shot inference: normal reference images per category whose adapted stage features form the "
        "memory bank (each query patch's cosine distance to its nearest bank patch, averaged over stages, "
        "is added to the zero-shot map). 0: zero-shot. The nightly job takes its own key, references.",
        default=0,
    )


@dataclass
class TrainingConfig:
    """How a detector is trained: one model on the normal images of all categories (multi-class)."""

    iterations: int = _doc("Optimiser steps.", default=10000)
    batch_size: int = _doc("Images per step (paper: 8).", default=8)
    amp: bool = _doc("Mixed precision on CUDA (bf16 autocast); ignored on CPU.", default=True)
    seed: int = _doc("Seed of the weight initialisation and batch order.", default=1)
    eval_every: int = _doc("Evaluate on the validation split every this many steps (0: only at the end).",
                           default=0)
    gaussian_sigma: float = _doc("Gaussian smoothing of the anomaly maps in pixels (0: none).", default=4.0)


@dataclass
class DetectorConfig:
    """A trained detector: which one, its settings, and how it is trained."""

    kind: Literal["vitad", "dinomaly", "sowa"] = _doc(
        "Which detector: 'vitad' and 'dinomaly' reconstruct features and train on normal images; 'sowa' "
        "trains prompts and adapters of a frozen CLIP on an auxiliary labelled set.",
        default="vitad",
    )
    vitad: ViTADConfig = _doc("ViTAD settings (used when kind is vitad).", default_factory=ViTADConfig)
    dinomaly: DinomalyConfig = _doc("Dinomaly settings (used when kind is dinomaly).",
                                    default_factory=DinomalyConfig)
    sowa: SOWAConfig = _doc("SOWA settings (used when kind is sowa).", default_factory=SOWAConfig)
    training: TrainingConfig = _doc("Training loop.", default_factory=TrainingConfig)

    def input_geometry(self) -> tuple[int, int | None]:
        """(encoder input size, resize before the centre crop or None) of the chosen detector."""
        if self.kind == "sowa":
            return self.sowa.clip.image_size, None
        section = self.vitad if self.kind == "vitad" else self.dinomaly
        return section.encoder.image_size, getattr(section, "resize", None)


SEARCH_TYPES = ("loguniform", "uniform", "randint", "choice")


@dataclass
class SchedulerConfig:
    """Early stopping of unpromising trials."""

    kind: Literal["asha", "fifo"] = _doc("'asha' (async successive halving) or 'fifo' (no early stopping).",
                                         default="asha")
    grace_period: int = _doc("ASHA: evaluations every trial gets before it can be stopped.", default=1)
    reduction_factor: int = _doc("ASHA: keep the top 1/reduction_factor at each rung.", default=2)


@dataclass
class PseudoLabelConfig:
    """Train on the images a MuSc run ranked most normal instead of a labelled train split."""

    scores_prefix: str | None = _doc(
        "The scores/ folder of a nightly MuSc job (e.g. s3://bucket/musc/scores); null: use the dataset's "
        "train split.",
        default=None,
    )
    run_id: str | None = _doc("Which run's scores to take (required with scores_prefix).", default=None)
    normal_fraction: float = _doc(
        "Fraction of each group, lowest MuSc scores first, taken as normal (keep it below the share of good "
        "parts).",
        default=0.5,
    )


@dataclass
class SweepConfig:
    """`python jobs/sweep.py`: a Ray Tune sweep of a trained detector, results to object storage."""

    name: str = _doc("Experiment name: the folder under storage_path and output_prefix.", default="sweep")
    detector: DetectorConfig = _doc("The base detector config every trial starts from.",
                                    default_factory=DetectorConfig)
    dataset: DatasetConfig = _doc("Training data (train split, normal images of every category) and the "
                                  "labelled validation data (test split).", default_factory=DatasetConfig)
    synthetic: SyntheticConfig = _doc("Generate a synthetic dataset into dataset.root when it is missing.",
                                      default_factory=SyntheticConfig)
    pseudo_labels: PseudoLabelConfig = _doc("Optional MuSc pseudo-normal training set.",
                                            default_factory=PseudoLabelConfig)
    auxiliary: DatasetConfig = _doc(
        "SOWA only: the labelled dataset it trains on (its test split: images, labels and masks of other "
        "products, as the paper trains on VisA to score MVTec AD and vice versa); dataset is then only "
        "validated on (and gives the few-shot normal images from its train split).",
        default_factory=lambda: DatasetConfig(root="auxiliary_data"),
    )
    auxiliary_synthetic: SyntheticConfig = _doc("Generate a synthetic auxiliary set into auxiliary.root when it "
                                                "is missing.", default_factory=SyntheticConfig)
    search_space: dict[str, Any] = _doc(
        "Detector keys to search, e.g. {'vitad.lr': {type: loguniform, low: 1e-5, high: 1e-3}, "
        "'dinomaly.dropout': {type: choice, values: [0.1, 0.2, 0.4]}}. Types: loguniform, uniform, "
        "randint (low, high) and choice (values).",
        default_factory=dict,
    )
    num_samples: int = _doc("Trials (samples drawn from the search space).", default=8)
    metric: str = _doc("Validation metric to optimise (one of the engine's: mad, image_auroc, ...).",
                       default="mad")
    mode: Literal["max", "min"] = _doc("Whether the metric is maximised or minimised.", default="max")
    evaluations: int = _doc(
        "Validation evaluations per trial, evenly spaced over its iterations (ASHA's time unit).", default=4
    )
    scheduler: SchedulerConfig = _doc("Early stopping.", default_factory=SchedulerConfig)
    max_concurrent: int = _doc("Trials run at once (0: as many as resources allow).", default=0)
    trial_cpus: float = _doc("CPUs per trial.", default=1.0)
    trial_gpus: float = _doc("GPUs per trial (fractions share a GPU).", default=0.0)
    storage_path: str = _doc(
        "Where Tune keeps experiment state and checkpoints (s3://... or a local folder); re-running the "
        "same name resumes the sweep from there.",
        default="outputs/sweeps/tune",
    )
    output_prefix: str = _doc(
        "Where the trials table (trials.parquet) and the best checkpoint and config (best/) are written.",
        default="outputs/sweeps",
    )
    storage_options: dict[str, Any] = _doc("Passed to fsspec for output_prefix (e.g. endpoint_url).",
                                           default_factory=dict)
    seed: int = _doc("Seed of the search-space sampling.", default=0)


C = TypeVar("C")


def _validate_values(cfg: Any, prefix: str) -> None:
    """Range checks that types alone cannot express."""

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"config key '{prefix}{key}': {why}")

    if isinstance(cfg, BackboneConfig):
        if cfg.image_size <= 0:
            raise bad("image_size", f"must be positive, got {cfg.image_size}")
        if cfg.batch_size <= 0:
            raise bad("batch_size", f"must be positive, got {cfg.batch_size}")
        for key in ("mean", "std"):
            value = getattr(cfg, key)
            if value is not None and len(value) != 3:
                raise bad(key, f"needs 3 values (R, G, B), got {value}")
        if cfg.std is not None and any(s <= 0 for s in cfg.std):
            raise bad("std", f"values must be positive, got {cfg.std}")
        if cfg.layers is not None and (not cfg.layers or any(i < 0 for i in cfg.layers)):
            raise bad("layers", f"must be a non-empty list of non-negative indices, got {cfg.layers}")
        if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
            raise bad("device", f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {cfg.device!r}")
    elif isinstance(cfg, MuscConfig):
        if not cfg.aggregation_degrees or any(r < 1 or r % 2 == 0 for r in cfg.aggregation_degrees):
            raise bad("aggregation_degrees", f"must be odd positive integers, got {cfg.aggregation_degrees}")
        if not 0.0 < cfg.topmin_max <= 1.0:
            raise bad("topmin_max", f"must be in (0, 1], got {cfg.topmin_max}")
        if not 0.0 <= cfg.topmin_min < cfg.topmin_max:
            raise bad("topmin_min", f"must be in [0, topmin_max), got {cfg.topmin_min}")
        if cfg.rscin_windows and any(k < 1 for k in cfg.rscin_windows):
            raise bad("rscin_windows", f"windows must be >= 1, got {cfg.rscin_windows}")
        if cfg.gaussian_sigma < 0:
            raise bad("gaussian_sigma", f"must be >= 0, got {cfg.gaussian_sigma}")
        if cfg.tile_images is not None and cfg.tile_images < 1:
            raise bad("tile_images", f"must be >= 1 or null, got {cfg.tile_images}")
        if cfg.memory_budget_mb is not None and cfg.memory_budget_mb < 1:
            raise bad("memory_budget_mb", f"must be >= 1 or null, got {cfg.memory_budget_mb}")
    elif isinstance(cfg, ForegroundConfig):
        if not 0 <= cfg.threshold < 1:
            raise bad("threshold", f"must be in [0, 1), got {cfg.threshold}")
        if not 0 <= cfg.background_weight <= 1:
            raise bad("background_weight", f"must be in [0, 1], got {cfg.background_weight}")
    elif isinstance(cfg, PatchEADConfig):
        if cfg.batch_size < 2:
            raise bad("batch_size", f"must be >= 2, got {cfg.batch_size}")
        if not 0 < cfg.image_fraction <= 1:
            raise bad("image_fraction", f"must be in (0, 1], got {cfg.image_fraction}")
        for key in ("fewshot_images", "fewshot_prompts"):
            if getattr(cfg, key) < 1:
                raise bad(key, f"must be >= 1, got {getattr(cfg, key)}")
        if not 0 < cfg.top_patch_fraction <= 1:
            raise bad("top_patch_fraction", f"must be in (0, 1], got {cfg.top_patch_fraction}")
    elif isinstance(cfg, SyntheticConfig):
        for key in ("n_train", "n_test_good", "n_test_defect"):
            if getattr(cfg, key) < 0:
                raise bad(key, f"must be >= 0, got {getattr(cfg, key)}")
        if cfg.image_size < 32:
            raise bad("image_size", f"must be >= 32, got {cfg.image_size}")
    elif isinstance(cfg, InputsConfig):
        if (cfg.uris is None) == (cfg.manifest is None):
            raise bad("uris", "give exactly one of inputs.uris and inputs.manifest")
        if cfg.uris is not None and not cfg.uris:
            raise bad("uris", "must list at least one glob or prefix")
        if cfg.manifest is not None and cfg.group_template is not None:
            raise bad("group_template", "applies to inputs.uris; a manifest gives groups in its 'group' column")
    elif isinstance(cfg, OutputConfig):
        if not cfg.prefix.strip():
            raise bad("prefix", "must not be empty")
    elif isinstance(cfg, ExtractionConfig):
        for key in ("shard_size", "num_actors", "num_cpus_per_actor"):
            if getattr(cfg, key) < 1:
                raise bad(key, f"must be >= 1, got {getattr(cfg, key)}")
        if cfg.num_cpus_per_decode_task <= 0:
            raise bad("num_cpus_per_decode_task", f"must be > 0, got {cfg.num_cpus_per_decode_task}")
        if cfg.num_gpus_per_actor < 0:
            raise bad("num_gpus_per_actor", f"must be >= 0, got {cfg.num_gpus_per_actor}")
    elif isinstance(cfg, ScoringConfig):
        if cfg.max_subset_size < 2:
            raise bad("max_subset_size", f"must be >= 2 (MuSc compares images), got {cfg.max_subset_size}")
        if cfg.num_gpus_per_task < 0:
            raise bad("num_gpus_per_task", f"must be >= 0, got {cfg.num_gpus_per_task}")
        if cfg.num_cpus_per_task < 1:
            raise bad("num_cpus_per_task", f"must be >= 1, got {cfg.num_cpus_per_task}")
        if cfg.max_retries < 0:
            raise bad("max_retries", f"must be >= 0, got {cfg.max_retries}")
    elif isinstance(cfg, FlaggingConfig):
        if cfg.policy == "threshold" and cfg.value is None:
            raise bad("value", "the 'threshold' policy needs a value (the score at or above which to flag)")
        if cfg.policy == "top_fraction" and cfg.value is not None and not 0 < cfg.value <= 1:
            raise bad("value", f"top_fraction must be in (0, 1], got {cfg.value}")
    elif isinstance(cfg, JobConfig):
        if cfg.detector == "patchead" and (cfg.patchead.mode != "batch" or cfg.patchead.align):
            raise bad("patchead", "the job runs PatchEAD in batch mode without alignment (mode: batch, align: false)")
        if cfg.references is not None and cfg.detector != "sowa":
            raise bad("references", f"few-shot references are for detector 'sowa', not '{cfg.detector}'")
        if cfg.reference_images < 1:
            raise bad("reference_images", f"must be >= 1, got {cfg.reference_images}")
        if cfg.detector == "musc" and cfg.musc.align:
            raise bad("musc.align", "alignment is for evaluation: the job extracts features before it could warp")
        if not cfg.scores_subsets() and not cfg.detector_checkpoint:
            raise bad("detector_checkpoint", f"detector '{cfg.detector}' needs a trained checkpoint")
        if cfg.run_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", cfg.run_id):
            raise bad("run_id", f"must be 1-128 characters of [A-Za-z0-9._-], got {cfg.run_id!r}")
        if cfg.run_date is not None:
            try:
                datetime.date.fromisoformat(cfg.run_date)
            except ValueError:
                raise bad("run_date", f"must be a date YYYY-MM-DD, got {cfg.run_date!r}") from None
    elif isinstance(cfg, (ViTADConfig, DinomalyConfig)):
        if cfg.decoder_depth < 1:
            raise bad("decoder_depth", f"must be >= 1, got {cfg.decoder_depth}")
        if cfg.lr <= 0:
            raise bad("lr", f"must be > 0, got {cfg.lr}")
        if isinstance(cfg, ViTADConfig):
            if cfg.decoder_depth % 3:
                raise bad("decoder_depth", f"must split into 3 stages (a multiple of 3), got {cfg.decoder_depth}")
            if not 0 < cfg.lr_step_at <= 1:
                raise bad("lr_step_at", f"must be in (0, 1], got {cfg.lr_step_at}")
            if cfg.score_pool_kernel < 1:
                raise bad("score_pool_kernel", f"must be >= 1, got {cfg.score_pool_kernel}")
        else:
            if not 0 <= cfg.dropout < 1:
                raise bad("dropout", f"must be in [0, 1), got {cfg.dropout}")
            if cfg.groups < 1:
                raise bad("groups", f"must be >= 1, got {cfg.groups}")
            if not 0 <= cfg.hard_mining_rate < 1:
                raise bad("hard_mining_rate", f"must be in [0, 1), got {cfg.hard_mining_rate}")
            if not 0 < cfg.top_fraction <= 1:
                raise bad("top_fraction", f"must be in (0, 1], got {cfg.top_fraction}")
            if cfg.resize is not None and cfg.resize < cfg.encoder.image_size:
                raise bad("resize", f"must be >= encoder.image_size ({cfg.encoder.image_size}), got {cfg.resize}")
    elif isinstance(cfg, SOWAConfig):
        if cfg.clip.family != "open_clip":
            raise bad("clip.family", f"SOWA needs a CLIP model (open_clip), got {cfg.clip.family!r}")
        if len(cfg.windows) != 4 or any(w < 1 for w in cfg.windows):
            raise bad("windows", f"needs 4 positive window sides (one per stage), got {cfg.windows}")
        if len(cfg.stage_weights) != 4:
            raise bad("stage_weights", f"needs 4 weights (one per stage), got {cfg.stage_weights}")
        if cfg.clip.layers is not None and len(cfg.clip.layers) != 4:
            raise bad("clip.layers", f"SOWA has 4 stages: give 4 stage-end blocks, got {cfg.clip.layers}")
        if not 1 <= cfg.prompt_length <= 70:
            raise bad("prompt_length", f"must be in [1, 70] (the prompt must fit CLIP's 77 tokens), got {cfg.prompt_length}")
        if cfg.lr <= 0:
            raise bad("lr", f"must be > 0, got {cfg.lr}")
        for key in ("dice_weight", "focal_weight", "bce_weight", "focal_gamma", "shots"):
            if getattr(cfg, key) < 0:
                raise bad(key, f"must be >= 0, got {getattr(cfg, key)}")
    elif isinstance(cfg, TrainingConfig):
        for key in ("iterations", "batch_size"):
            if getattr(cfg, key) < 1:
                raise bad(key, f"must be >= 1, got {getattr(cfg, key)}")
        if cfg.eval_every < 0:
            raise bad("eval_every", f"must be >= 0, got {cfg.eval_every}")
    elif isinstance(cfg, PseudoLabelConfig):
        if cfg.scores_prefix is not None and not cfg.run_id:
            raise bad("run_id", "pseudo labels need the run id whose scores to use")
        if not 0 < cfg.normal_fraction <= 1:
            raise bad("normal_fraction", f"must be in (0, 1], got {cfg.normal_fraction}")
    elif isinstance(cfg, SweepConfig):
        for key, spec in cfg.search_space.items():
            _check_search_dimension(key, spec, bad)
        for key in ("num_samples", "evaluations"):
            if getattr(cfg, key) < 1:
                raise bad(key, f"must be >= 1, got {getattr(cfg, key)}")
        if cfg.detector.kind == "sowa" and cfg.pseudo_labels.scores_prefix is not None:
            raise bad("pseudo_labels.scores_prefix", "SOWA trains on a labelled auxiliary set, not on pseudo-normals")
        if cfg.detector.kind == "sowa" and Path(cfg.auxiliary.root) == Path(cfg.dataset.root):
            raise bad("auxiliary.root", "SOWA must be trained on another dataset than the one it is validated on")
        if cfg.evaluations > cfg.detector.training.iterations:
            raise bad("evaluations", f"more evaluations ({cfg.evaluations}) than iterations "
                                     f"({cfg.detector.training.iterations})")
    elif isinstance(cfg, EvalConfig):
        if cfg.divide_num < 1:
            raise bad("divide_num", f"must be >= 1, got {cfg.divide_num}")
        if cfg.save_maps < 0:
            raise bad("save_maps", f"must be >= 0, got {cfg.save_maps}")


def _check_search_dimension(key: str, spec: Any, bad: Any) -> None:
    """A search-space entry must name a detector key and a well-formed distribution."""
    node: Any = DetectorConfig
    for part in key.split("."):
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            raise bad(f"search_space.{key}", f"'{part}' is not a detector config key")
        node = typing.get_type_hints(node)[part]
    if not isinstance(spec, dict) or spec.get("type") not in SEARCH_TYPES:
        raise bad(f"search_space.{key}", f"needs type: one of {list(SEARCH_TYPES)}, got {spec!r}")
    if spec["type"] == "choice":
        if not isinstance(spec.get("values"), list) or not spec["values"]:
            raise bad(f"search_space.{key}", "choice needs a non-empty list of values")
    elif not all(isinstance(spec.get(k), (int, float)) for k in ("low", "high")) or spec["low"] >= spec["high"]:
        raise bad(f"search_space.{key}", f"{spec['type']} needs numbers low < high, got {spec!r}")
    elif spec["type"] == "loguniform" and spec["low"] <= 0:
        raise bad(f"search_space.{key}", "loguniform needs low > 0")


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation, converting int->float and dict->dataclass."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {type(value).__name__}")
        return _build(annotation, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"config key '{key}': may not be null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"config key '{key}': {value!r} matches no allowed type")
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(allowed)}")
        return value
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': expected a list, got {type(value).__name__}")
        return [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {type(value).__name__}")
        return dict(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if annotation is str:
        if isinstance(value, datetime.date):  # YAML reads an unquoted 2026-11-22 as a date
            return value.isoformat()
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")


def _build(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known keys: {', '.join(names)})"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, dict) and callable(f.default_factory):
            # a partial section overrides the field's own default (e.g. one key of a detector's
            # encoder), not the section class's defaults
            value = _merged(dataclasses.asdict(f.default_factory()), value)
        kwargs[f.name] = _convert(value, hints[f.name], prefix + f.name)
    cfg = cls(**kwargs)
    for name in names:  # sections left at their defaults must be valid too (e.g. no inputs given at all)
        if name not in data and dataclasses.is_dataclass(hints[name]):
            _validate_defaults(getattr(cfg, name), f"{prefix}{name}.")
    _validate_values(cfg, prefix)
    return cfg


def _merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``, recursing into mappings present in both."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _validate_defaults(cfg: Any, prefix: str) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _validate_defaults(value, f"{prefix}{f.name}.")
    _validate_values(cfg, prefix)


def _apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``a.b.c=value`` override; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key.path=value")
    path, raw = override.split("=", 1)
    _set_path(data, path.strip(), yaml.safe_load(raw))


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key '{path}': '{k}' is not a mapping")
    node[keys[-1]] = value


def with_values(cfg: C, values: dict[str, Any]) -> C:
    """A copy of ``cfg`` with dotted keys set to plain values, validated like a config file."""
    data = config_to_dict(cfg)
    for path, value in values.items():
        _set_path(data, path, value)
    return config_from_dict(type(cfg), data)


def config_from_dict(cls: type[C], data: dict[str, Any] | None, overrides: list[str] | None = None) -> C:
    """Validate a plain mapping (e.g. parsed YAML) into the config dataclass ``cls``."""
    data = dict(data or {})
    for override in overrides or []:
        _apply_override(data, override)
    return _build(cls, data)


def load_config(path: str | Path, cls: type[C], overrides: list[str] | None = None) -> C:
    """Read a YAML config file into ``cls``; a missing file or bad key raises ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with path.open() as fh:
        data = yaml.safe_load(fh)
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return config_from_dict(cls, data, overrides)


def config_from_command_line(cls: type[C], description: str, argv: list[str] | None = None) -> C:
    """``--config FILE [key.path=value ...]`` parsed into ``cls``: the one command line of every entry
    point. Also sets up warning-level logging."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config (every key: python -m pipeline.config)")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. run_date=2026-11-22")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return load_config(args.config, cls, args.overrides)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (for manifests and result files)."""
    return dataclasses.asdict(cfg)


def describe(cls: type = EvalConfig, prefix: str = "", defaults: Any = None) -> str:
    """Every key of ``cls`` with its type, default and documentation, one per line. Defaults are those
    of the enclosing section (a detector's encoder defaults differ from BackboneConfig's own)."""
    defaults = cls() if defaults is None else defaults
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            lines.append(f"{key}: {f.metadata.get('doc', '')}")
            lines.append(describe(hints[f.name], key + ".", default))
            continue
        hint = hints[f.name]
        type_name = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
        lines.append(f"{key} ({type_name}, default {default!r}): {f.metadata.get('doc', '')}")
    return "\n".join(lines)


if __name__ == "__main__":
    print("# python jobs/musc.py (JobConfig)")
    print(describe(JobConfig))
    print("\n# python -m pipeline.evaluate (EvalConfig)")
    print(describe(EvalConfig))
    print("\n# python jobs/sweep.py (SweepConfig)")
    print(describe(SweepConfig))
