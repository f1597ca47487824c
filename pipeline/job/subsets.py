"""The zero-shot scoring strategy (MuSc, PatchEAD): one Ray task per planned subset of a group.

Each task reads its subset's own feature shards (``plan``: shards are cut inside subsets, so nothing
else is read), keeps the images that decoded, scores them together (``engine.scorers``: MuSc with
RsCIN on the raw score scale, so scores of different subsets of a group compare) and writes one
scored-batch object whole. A subset left with fewer than 2 readable images writes an empty batch:
its readable image gets the status ``subset_too_small``. A re-run skips subsets whose object exists;
a retried task rewrites the same object, so nothing duplicates. A group's references (extracted once,
in shards of their own) join every subset as reference-only members; their leave-one-out scores are
kept in the subset object beside, never among, the rows.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..engine.features import Features
from ..engine.scorers import ScorerSettings, score_features
from ..settings import JobConfig
from ..storage import exists
from .extract import read_feature_shard, run_feature_stage
from .faults import crash_point
from .layout import RunLayout, shard_uri
from .plan import RunPlan, SubsetPlan
from .scored import scored_columns, write_scored_batch
from .scores_table import STATUS_OK


def gather_features(plan: SubsetPlan, features_prefix: str, storage_options: dict[str, Any] | None = None,
                    shard_ids: tuple[int, ...] | None = None) -> tuple[list[str], Features | None]:
    """The URIs and features of the readable images of the subset's own shards (or of ``shard_ids``:
    its references'), read whole; None when no image decoded."""
    uris: list[str] = []
    parts = []
    for shard_id in plan.shard_ids if shard_ids is None else shard_ids:
        table, feats = read_feature_shard(shard_uri(features_prefix, shard_id), storage_options)
        if set(table.column("group").to_pylist()) != {plan.group}:
            raise RuntimeError(f"shard {shard_id} does not hold group {plan.group!r} alone (written by another plan?)")
        ok = np.flatnonzero(np.asarray(table.column("status").to_pylist()) == STATUS_OK)
        if len(ok):
            uris.extend(table.column("uri").take(ok).to_pylist())
            parts.append(feats.select(ok))
    return uris, Features.cat(parts) if parts else None


def score_subset(plan: SubsetPlan, features_prefix: str, result_uri: str, scorer: ScorerSettings,
                 device: str = "cpu", storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score one subset and write its result object; returns a small summary for the driver."""
    start = time.perf_counter()
    uris, features = gather_features(plan, features_prefix, storage_options)
    _, references = gather_features(plan, features_prefix, storage_options, plan.reference_shard_ids)
    reference_scores = matching = None
    if len(uris) < 2:  # nothing to compare with: an empty batch marks the subset done
        columns = scored_columns([], np.zeros(0), np.zeros(0), np.zeros((0, 1, 1), np.float32))
    else:
        result = score_features(features, scorer, device, references)
        columns = scored_columns(uris, result.image_scores_raw.numpy(), result.image_scores.numpy(),
                                 result.patch_scores.numpy())
        reference_scores = None if result.reference_scores is None else result.reference_scores.numpy()
        matching = None if result.matching is None else result.matching.as_dict()
    crash_point("score_subset")
    write_scored_batch(result_uri, plan.group, plan.subset_id, columns, storage_options, reference_scores, matching)
    scored = len(uris) if len(uris) >= 2 else 0
    return {"group": plan.group, "subset_id": plan.subset_id, "images": scored, "seconds": time.perf_counter() - start}


def _score_subset_task(plan: SubsetPlan, features_prefix: str, result_uri: str, cfg: JobConfig) -> dict:
    """``score_subset`` in a Ray worker with the configured threads and device."""
    import torch

    torch.set_num_threads(cfg.scoring.num_cpus_per_task)
    device = "cuda" if cfg.scoring.num_gpus_per_task > 0 else "cpu"
    return score_subset(plan, features_prefix, result_uri, cfg.scorer_settings(), device, cfg.storage_options)


class ZeroShotScoring:
    """MuSc or PatchEAD: extract features in the first stage, then score each planned subset."""

    first_stage = "extraction"
    resize = None

    def __init__(self, cfg: JobConfig, layout: RunLayout, references: dict[str, list[str]] | None = None) -> None:
        self.cfg, self.layout, self.member_references = cfg, layout, references
        self.shards_prefix = layout.features
        self.max_subset_size = cfg.scoring.max_subset_size
        self.image_size = cfg.backbone.image_size
        self.gaussian_sigma = cfg.scorer_settings().gaussian_sigma
        self.scores_meaningful = not cfg.backbone.random_init
        self.model = cfg.backbone.identifier()
        self._task = None

    def run_first_stage(self, shards: list[dict[str, Any]]) -> dict[str, Any]:
        return run_feature_stage(shards, self.cfg.backbone, self.shards_prefix, self.cfg.extraction,
                                 self.cfg.storage_options)

    def tasks(self, plan: RunPlan, group: str) -> list[SubsetPlan]:
        return plan.subsets.get(group, [])

    def is_done(self, task: SubsetPlan) -> bool:
        return exists(self.layout.subset(task.group, task.subset_id), self.cfg.storage_options)

    def submit(self, task: SubsetPlan) -> Any:
        import ray

        if self._task is None:
            scoring = self.cfg.scoring
            self._task = ray.remote(_score_subset_task).options(
                num_cpus=scoring.num_cpus_per_task, num_gpus=scoring.num_gpus_per_task, max_retries=scoring.max_retries)
        return self._task.remote(task, self.shards_prefix, self.layout.subset(task.group, task.subset_id), self.cfg)

    def batch_sources(self, plan: RunPlan, group: str) -> list[str]:
        return [self.layout.subset(group, t.subset_id) for t in plan.subsets.get(group, [])]
