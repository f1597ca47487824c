"""The trained-detector scoring strategy (ViTAD, Dinomaly, SOWA): each image scored on its own, O(N).

There are no subsets: Ray Data decodes the shards on CPU tasks and an actor pool of
``ShardDetectorScorer`` callables (one checkpoint load per actor) scores them. Each actor writes one
detections object per shard: the shard's records (status and error per image) with each scored
image's scores and a low-resolution map. The group stage reads its shards (a shard holds one
group's images), then ranks, flags, draws and writes rows exactly as for MuSc, so BI sees the same tables
whichever detector ran.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import load_images
from ..detectors.checkpoint import load_checkpoint
from ..detectors.training import predict_batches
from ..engine.backbones import resolve_device
from ..settings import DetectorConfig, JobConfig
from ..storage import write_parquet
from .faults import crash_point
from .layout import RunLayout, shard_uri
from .plan import RunPlan
from .resources import task_device
from .scored import scored_columns
from .shards import ShardActor, records_table, run_shard_actors

MAP_SIDE = 64  # stored map resolution: reviewers' heat maps and pixel metrics upsample it again


class ShardDetectorScorer(ShardActor):
    """Ray Data actor: loads the checkpoint once, scores shards, writes one detections object per shard."""

    stage = "detector"
    scores_images = True

    def __init__(self, checkpoint: str, shards_prefix: str, batch_size: int,
                 storage_options: dict[str, Any] | None = None, num_threads: int = 1, device: str = "auto",
                 references: dict[str, list[str]] | None = None) -> None:
        torch.set_num_threads(num_threads)
        self.device = resolve_device(device)
        self.detector, detector_cfg, _ = load_checkpoint(checkpoint, storage_options)
        self.detector.to(self.device)
        self.geometry = detector_cfg.input_geometry()
        self.shards_prefix, self.batch_size, self.storage_options = shards_prefix, batch_size, storage_options
        self.references, self.references_group = references, None
        self.name = f"{checkpoint} ({self.detector.encoder.description})"

    def use_references(self, group: str) -> None:
        """SOWA few-shot: load the group's reference bank (kept while consecutive shards hold that group)."""
        if self.references_group == group:
            return
        images = load_images(self.references[group], *self.geometry, self.storage_options)
        self.detector.set_references(self.detector.preprocess(images).to(self.device))
        self.references_group = group

    def process_shard(self, shard_id: int, records: list[dict[str, Any]], images: np.ndarray,
                      errors: list[str]) -> None:
        n = len(records)
        score = np.zeros(n)
        maps = np.zeros((n, MAP_SIDE, MAP_SIDE), np.float32)
        rows = [i for i in range(n) if not errors[i]]  # a shard holds one group's images
        if rows:
            if self.references is not None:
                self.use_references(records[0]["group"])
            shard_maps, shard_scores = predict_batches(self.detector, images[rows], self.batch_size, self.device)
            score[rows] = shard_scores
            maps[rows] = F.interpolate(torch.from_numpy(shard_maps)[:, None], size=(MAP_SIDE, MAP_SIDE),
                                       mode="area")[:, 0].numpy()
        crash_point("detector_shard")
        table = records_table(records, errors, self.name)
        for name, column in scored_columns([r["uri"] for r in records], score, score, maps).items():
            if name != "uri":
                table = table.append_column(name, column)
        metadata = {**table.schema.metadata, b"scored_at": datetime.now(timezone.utc).isoformat().encode()}
        write_parquet(shard_uri(self.shards_prefix, shard_id), table.replace_schema_metadata(metadata),
                      self.storage_options, compression="zstd")


class DetectorScoring:
    """A trained checkpoint scores every image in the first stage; the group stage reads its shards."""

    first_stage = "detector"
    gaussian_sigma = 0.0  # maps come smoothed from the detector
    max_subset_size = None  # each image alone: shards are cut inside groups, no subsets
    member_references = None  # SOWA's references are its memory bank, loaded by the actors (``references``)

    def __init__(self, cfg: JobConfig, layout: RunLayout, detector_cfg: DetectorConfig,
                 references: dict[str, list[str]] | None = None) -> None:
        self.cfg, self.references = cfg, references
        self.shards_prefix = layout.detections
        self.image_size, self.resize = detector_cfg.input_geometry()
        self.scores_meaningful = not detector_cfg.chosen().encoder.random_init
        self.model = f"{detector_cfg.kind}:{detector_cfg.chosen().encoder.identifier()}"

    def run_first_stage(self, shards: list[dict[str, Any]]) -> dict[str, Any]:
        ex = self.cfg.extraction
        return run_shard_actors(
            shards, self.shards_prefix, {"image_size": self.image_size, "resize": self.resize}, ShardDetectorScorer,
            {"checkpoint": self.cfg.detector_checkpoint, "shards_prefix": self.shards_prefix,
             "batch_size": self.cfg.backbone.batch_size, "num_threads": ex.threads_per_actor(),
             "device": task_device(ex.num_gpus_per_actor), "references": self.references},
            ex, self.cfg.storage_options)

    def tasks(self, plan: RunPlan, group: str) -> list[Any]:
        return []  # scored in the first stage

    def is_done(self, task: Any) -> bool:
        raise NotImplementedError("a trained detector plans no scoring tasks")

    def submit(self, task: Any) -> Any:
        raise NotImplementedError("a trained detector plans no scoring tasks")

    def batch_sources(self, plan: RunPlan, group: str) -> list[str]:
        return [shard_uri(self.shards_prefix, s) for s in plan.shards_of_group[group]]
