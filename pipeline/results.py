"""The scores table: one row per input image, Hive-partitioned Parquet that BI tools read directly.

Layout under the run's output prefix::

    scores/run_date=2026-11-22/group=line1%2FcapA/part-<run_id>.parquet

One object per (run date, group, run id): a re-run of the same run id overwrites its own objects
instead of adding rows, and each object is written whole (``storage.write_bytes``), so a reader
never sees half a file. Partition values are URI-encoded (``/`` in a group becomes ``%2F``), which
pyarrow's Hive partitioning decodes by default.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import pyarrow as pa

from .storage import join_uri, write_parquet

SCORES_SCHEMA = pa.schema([
    ("uri", pa.string()),
    ("subset_id", pa.int32()),
    ("subset_size", pa.int32()),
    ("score_raw", pa.float64()),
    ("score", pa.float64()),
    ("rank_in_group", pa.int32()),
    ("percentile_in_group", pa.float64()),
    ("is_anomaly", pa.bool_()),
    ("flag_policy", pa.string()),
    ("map_uri", pa.string()),
    ("label", pa.int8()),
    ("backbone", pa.string()),
    ("config_hash", pa.string()),
    ("run_id", pa.string()),
    ("scored_at", pa.timestamp("us", tz="UTC")),
    ("status", pa.string()),
    ("error", pa.string()),
])
PARTITION_COLUMNS = ("run_date", "group")

# row statuses: scored, or why not
STATUS_OK = "ok"
STATUS_DECODE_ERROR = "decode_error"  # the bytes could not be read or decoded as an image
STATUS_GROUP_TOO_SMALL = "group_too_small"  # fewer than 2 readable images in the group: nothing to compare


def partition_path(run_date: str, group: str) -> str:
    """``run_date=.../group=...`` with the values URI-encoded so any group name is one path segment."""
    return "/".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in zip(PARTITION_COLUMNS, (run_date, group)))


def write_group_scores(output_prefix: str, run_date: str, group: str, run_id: str, rows: list[dict[str, Any]],
                       storage_options: dict[str, Any] | None = None) -> str:
    """Write one group's rows (dicts with the SCORES_SCHEMA columns) as one Parquet object; return its URI."""
    if not rows:
        raise ValueError(f"group {group!r}: no rows to write")
    table = pa.Table.from_pylist(rows, schema=SCORES_SCHEMA)
    uri = join_uri(output_prefix, "scores", partition_path(run_date, group), f"part-{run_id}.parquet")
    write_parquet(uri, table, storage_options, compression="zstd")
    return uri
