"""The nightly job's scoring stage for a trained detector (ViTAD, Dinomaly, SOWA) instead of MuSc.

A trained detector scores each image on its own, so there are no subsets: Ray Data decodes the
shards on CPU tasks and an actor pool of ``ShardDetectorScorer`` callables (one checkpoint load per
actor) scores them. Each actor writes, per shard, the shard's record table (status and error per
image, as the feature stage does) and one result object per group present in the shard, in the
format the group stage reads; the group stage then ranks, flags, draws and writes rows exactly as
for MuSc, so BI sees the same tables whichever detector ran.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .backbones import resolve_device
from .config import ExtractionConfig
from .detectors.checkpoint import load_checkpoint
from .detectors.training import predict_batches
from .faults import crash_point
from .datasets import load_images
from .feature_shards import ShardActor, records_table, run_shard_actors, shard_uri
from .storage import write_parquet
from .subset_scoring import subset_result_uri, write_subset_result

MAP_SIDE = 64  # stored map resolution: reviewers' heat maps and pixel metrics upsample it again


class ShardDetectorScorer(ShardActor):
    """Ray Data actor: loads the checkpoint once, scores shards, writes records and group results."""

    def __init__(self, checkpoint: str, shards_prefix: str, run_prefix: str, batch_size: int,
                 storage_options: dict[str, Any] | None = None, num_threads: int = 1, device: str = "auto",
                 references: dict[str, list[str]] | None = None) -> None:
        torch.set_num_threads(num_threads)
        self.device = resolve_device(device)
        self.detector, detector_cfg, _ = load_checkpoint(checkpoint, storage_options)
        self.detector.to(self.device)
        self.geometry = detector_cfg.input_geometry()
        self.shards_prefix, self.run_prefix = shards_prefix, run_prefix
        self.batch_size, self.storage_options = batch_size, storage_options
        self.references, self.memory_group = references, None
        self.name = f"{checkpoint} ({self.detector.encoder.description})"

    def use_references(self, group: str) -> None:
        """SOWA few-shot: load the group's memory bank (kept while consecutive shards hold that group)."""
        if self.memory_group == group:
            return
        images = load_images(self.references[group], *self.geometry, self.storage_options)
        self.detector.set_memory(self.detector.preprocess(images).to(self.device))
        self.memory_group = group

    def process_shard(self, shard_id: int, records: list[dict[str, Any]], images: np.ndarray,
                      errors: list[str]) -> None:
        by_group: dict[str, list[int]] = defaultdict(list)
        for i, error in enumerate(errors):
            if not error:
                by_group[records[i]["group"]].append(i)
        for group, rows in by_group.items():
            if self.references is not None:
                self.use_references(group)
            maps, scores = predict_batches(self.detector, np.stack([images[i] for i in rows]), self.batch_size,
                                           self.device)
            small = F.interpolate(torch.from_numpy(maps)[:, None], size=(MAP_SIDE, MAP_SIDE), mode="area")[:, 0]
            write_subset_result(subset_result_uri(self.run_prefix, group, shard_id), group, None,
                                [records[i]["uri"] for i in rows], scores, scores, small.numpy(),
                                self.storage_options)
        crash_point("detector_shard")
        # the records object last: its presence marks the shard done
        write_parquet(shard_uri(self.shards_prefix, shard_id), records_table(records, errors, self.name),
                      self.storage_options)


def run_detector_stage(shards: list[dict[str, Any]], checkpoint: str, image_size: int, resize: int | None,
                       shards_prefix: str, run_prefix: str, extraction: ExtractionConfig, batch_size: int,
                       storage_options: dict[str, Any] | None = None,
                       references: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Score every shard not done yet; returns counts and timings like the feature stage.
    ``references``: SOWA few-shot, each group's known-good image URIs."""
    return run_shard_actors(
        shards, shards_prefix, {"image_size": image_size, "resize": resize}, ShardDetectorScorer,
        {"checkpoint": checkpoint, "shards_prefix": shards_prefix, "run_prefix": run_prefix, "batch_size": batch_size,
         "num_threads": extraction.num_cpus_per_actor,
         "device": "cuda" if extraction.num_gpus_per_actor > 0 else "cpu", "references": references},
        extraction, storage_options)
