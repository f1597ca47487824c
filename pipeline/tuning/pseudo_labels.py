"""Pseudo-normal training sets: the images MuSc ranked most normal, for a trained detector.

Without labelled normals, a night's MuSc run still says which images look most like the rest of
their group. Taking the lowest-scoring fraction of every group of one run (status ok) as "normal"
gives a training set for ViTAD or Dinomaly, which then scores later batches in O(N). Defects that
slip into it teach the detector to reconstruct them, so keep the fraction well below the share of
good parts (the default, half of each group, suits lines with a few percent of defects).
"""

from __future__ import annotations

import math
from typing import Any

import fsspec
import pyarrow.dataset as pds
import pyarrow.fs

from ..job.scores_table import STATUS_OK


def most_normal_uris(scores_prefix: str, run_id: str, fraction: float,
                     storage_options: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Per group, the URIs of the ``fraction`` lowest-scoring scored images of run ``run_id``
    (at least one per group), lowest first."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    fs, path = fsspec.core.url_to_fs(scores_prefix, **(storage_options or {}))
    dataset = pds.dataset(path, filesystem=pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)),
                          format="parquet", partitioning="hive")
    table = dataset.to_table(columns=["uri", "group_name", "score", "status", "run_id"],
                             filter=(pds.field("run_id") == run_id) & (pds.field("status") == STATUS_OK))
    if table.num_rows == 0:
        raise ValueError(f"no scored images of run {run_id!r} under {scores_prefix}")
    by_group: dict[str, list[tuple[float, str]]] = {}
    for row in table.to_pylist():
        by_group.setdefault(str(row["group_name"]), []).append((row["score"], row["uri"]))
    return {g: [uri for _, uri in sorted(rows)[: max(1, math.floor(fraction * len(rows)))]]
            for g, rows in sorted(by_group.items())}
