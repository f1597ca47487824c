"""Where everything of a run lives: every object name of the nightly job, and the one group encoding.

Under ``output.prefix``::

    scores/run_date=<d>/group_name=<g>/part-<run_id>.parquet       one object per group (BI reads these)
    heatmaps/run_date=<d>/group_name=<g>/run_id=<run_id>/<name>.png  reviewers' heat maps
    metrics/run_date=<d>/part-<run_id>.parquet                        the engine's metrics per group
    group_nights/run_date=<d>/part-<run_id>.parquet                   one row per group: counts, trends, alerts
    runs/<run_id>/run.json                                            the run's identity (config hash, date)
    runs/<run_id>/lease.json                                          the working driver's lease (``lease``)
    runs/<run_id>/features/shard-00000.parquet                        zero-shot: records and features per shard
    runs/<run_id>/subsets/<g>/subset-00000.parquet                    zero-shot: scores of one subset
    runs/<run_id>/detections/shard-00000.parquet                      trained detector: records and scores per shard
    runs/<run_id>/groups/<g>.json                                     a finished group's summary (its done marker)
    runs/<run_id>/metrics.txt, report.html, manifest.json, _SUCCESS      written last, in that order

Group names and dates are URI-encoded into one path segment (``/`` becomes ``%2F``), which
pyarrow's and DuckDB's Hive partitioning decode. No name the job writes exceeds MAX_NAME_BYTES: a
longer group or heat-map name keeps a readable prefix and a hash of the whole (short names are as
they always were, so runs in flight resume). Each run also writes an empty scores object under the
group ``~group-is-text``: readers that guess partition types (pyarrow, DuckDB) then read ``group_name`` as
text, and groups ``007`` and ``7`` stay apart.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from ..storage import join_uri

PARTITION_COLUMNS = ("run_date", "group_name")  # group_name: "group" is reserved in SQL
# the longest group segment or file name the job writes: with a partition key ("group_name=") and a
# temporary name's additions (".<name>.part-<pid>") a path segment stays under the 255 bytes allowed
MAX_NAME_BYTES = 200
# a group no listing produces; its empty scores object makes type-guessing readers read groups as text
TEXT_GROUP = "~group-is-text"


def _hash(value: str, length: int) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def segment(value: str) -> str:
    """A group name (or any value) as one path segment, URI-encoded; one whose encoding would exceed
    MAX_NAME_BYTES is cut to a readable encoded prefix plus ``~`` and a hash of the whole value."""
    encoded = urllib.parse.quote(value, safe="")
    if len(encoded) <= MAX_NAME_BYTES:
        return encoded
    tag = "~" + _hash(value, 16)
    prefix = ""
    for char in value:
        piece = urllib.parse.quote(char, safe="")
        if len(prefix) + len(piece) + len(tag) > MAX_NAME_BYTES:
            break
        prefix += piece
    return prefix + tag


def partition_path(run_date: str, group: str) -> str:
    """``run_date=.../group_name=...`` with the values URI-encoded so any group name is one path segment."""
    return "/".join(f"{k}={segment(v)}" for k, v in zip(PARTITION_COLUMNS, (run_date, group)))


@dataclass(frozen=True)
class RunLayout:
    """Every URI of one run. ``run_date`` is known once the run is opened (a resumed run keeps its own)."""

    output_prefix: str
    run_id: str
    run_date: str = ""

    def dated(self, run_date: str) -> RunLayout:
        return replace(self, run_date=run_date)

    @property
    def run_prefix(self) -> str:
        return join_uri(self.output_prefix, "runs", self.run_id)

    @property
    def record(self) -> str:
        return join_uri(self.run_prefix, "run.json")

    @property
    def lease(self) -> str:
        return join_uri(self.run_prefix, "lease.json")

    @property
    def manifest(self) -> str:
        return join_uri(self.run_prefix, "manifest.json")

    @property
    def success(self) -> str:
        return join_uri(self.run_prefix, "_SUCCESS")

    @property
    def report(self) -> str:
        return join_uri(self.run_prefix, "report.html")

    @property
    def metrics_text(self) -> str:
        return join_uri(self.run_prefix, "metrics.txt")

    @property
    def features(self) -> str:
        return join_uri(self.run_prefix, "features")

    @property
    def detections(self) -> str:
        return join_uri(self.run_prefix, "detections")

    def subset(self, group: str, subset_id: int) -> str:
        return join_uri(self.run_prefix, "subsets", segment(group), f"subset-{subset_id:05d}.parquet")

    def group_summary(self, group: str) -> str:
        return join_uri(self.run_prefix, "groups", f"{segment(group)}.json")

    @property
    def scores_root(self) -> str:
        return join_uri(self.output_prefix, "scores")

    def scores(self, group: str) -> str:
        return join_uri(self.scores_root, partition_path(self.run_date, group), f"part-{self.run_id}.parquet")

    @property
    def heatmaps_root(self) -> str:
        return join_uri(self.output_prefix, "heatmaps")

    def heatmap(self, group: str, image_uri: str) -> str:
        """One PNG per image and run, named after the image's folder and file for reviewers (cut to fit
        MAX_NAME_BYTES); the URI hash keeps equal names from different places apart."""
        path = PurePosixPath(image_uri)
        name = f"{path.parent.name}_{path.stem}" if path.parent.name else path.stem
        end = f"-{_hash(image_uri, 8)}.png"
        name = name.encode()[:MAX_NAME_BYTES - len(end)].decode(errors="ignore")  # whole characters only
        return join_uri(self.heatmaps_root, partition_path(self.run_date, group), f"run_id={self.run_id}", name + end)

    @property
    def text_group_marker(self) -> str:
        """The run's empty scores object under TEXT_GROUP (named apart from any group's rows)."""
        return join_uri(self.scores_root, partition_path(self.run_date, TEXT_GROUP), f"types-{self.run_id}.parquet")

    @property
    def metrics_table(self) -> str:
        return join_uri(self.output_prefix, "metrics", f"run_date={self.run_date}", f"part-{self.run_id}.parquet")

    @property
    def group_nights_root(self) -> str:
        return join_uri(self.output_prefix, "group_nights")

    @property
    def group_nights(self) -> str:
        """The run's row per group of the per-group nightly table (``nights``)."""
        return join_uri(self.group_nights_root, f"run_date={self.run_date}", f"part-{self.run_id}.parquet")


def shard_uri(prefix: str, shard_id: int) -> str:
    """A first-stage shard object under ``prefix`` (``RunLayout.features`` or ``RunLayout.detections``)."""
    return join_uri(prefix, f"shard-{shard_id:05d}.parquet")
