"""The zero-shot scoring strategy (MuSc, PatchEAD): one Ray task per planned subset of a group.

Each task reads its subset's own feature shards (``plan``: shards are cut inside subsets, so no other
features are read; for a group with references the driver reads the record columns of the group's shards
once, for the inputs' content hashes), keeps the images that decoded, scores them together
(``engine.scorers``: MuSc re-scored on the raw score scale, so scores of different subsets of a group
compare) and writes one scored-batch object whole. A subset left with fewer than 2 readable images and
references together writes an empty batch: its readable image gets the status ``subset_too_small``
(``group_too_small`` for a group of one). A re-run skips subsets whose object exists; a retried task
rewrites the same object, so nothing duplicates. A group's references (extracted once, in shards of
their own) join every subset as reference-only members; their leave-one-out scores are kept in the
subset object beside, never among, the rows. A reference that did not decode, or whose bytes equal an
input's of the group (matched against itself, that input would score 0 and hide its defect), is left out
of every subset of the group; the subset object records which and why (``ReferenceUse``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..engine.backbones import resolve_device
from ..engine.features import Features
from ..engine.scorers import ScorerSettings, score_features
from ..settings import JobConfig
from ..storage import exists
from . import telemetry
from .cluster import node_id
from .extract import read_feature_shard, run_feature_stage
from .faults import crash_point
from .layout import RunLayout, shard_uri
from .plan import RunPlan, SubsetPlan
from .resources import task_device
from .scored import ReferenceUse, scored_columns, write_scored_batch
from .scores_table import STATUS_OK
from .shards import read_records


def _read_shards(plan: SubsetPlan, shard_ids: tuple[int, ...], features_prefix: str,
                 storage_options: dict[str, Any] | None) -> list[tuple[list[dict[str, Any]], Features]]:
    """The records and features of the group's shards ``shard_ids``, read whole."""
    shards = []
    for shard_id in shard_ids:
        table, feats = read_feature_shard(shard_uri(features_prefix, shard_id), storage_options)
        if set(table.column("group").to_pylist()) != {plan.group}:
            raise RuntimeError(f"shard {shard_id} does not hold group {plan.group!r} alone (written by another plan?)")
        shards.append((table.to_pylist(), feats))
    return shards


def _selected(shards: list[tuple[list[dict[str, Any]], Features]],
              keep: Callable[[dict[str, Any]], bool]) -> tuple[list[str], Features | None]:
    """The URIs and features of the rows ``keep`` accepts; None when there is none."""
    uris: list[str] = []
    parts = []
    for rows, feats in shards:
        kept = [i for i, row in enumerate(rows) if keep(row)]
        if kept:
            uris.extend(rows[i]["uri"] for i in kept)
            parts.append(feats.select(np.asarray(kept)))
    return uris, Features.cat(parts) if parts else None


def gather_features(plan: SubsetPlan, features_prefix: str,
                    storage_options: dict[str, Any] | None = None) -> tuple[list[str], Features | None]:
    """The URIs and features of the readable images of the subset's own shards; None when no image decoded."""
    return _selected(_read_shards(plan, plan.shard_ids, features_prefix, storage_options),
                     lambda row: row["status"] == STATUS_OK)


def reference_copies(plan: SubsetPlan, features_prefix: str,
                     storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """The group's references whose bytes equal an input's of the group, {reference: input}: matched
    against itself that input would score 0 and hide its defect. One read of the record columns of
    every shard of the group, so the scoring stage asks once per group, not once per subset."""
    if not plan.reference_shard_ids:
        return {}
    records = read_records([shard_uri(features_prefix, s) for s in plan.group_shard_ids], storage_options)
    inputs = {row["sha256"]: row["uri"] for row in records if row.get("sha256")}
    references = read_records([shard_uri(features_prefix, s) for s in plan.reference_shard_ids], storage_options)
    return {r["uri"]: inputs[r["sha256"]] for r in references if r["status"] == STATUS_OK and r.get("sha256") in inputs}


def gather_references(plan: SubsetPlan, features_prefix: str, storage_options: dict[str, Any] | None = None,
                      copies: dict[str, str] | None = None) -> tuple[Features | None, ReferenceUse | None]:
    """The group's usable references (decoded, and none of ``copies``, ``reference_copies``: found here
    when not given) and what became of each listed one; (None, None) for a group without references."""
    if not plan.reference_shard_ids:
        return None, None
    copies = reference_copies(plan, features_prefix, storage_options) if copies is None else copies
    shards = _read_shards(plan, plan.reference_shard_ids, features_prefix, storage_options)
    rows = [row for shard_rows, _ in shards for row in shard_rows]
    undecodable = {r["uri"]: r["error"] for r in rows if r["status"] != STATUS_OK}
    uris, features = _selected(shards, lambda row: row["uri"] not in undecodable and row["uri"] not in copies)
    return features, ReferenceUse(len(rows), uris, undecodable, copies)


def score_subset(plan: SubsetPlan, features_prefix: str, result_uri: str, scorer: ScorerSettings,
                 device: str = "cpu", storage_options: dict[str, Any] | None = None,
                 copies: dict[str, str] | None = None) -> dict[str, Any]:
    """Score one subset and write its result object; returns a small summary for the driver.
    ``copies``: the group's ``reference_copies`` when already known."""
    start = time.perf_counter()
    uris, features = gather_features(plan, features_prefix, storage_options)
    references, use = gather_references(plan, features_prefix, storage_options, copies)
    reference_scores = matching = None
    scored = len(uris) if uris and len(uris) + (0 if references is None else len(references)) >= 2 else 0
    if not scored:  # nothing to compare with: an empty batch marks the subset done
        columns = scored_columns([], np.zeros(0), np.zeros(0), np.zeros((0, 1, 1), np.float32))
    else:
        result = score_features(features, scorer, device, references)
        columns = scored_columns(uris, result.image_scores_raw.numpy(), result.image_scores.numpy(),
                                 result.patch_scores.numpy())
        reference_scores = None if result.reference_scores is None else result.reference_scores.numpy()
        matching = None if result.matching is None else result.matching.as_dict()
    crash_point("score_subset")
    write_scored_batch(result_uri, plan.group, plan.subset_id, columns, storage_options, reference_scores, use,
                       matching)
    return {"group": plan.group, "subset_id": plan.subset_id, "images": scored, "seconds": time.perf_counter() - start}


def _score_subset_task(plan: SubsetPlan, features_prefix: str, result_uri: str, cfg: JobConfig,
                       copies: dict[str, str], run_id: str) -> dict:
    """``score_subset`` in a Ray worker with the configured threads and device."""
    import torch

    torch.set_num_threads(cfg.scoring.num_cpus_per_task)
    device = resolve_device(task_device(cfg.scoring.num_gpus_per_task))
    with telemetry.task("scoring", run_id):
        summary = score_subset(plan, features_prefix, result_uri, cfg.scorer_settings(), device, cfg.storage_options,
                               copies)
    telemetry.record("images_scored", summary["images"], run_id, stage="scoring")
    return {**summary, "node_id": node_id()}


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
        self._copies: dict[str, dict[str, str]] = {}  # per group: its reference_copies, read once

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
                num_cpus=scoring.num_cpus_per_task, num_gpus=scoring.num_gpus_per_task, max_retries=scoring.max_retries,
                scheduling_strategy="SPREAD")  # over the GPU nodes, not queued behind one node's first tasks
        if task.group not in self._copies:
            self._copies[task.group] = reference_copies(task, self.shards_prefix, self.cfg.storage_options)
        return self._task.remote(task, self.shards_prefix, self.layout.subset(task.group, task.subset_id), self.cfg,
                                 self._copies[task.group], self.layout.run_id)

    def batch_sources(self, plan: RunPlan, group: str) -> list[str]:
        return [self.layout.subset(group, t.subset_id) for t in plan.subsets.get(group, [])]
