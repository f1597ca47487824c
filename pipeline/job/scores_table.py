"""The scores table: one row per input image, Hive-partitioned Parquet that BI tools read directly.

One object per (run date, group, run id) (``RunLayout.scores``): a re-run of the same run id
overwrites its own objects instead of adding rows, and each object is written whole
(``storage.write_bytes``), so a reader never sees half a file.
"""

from __future__ import annotations

import io
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..storage import read_bytes, write_parquet
from .layout import RunLayout

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
    ("scores_meaningful", pa.bool_()),
    ("config_hash", pa.string()),
    ("run_id", pa.string()),
    ("scored_at", pa.timestamp("us", tz="UTC")),
    ("status", pa.string()),
    ("error", pa.string()),
    # MuSc's matching radius for the image's subset (musc.match_radius, or auto's choice); null: full matching
    # or a scorer that does not match patches. Last, so that older part files read it as null.
    ("match_radius", pa.int32()),
])
# row statuses: scored, or why not
STATUS_OK = "ok"
STATUS_DECODE_ERROR = "decode_error"  # the image is missing or its bytes could not be decoded as an image
STATUS_GROUP_TOO_SMALL = "group_too_small"  # fewer than 2 readable images in the group: nothing to compare
STATUS_SUBSET_TOO_SMALL = "subset_too_small"  # the rest of its planned subset did not decode
STATUS_HEATMAP_ERROR = "heatmap_error"  # scored and ranked, but the image was unreadable when its heat map was drawn
SCORED_STATUSES = (STATUS_OK, STATUS_HEATMAP_ERROR)  # rows that carry a score
ROW_STATUSES = (STATUS_OK, STATUS_DECODE_ERROR, STATUS_GROUP_TOO_SMALL, STATUS_SUBSET_TOO_SMALL, STATUS_HEATMAP_ERROR)


def write_text_group_marker(layout: RunLayout, storage_options: dict[str, Any] | None = None) -> None:
    """The run's empty scores object under ``TEXT_GROUP`` (see ``layout``): readers that guess
    partition types see one group that is no number and read every group as text."""
    write_parquet(layout.text_group_marker, SCORES_SCHEMA.empty_table(), storage_options)


def check_rows(summaries: dict[str, dict], uris: list[str],
               storage_options: dict[str, Any] | None = None) -> tuple[int, list[str]]:
    """Rows actually written: the ``uri`` column of every finished group's scores object, read back.
    Returns their number and, when they are not one row per input URI, what is wrong."""
    def read(uri: str) -> list[str]:
        try:
            data = read_bytes(uri, storage_options)
        except FileNotFoundError:  # a group marked finished whose rows are gone: they are not written
            return []
        return pq.read_table(io.BytesIO(data), columns=["uri"]).column("uri").to_pylist()

    with ThreadPoolExecutor(max_workers=16) as pool:
        written = Counter(u for rows in pool.map(read, [s["scores_uri"] for s in summaries.values()]) for u in rows)
    expected = set(uris)
    problems = [f"{what}: {len(found)} (e.g. {sorted(found)[0]})" for what, found in (
        ("inputs without a row", expected - set(written)),
        ("rows of no input", set(written) - expected),
        ("inputs with more than one row", {u for u, n in written.items() if n > 1}),
    ) if found]
    return sum(written.values()), problems


def write_group_scores(uri: str, rows: list[dict[str, Any]], storage_options: dict[str, Any] | None = None) -> str:
    """Write one group's rows (dicts with the SCORES_SCHEMA columns) as one Parquet object; return its URI."""
    if not rows:
        raise ValueError(f"{uri}: no rows to write")
    write_parquet(uri, pa.Table.from_pylist(rows, schema=SCORES_SCHEMA), storage_options, compression="zstd")
    return uri
