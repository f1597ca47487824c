"""What a night costs at a job config: FLOPs per image, GPU time, object-storage bytes and requests.

Everything follows from the config and the backbone's own shapes (open_clip's model config; no
weights are read), so the figures move with a config or code change:

- extraction: the exact multiply-add count of the ViT forward pass (patch embedding, per block QKV,
  attention scores, attention x V, output projection, MLP), 2 FLOPs per multiply-add;
- mutual scoring: per stage, per mutual-scoring pass of the aggregation (LNAMD: one per degree,
  ``Aggregation.passes``) and per unordered image pair of a subset, one similarity product over the
  compared patch pairs: every patch with every patch (M^2) under full matching, or with the patches
  of its (2r + 1)^2 window clipped at the grid's borders under ``match_radius`` r (counted exactly,
  ``compared_pairs``); 2 C FLOPs per compared pair, (S - 1) / 2 pairs per image. Aggregation, top-k
  merges and re-scoring are memory-bound and left out (under 5% on GPU);
- GPU time at a stated fraction ("efficiency") of a stated dense rate (``GpuRate``: an H100 SXM's
  989 TFLOP/s bf16/fp16 dense, 40% for the ViT, 50% for mutual scoring's large matmuls);
- storage: the bytes per image of each object (``tests/benchmarks/bench_features.py``), one request
  per object read or written, inputs read once, features written and read once.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.aggregation import aggregation
from ..settings import JobConfig

DEFAULT_STAGES = 4  # the backbone's stages when ``backbone.layers`` is null


@dataclass(frozen=True)
class GpuRate:
    """One GPU's dense rate and the fraction of it each stage reaches."""

    tflops: float = 989.0
    extract_efficiency: float = 0.4
    msm_efficiency: float = 0.5


@dataclass(frozen=True)
class NightCost:
    """Per-image FLOPs and GPU seconds of one night's scoring, and its shapes."""

    grid: int  # patches per side
    width: int  # channels per token
    stages: int
    passes: int  # mutual-scoring passes per stage
    radius: int | None  # matching window (None: full)
    subset_size: int
    extract_flops: float
    msm_flops: float
    extract_seconds: float
    msm_seconds: float

    @property
    def seconds(self) -> float:
        return self.extract_seconds + self.msm_seconds

    def gpu_hours(self, images: float) -> float:
        return images * self.seconds / 3600

    def subset_msm_seconds(self, members: int) -> float:
        """GPU seconds of mutual scoring one batch of ``members`` images (a subset and its references):
        its pairs, priced as the per-image figure prices a full subset's."""
        return self.msm_seconds * members * (members - 1) / (self.subset_size - 1)


def vit_flops(width: int, depth: int, tokens: int, patch: int, mlp_ratio: float) -> float:
    """FLOPs of one image through a ViT: 2 per multiply-add."""
    patch_embed = (tokens - 1) * (patch * patch * 3) * width
    per_block = (tokens * width * 3 * width  # QKV
                 + 2 * tokens * tokens * width  # scores and attention x V, all heads
                 + tokens * width * width  # output projection
                 + 2 * tokens * width * int(mlp_ratio * width))  # MLP up and down
    return 2.0 * (patch_embed + depth * per_block)


def _window_sum(length: int, radius: int) -> int:
    """Sum over the positions of one grid axis of how many positions lie within ``radius`` of it."""
    return sum(min(i + radius, length - 1) - max(i - radius, 0) + 1 for i in range(length))


def compared_pairs(grid: tuple[int, int], radius: int | None) -> int:
    """(patch, compared patch) pairs of one image pair: M^2 for full matching (None), else the
    (2r + 1)^2 windows clipped at the borders, summed over the grid (the window is separable)."""
    h, w = grid
    if radius is None:
        return (h * w) ** 2
    return _window_sum(h, radius) * _window_sum(w, radius)


def msm_flops(images: int, grid: tuple[int, int], channels: list[int], passes: int,
              radius: int | None) -> float:
    """FLOPs of mutual scoring one batch of ``images``: every unordered pair once, per stage
    (of ``channels[i]`` channels) and per pass."""
    pairs = images * (images - 1) / 2
    return pairs * 2.0 * compared_pairs(grid, radius) * sum(channels) * passes


def night_cost(cfg: JobConfig, rate: GpuRate = GpuRate()) -> NightCost:
    """FLOPs and GPU seconds per image of the job ``cfg`` (an open_clip ViT backbone); a
    ``match_radius`` of 'auto' is priced as full matching, its upper bound."""
    import open_clip

    vision = open_clip.get_model_config(cfg.backbone.name)["vision_cfg"]
    width, depth, patch = vision["width"], vision["layers"], vision["patch_size"]
    grid = cfg.backbone.image_size // patch
    stages = len(cfg.backbone.layers or range(DEFAULT_STAGES))
    passes = aggregation(cfg.musc.aggregation).passes(cfg.musc.aggregation_degrees)
    chosen = cfg.musc.match_radius if isinstance(cfg.musc.match_radius, int) else None
    s = cfg.scoring.max_subset_size
    extract = vit_flops(width, depth, grid * grid + 1, patch, vision.get("mlp_ratio", 4.0))
    msm = msm_flops(s, (grid, grid), [width] * stages, passes, chosen) / s
    return NightCost(grid, width, stages, passes, chosen, s, extract, msm,
                     extract / (rate.tflops * 1e12 * rate.extract_efficiency),
                     msm / (rate.tflops * 1e12 * rate.msm_efficiency))


@dataclass(frozen=True)
class StorageTerm:
    """One kind of object over a whole night: bytes written and read, PUT and GET requests."""

    written: float
    read: float
    puts: float
    gets: float


def night_storage(cfg: JobConfig, cost: NightCost, images: float, image_bytes: float = 1e6,
                  flagged: float = 0.05, heatmap_bytes: float = 6e5) -> dict[str, StorageTerm]:
    """Object-storage traffic of one night of ``images`` (int8 features with a scale per token, a
    768-wide embedding and one attention weight per patch; ``flagged`` images get a heat map)."""
    m = cost.grid * cost.grid
    feature_bytes = cost.stages * m * (cost.width + 2) + 768 * 4 + m * 4
    subset_bytes = m * 4 + 16
    shards, subsets = images / cfg.extraction.shard_size, images / cost.subset_size
    return {
        "input images": StorageTerm(0, images * image_bytes, 0, images),
        "feature shards": StorageTerm(images * feature_bytes, images * feature_bytes, shards, shards),
        "subset results": StorageTerm(images * subset_bytes, images * subset_bytes, subsets, subsets),
        "heat maps": StorageTerm(images * flagged * heatmap_bytes, images * flagged * image_bytes,
                                 images * flagged, images * flagged),
        "scores, summaries, manifest": StorageTerm(images * 500, images * 100, 3 * images / 2000,
                                                   2 * images / 2000),
    }
