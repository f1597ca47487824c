"""The zero-shot scoring strategy (MuSc, PatchEAD): seeded subsets of each group, one Ray task each.

MuSc's cost grows with the square of the number of images scored together, so each group (product,
camera, line) is split into as few random subsets of at most ``max_subset_size`` images as needed
(the paper's scalability study, Table 7). The split is seeded by the job seed and the group name, so
it is the same on a re-run and adding a group does not reshuffle the others.

Each subset is one task: it gathers its images' features from the feature shards, scores them
(``engine.scorers``: MuSc with RsCIN on the raw score scale, so scores of different subsets of a
group compare) and writes one scored-batch object whole. A re-run skips subsets whose object exists;
a retried task rewrites the same object, so nothing duplicates.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..engine.features import Features
from ..engine.scorers import ScorerSettings, score_features
from ..engine.subsets import split_by_max_size
from ..settings import JobConfig
from ..storage import exists
from .extract import read_feature_shard, run_feature_stage
from .faults import crash_point
from .layout import RunLayout, shard_uri
from .scored import BatchSource, scored_columns, write_scored_batch
from .shards import Member


@dataclass(frozen=True)
class SubsetPlan:
    """One unit of mutual scoring."""

    group: str
    subset_id: int
    members: tuple[Member, ...]


def group_seed(seed: int, group: str) -> int:
    """A per-group seed that depends only on the job seed and the group name."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{group}".encode()).digest()[:8], "little")


def plan_subsets(members_by_group: dict[str, Sequence[Member]], max_subset_size: int, seed: int) -> list[SubsetPlan]:
    """Subsets of every group with at least 2 images; members sorted by URI inside each subset.

    Groups with fewer than 2 readable images get no subset (their rows say so).
    """
    plans = []
    for group in sorted(members_by_group):
        members = sorted(members_by_group[group], key=lambda m: m.uri)
        if len(members) < 2:
            continue
        for subset_id, indices in enumerate(split_by_max_size(len(members), max_subset_size, group_seed(seed, group))):
            plans.append(SubsetPlan(group, subset_id, tuple(members[i] for i in indices)))
    return plans


def gather_features(plan: SubsetPlan, features_prefix: str, storage_options: dict[str, Any] | None = None) -> Features:
    """The members' features in plan order, reading each shard once and only the rows needed.

    Shards hold a group's images in URI order and plans list members in URI order, so reading the
    shards in order yields the plan's order; the URI check catches a shard that was rewritten.
    """
    rows_by_shard: dict[int, list[int]] = defaultdict(list)
    for m in plan.members:
        rows_by_shard[m.shard_id].append(m.row)
    parts, uris = [], []
    for shard_id, rows in sorted(rows_by_shard.items()):
        table, feats = read_feature_shard(shard_uri(features_prefix, shard_id), storage_options, rows)
        parts.append(feats)
        uris.extend(table.column("uri").to_pylist())
    if uris != [m.uri for m in plan.members]:
        raise RuntimeError(f"group {plan.group!r} subset {plan.subset_id}: the feature shards do not hold the "
                           "planned images in plan order (were they rewritten by another run?)")
    return Features.cat(parts)


def score_subset(plan: SubsetPlan, features_prefix: str, result_uri: str, scorer: ScorerSettings,
                 device: str = "cpu", storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score one subset and write its result object; returns a small summary for the driver."""
    start = time.perf_counter()
    features = gather_features(plan, features_prefix, storage_options)
    result = score_features(features, scorer, device)
    crash_point("score_subset")
    write_scored_batch(result_uri, plan.group, plan.subset_id, scored_columns(
        [m.uri for m in plan.members], result.image_scores_raw.numpy(), result.image_scores.numpy(),
        result.patch_scores.numpy()), storage_options)
    n = len(plan.members)
    return {"group": plan.group, "subset_id": plan.subset_id, "images": n, "seconds": time.perf_counter() - start}


def _score_subset_task(plan: SubsetPlan, features_prefix: str, result_uri: str, cfg: JobConfig) -> dict:
    """``score_subset`` in a Ray worker with the configured threads and device."""
    import torch

    torch.set_num_threads(cfg.scoring.num_cpus_per_task)
    device = "cuda" if cfg.scoring.num_gpus_per_task > 0 else "cpu"
    return score_subset(plan, features_prefix, result_uri, cfg.scorer_settings(), device, cfg.storage_options)


class ZeroShotScoring:
    """MuSc or PatchEAD: extract features in the first stage, then score seeded subsets of each group."""

    first_stage = "extraction"
    resize = None

    def __init__(self, cfg: JobConfig, layout: RunLayout) -> None:
        self.cfg, self.layout = cfg, layout
        self.shards_prefix = layout.features
        self.image_size = cfg.backbone.image_size
        self.gaussian_sigma = cfg.scorer_settings().gaussian_sigma
        self.scores_meaningful = not cfg.backbone.random_init
        self._task = None

    def run_first_stage(self, shards: list[dict[str, Any]]) -> dict[str, Any]:
        return run_feature_stage(shards, self.cfg.backbone, self.shards_prefix, self.cfg.extraction,
                                 self.cfg.storage_options)

    def plan(self, members: dict[str, list[Member]]) -> dict[str, list[SubsetPlan]]:
        by_group: dict[str, list[SubsetPlan]] = defaultdict(list)
        for plan in plan_subsets(members, self.cfg.scoring.max_subset_size, self.cfg.scoring.seed):
            by_group[plan.group].append(plan)
        return by_group

    def is_done(self, task: SubsetPlan) -> bool:
        return exists(self.layout.subset(task.group, task.subset_id), self.cfg.storage_options)

    def submit(self, task: SubsetPlan) -> Any:
        import ray

        if self._task is None:
            scoring = self.cfg.scoring
            self._task = ray.remote(_score_subset_task).options(
                num_cpus=scoring.num_cpus_per_task, num_gpus=scoring.num_gpus_per_task, max_retries=scoring.max_retries)
        return self._task.remote(task, self.shards_prefix, self.layout.subset(task.group, task.subset_id), self.cfg)

    def batch_sources(self, group: str, members: list[Member], tasks: list[SubsetPlan]) -> list[BatchSource]:
        return [BatchSource(self.layout.subset(group, t.subset_id)) for t in tasks]
