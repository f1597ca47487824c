"""Stage 2 of the nightly job: MuSc (or PatchEAD) on seeded random subsets of each group, read from
feature shards.

MuSc's cost grows with the square of the number of images scored together, so each group (product,
camera, line) is split into as few random subsets of at most ``max_subset_size`` images as needed
(the paper's scalability study, Table 7). The split is seeded by the job seed and the group name, so
it is the same on a re-run and adding a group does not reshuffle the others.

Each subset is one task: it gathers its images' features from the shards, runs LNAMD + MSM + RsCIN
and writes one Parquet object (scores and the low-resolution patch-score grids) whole. RsCIN runs on
the raw score scale (``keep_scale``) so scores of different subsets of a group compare. A re-run
skips subsets whose object exists; a retried task rewrites the same object, so nothing duplicates.
"""

from __future__ import annotations

import hashlib
import io
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from .backbones import Features
from .config import MuscConfig, PatchEADConfig
from .faults import crash_point
from .feature_shards import read_feature_shard, shard_uri
from .musc import MuscResult, score_features
from .patchead import score_patchead
from .storage import join_uri, read_bytes, write_parquet
from .subsets import split_by_max_size


@dataclass(frozen=True)
class Member:
    """A readable image of a group and where its features are: row ``row`` of shard ``shard_id``."""

    uri: str
    shard_id: int
    row: int


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


def group_key(group: str) -> str:
    """A group name as one path segment (URI-encoded, like the scores partitions)."""
    return urllib.parse.quote(group, safe="")


def subset_result_uri(run_prefix: str, group: str, subset_id: int) -> str:
    return join_uri(run_prefix, "subsets", group_key(group), f"subset-{subset_id:05d}.parquet")


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


def score_together(features: Features, scorer: MuscConfig | PatchEADConfig, device: str = "cpu") -> MuscResult:
    """MuSc (on the raw score scale, see the module note) or PatchEAD batch mode on one subset."""
    if isinstance(scorer, PatchEADConfig):
        return score_patchead(features, scorer, device=device)
    return score_features(features, scorer, device, keep_scale=True)


def score_subset(plan: SubsetPlan, features_prefix: str, result_uri: str, scorer: MuscConfig | PatchEADConfig,
                 device: str = "cpu", storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score one subset and write its result object; returns a small summary for the driver."""
    start = time.perf_counter()
    features = gather_features(plan, features_prefix, storage_options)
    result = score_together(features, scorer, device)
    crash_point("score_subset")
    write_subset_result(result_uri, plan.group, plan.subset_id, [m.uri for m in plan.members],
                        result.image_scores_raw.numpy(), result.image_scores.numpy(), result.patch_scores.numpy(),
                        storage_options)
    n = len(plan.members)
    return {"group": plan.group, "subset_id": plan.subset_id, "images": n, "seconds": time.perf_counter() - start}


def write_subset_result(uri: str, group: str, subset_id: int | None, uris: list[str], score_raw: np.ndarray,
                        score: np.ndarray, patch_scores: np.ndarray,
                        storage_options: dict[str, Any] | None = None) -> None:
    """Scores of images scored together, as one Parquet object the group stage reads.

    ``subset_id`` None: the images were scored independently (a trained detector), not as a subset.
    """
    table = pa.table({
        "uri": pa.array(uris, pa.string()),
        "score_raw": pa.array(np.asarray(score_raw, dtype=np.float64)),
        "score": pa.array(np.asarray(score, dtype=np.float64)),
        "patch_scores": pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(patch_scores, np.float32)),
    }).replace_schema_metadata({
        "group": group, "subset_id": "" if subset_id is None else str(subset_id),
        "scored_at": datetime.now(timezone.utc).isoformat(),
    })
    write_parquet(uri, table, storage_options, compression="zstd")


@dataclass
class SubsetResult:
    """A subset's scores as read back by the group stage."""

    subset_id: int | None  # None: scored independently, not as a subset
    uris: list[str]
    score_raw: np.ndarray  # (n,)
    score: np.ndarray  # (n,) RsCIN on the raw scale
    patch_scores: np.ndarray  # (n, h, w) float32
    scored_at: datetime


def read_subset_result(uri: str, storage_options: dict[str, Any] | None = None) -> SubsetResult:
    table = pq.read_table(io.BytesIO(read_bytes(uri, storage_options)))
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return SubsetResult(
        subset_id=int(meta["subset_id"]) if meta["subset_id"] else None,
        uris=table.column("uri").to_pylist(),
        score_raw=table.column("score_raw").to_numpy(),
        score=table.column("score").to_numpy(),
        patch_scores=np.array(table.column("patch_scores").combine_chunks().to_numpy_ndarray()),  # writable copy
        scored_at=datetime.fromisoformat(meta["scored_at"]),
    )
