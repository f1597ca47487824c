"""The run's data plan, made from the listing before any image is read.

MuSc's cost grows with the square of the number of images scored together, so each group (product,
camera, line) is split into as few seeded random subsets of at most ``max_subset_size`` images as
needed (the paper's scalability study, Table 7). The split is seeded by the job seed and the group
name, so it is the same on a re-run and adding a group does not reshuffle the others.

Shards, the first stage's unit of work, are cut *inside* those subsets (a trained detector, which
has no subsets, cuts them inside groups), so a subset's scoring task reads exactly its own shards:
every image's features are read once. An image that then fails to decode simply leaves its subset.
A group's known-good references (zero-shot scorers) get shards of their own after the group's, so
their features are extracted once per run and every subset task of the group reads them; they are
in no subset and in no group's rows.

Memory is O(N) in small tuples: the plan of 10^5 inputs takes well under a second
(``tests/test_plan.py``).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..data.inputs import InputRecord
from ..engine.subsets import split_by_max_size

# the plan's rules; part of a run's identity, so a run started under older rules is not resumed with these
PLAN_VERSION = 2


@dataclass(frozen=True)
class SubsetPlan:
    """One unit of mutual scoring: a seeded subset of a group and the shards that hold exactly its images."""

    group: str
    subset_id: int
    shard_ids: tuple[int, ...]
    size: int  # images listed in the subset (some may turn out unreadable)
    reference_shard_ids: tuple[int, ...] = ()  # the group's references: reference-only members
    group_shard_ids: tuple[int, ...] = ()  # every input shard of the group: a reference equal to one is not used


@dataclass(frozen=True)
class ShardPlan:
    """One shard: images of one group (and of one subset, for the zero-shot scorers), in URI order."""

    shard_id: int
    group: str
    subset_id: int | None
    records: tuple[InputRecord, ...]

    def item(self) -> dict[str, Any]:
        """The shard as a plain dict Ray Data can carry."""
        return {"shard_id": self.shard_id, "records": [asdict(r) for r in self.records]}


@dataclass
class RunPlan:
    """Shards in plan order, and per group its shards (inputs only) and (zero-shot) its subsets."""

    shards: list[ShardPlan] = field(default_factory=list)
    shards_of_group: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    subsets: dict[str, list[SubsetPlan]] = field(default_factory=lambda: defaultdict(list))

    @property
    def groups(self) -> list[str]:
        return sorted(self.shards_of_group)


def group_seed(seed: int, group: str) -> int:
    """A per-group seed that depends only on the job seed and the group name."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{group}".encode()).digest()[:8], "little")


def _chunks(items: Sequence[InputRecord], shard_size: int) -> list[Sequence[InputRecord]]:
    """As few near-equal consecutive chunks as keep each at most ``shard_size`` items."""
    count = max(1, math.ceil(len(items) / shard_size))
    bounds = np.linspace(0, len(items), count + 1).round().astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def plan_run(records: Sequence[InputRecord], shard_size: int, max_subset_size: int | None, seed: int,
             references: dict[str, list[str]] | None = None) -> RunPlan:
    """The whole plan. ``max_subset_size`` None: no subsets (a trained detector scores images alone).
    ``references``: per group, known-good URIs that join each of its subsets as reference-only members.

    Groups are in name order, images in URI order inside each subset and shard; a group of one image
    gets a shard, and a subset only when it has references (else nothing to compare it with).
    """
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    by_group: dict[str, list[InputRecord]] = defaultdict(list)
    for record in records:
        by_group[record.group].append(record)
    plan = RunPlan()
    for group in sorted(by_group):
        members = sorted(by_group[group], key=lambda r: r.uri)
        known_good = [InputRecord(uri, group) for uri in sorted((references or {}).get(group, []))]
        if max_subset_size is None or len(members) + len(known_good) < 2:
            units: list[tuple[int | None, list[InputRecord]]] = [(None, members)]
        elif len(members) < 2:  # one image and its references
            units = [(0, members)]
        else:
            splits = split_by_max_size(len(members), max_subset_size, group_seed(seed, group))
            units = [(i, [members[j] for j in indices]) for i, indices in enumerate(splits)]
        shard_ids = [_add_shards(plan, group, subset_id, unit, shard_size) for subset_id, unit in units]
        plan.shards_of_group[group].extend(i for ids in shard_ids for i in ids)
        if units[0][0] is None:
            continue
        reference_ids = _add_shards(plan, group, None, known_good, shard_size) if known_good else ()
        group_ids = tuple(plan.shards_of_group[group])
        plan.subsets[group].extend(SubsetPlan(group, subset_id, ids, len(unit), reference_ids, group_ids)
                                   for (subset_id, unit), ids in zip(units, shard_ids))
    return plan


def _add_shards(plan: RunPlan, group: str, subset_id: int | None, records: Sequence[InputRecord],
                shard_size: int) -> tuple[int, ...]:
    """Cut ``records`` into the plan's next shards; returns their ids."""
    shard_ids = []
    for chunk in _chunks(records, shard_size):
        shard = ShardPlan(len(plan.shards), group, subset_id, tuple(chunk))
        plan.shards.append(shard)
        shard_ids.append(shard.shard_id)
    return tuple(shard_ids)
