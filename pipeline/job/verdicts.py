"""Reviewers' verdicts: what a review tool wrote about flagged (and unflagged) images, read back into scoring.

Under the ``verdicts`` prefix, every Parquet or CSV file holds rows ``uri, verdict (good | defect), reviewer,
reviewed_at``. They are read whole every night; a bad file, row or URI is one warning line and is skipped,
never the night. URIs are compared in one spelling (``verdict_key``): ``./in/x.png``, ``in/x.png`` and
``file://in/x.png`` are one local file. An image with two different verdicts counts by its latest
(``reviewed_at``; a tie: defect) for flag precision, and is never a reference: a reference that may carry a
defect hides that defect on tonight's parts, and there are other candidates. The earlier nights' rows are
matched against them here (``review_nights``): flag precision per group and night, the reviewed rows from
which ``references`` takes the confirmed-good images, and a warning per verdict for an image none of those
nights scored, unless it was given before the oldest of them started (it is about an older night: the
table keeps growing, and its old verdicts must not warn every night).
"""

from __future__ import annotations

import io
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from ..storage import StorageError, canonical_uri, is_remote, read_bytes
from .earlier_runs import earlier_runs, group_rows, run_groups

log = logging.getLogger(__name__)

COLUMNS = ("uri", "verdict", "reviewer", "reviewed_at")
GOOD, DEFECT = "good", "defect"
READERS = {".parquet": lambda data: pq.read_table(io.BytesIO(data)),
           ".csv": lambda data: pcsv.read_csv(io.BytesIO(data), convert_options=pcsv.ConvertOptions(
               column_types={c: pa.string() for c in COLUMNS}))}


def verdict_key(uri: str) -> str:
    """One spelling of an image's location: ``storage.canonical_uri``, local paths made absolute (relative
    ones are read from the job's working folder, as ``inputs.uris`` are)."""
    key = canonical_uri(uri)
    return key if is_remote(uri) else os.path.abspath(key)


def _name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Verdicts:
    """Each reviewed image's verdict (by ``verdict_key``), the images with contradicting verdicts, and one
    warning per file or row that was skipped and per contradiction."""

    latest: dict[str, str] = field(default_factory=dict)  # key -> good | defect (the latest reviewed_at)
    reviewed_at: dict[str, datetime] = field(default_factory=dict)  # key -> its latest review
    contradicted: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = ()
    files: int = 0  # files found (read or skipped)
    rows: int = 0  # rows kept

    @cached_property
    def _names(self) -> frozenset[str]:
        return frozenset(_name(key) for key in self.latest)

    def of(self, uri: str) -> str | None:
        """The image's verdict, or None. Most images of a night have none: their file name alone says so,
        which is ~20x cheaper than ``verdict_key``."""
        return self.latest.get(verdict_key(uri)) if _name(uri) in self._names else None

    def confirmed_good(self, uri: str) -> bool:
        """Good by every reviewer who looked at it."""
        key = verdict_key(uri)
        return self.latest.get(key) == GOOD and key not in self.contradicted

    def never_reference(self, uri: str) -> bool:
        """A defect verdict, or contradicting ones: the image is kept out of every group's references."""
        key = verdict_key(uri)
        return self.latest.get(key) == DEFECT or key in self.contradicted


def _timestamp(value: Any) -> datetime:
    """A ``reviewed_at`` as an aware UTC datetime: a Parquet timestamp or ISO 8601 text (no zone: UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip())
    if not isinstance(value, datetime):
        raise ValueError(f"reviewed_at {value!r} is not a timestamp")
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _file_rows(uri: str, data: bytes) -> tuple[list[dict], list[str]]:
    """One file's good rows, and a warning per bad row (or one for the whole file)."""
    reader = READERS.get(os.path.splitext(uri)[1].lower())
    if reader is None:
        return [], [f"verdicts {uri}: skipped, not a .parquet or .csv file"]
    try:
        table = reader(data)
    except (pa.ArrowException, OSError, ValueError) as err:
        return [], [f"verdicts {uri}: skipped, unreadable ({type(err).__name__}: {str(err).splitlines()[0]})"]
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        return [], [f"verdicts {uri}: skipped, no column(s) {', '.join(missing)} (has {', '.join(table.column_names)})"]
    rows, warnings = [], []
    for i, row in enumerate(table.select(list(COLUMNS)).to_pylist(), start=1):
        verdict = str(row["verdict"] or "").strip().lower()
        try:
            if not isinstance(row["uri"], str) or not row["uri"].strip():
                raise ValueError("no uri")
            if verdict not in (GOOD, DEFECT):
                raise ValueError(f"verdict {row['verdict']!r} is not good or defect")
            reviewed_at = _timestamp(row["reviewed_at"])
        except ValueError as err:
            warnings.append(f"verdicts {uri}: row {i} skipped, {err}")
            continue
        rows.append({"uri": row["uri"].strip(), "verdict": verdict, "reviewer": row["reviewer"],
                     "reviewed_at": reviewed_at, "file": uri})
    return rows, warnings


def read_verdicts(prefix: str, storage_options: dict[str, Any] | None = None) -> Verdicts:
    """Every Parquet or CSV file below ``prefix`` (names starting with ``.`` or ``_`` are a writer's temporary
    or marker files and are not read). Listing the prefix may fail (the night then stops in one line);
    reading a file may not: it is skipped with a warning."""
    fs, root = fsspec.core.url_to_fs(prefix, **(storage_options or {}))
    try:
        paths = sorted(p for p in fs.find(root) if not os.path.basename(p).startswith((".", "_")))
    except OSError as err:
        raise StorageError(f"verdicts {prefix}: cannot list it ({type(err).__name__}: {err})") from None
    rows, warnings = [], [] if paths else [f"verdicts {prefix}: no files yet"]
    for path in paths:
        uri = fs.unstrip_protocol(path) if is_remote(prefix) else path
        try:
            data = read_bytes(uri, storage_options)
        except OSError as err:
            warnings.append(f"verdicts {uri}: skipped, unreadable ({type(err).__name__}: {err})")
            continue
        file_rows, file_warnings = _file_rows(uri, data)
        rows.extend(file_rows)
        warnings.extend(file_warnings)
    by_key: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_key[verdict_key(row["uri"])].append(row)
    latest, reviewed_at, contradicted = {}, {}, set()
    for key, seen in by_key.items():
        last = max(seen, key=lambda r: (r["reviewed_at"], r["verdict"] == DEFECT))
        latest[key], reviewed_at[key] = last["verdict"], last["reviewed_at"]
        if len({r["verdict"] for r in seen}) > 1:
            contradicted.add(key)
            said = "; ".join(f"{r['verdict']} by {r['reviewer']} at {r['reviewed_at'].isoformat()} ({r['file']})"
                             for r in sorted(seen, key=lambda r: r["reviewed_at"]))
            warnings.append(f"verdicts: {key} is contradicted ({said}): its latest, {last['verdict']}, counts for "
                            "flag precision; it is never a reference")
    return Verdicts(latest, reviewed_at, frozenset(contradicted), tuple(warnings), len(paths), len(rows))


def flag_precision(rows: Iterable[Mapping[str, Any]], verdicts: Verdicts) -> dict[str, Any]:
    """Of one group's night (scores rows: ``uri``, ``is_anomaly``), how the reviewed images were judged:
    ``reviewed_flags`` flagged images with a verdict, ``confirmed_defects`` of them judged defect,
    ``flag_precision`` their ratio (None when none was reviewed), and ``reviewed_unflagged`` /
    ``missed_defects`` the same for the images that were not flagged. Rows not scored (no flag) are left out."""
    counts = {"reviewed_flags": 0, "confirmed_defects": 0, "reviewed_unflagged": 0, "missed_defects": 0}
    for row in rows:
        verdict = verdicts.of(row["uri"]) if row["is_anomaly"] is not None else None
        if verdict is None:
            continue
        flagged = bool(row["is_anomaly"])
        counts["reviewed_flags" if flagged else "reviewed_unflagged"] += 1
        counts["confirmed_defects" if flagged else "missed_defects"] += verdict == DEFECT
    reviewed = counts["reviewed_flags"]
    return {**counts, "flag_precision": counts["confirmed_defects"] / reviewed if reviewed else None}


@dataclass(frozen=True)
class Review:
    """The earlier nights matched against the verdicts: per group, the reviewed rows (with their run) and
    each night's flag precision, and one warning per verdict for an image none of those nights scored (but
    for verdicts given before the oldest of them started, when there are older runs: ``aged_out``)."""

    verdicts: Verdicts
    reviewed: dict[str, list[tuple[dict, str]]]  # group -> [(row, run id)], latest run first
    precision: dict[str, dict[str, dict]]  # group -> run id -> run_date and flag_precision's counts
    warnings: tuple[str, ...]
    aged_out: int  # verdicts given before the oldest run read started: about older nights, no warning
    earlier: list[dict[str, Any]]  # the manifests of every earlier successful run, latest first (listed once)


def review_nights(verdicts: Verdicts, output_prefix: str, run_id: str, max_runs: int, groups: list[str],
                  storage_options: dict[str, Any] | None = None) -> Review:
    """The last ``max_runs`` successful runs under ``output_prefix`` but ``run_id``, read once, their rows
    matched against ``verdicts`` (``groups``: tonight's, to name a group stored under a cut name)."""
    every_run = earlier_runs(output_prefix, run_id, storage_options)
    runs = every_run[:max_runs]
    with ThreadPoolExecutor(max_workers=16) as pool:
        parts = [(m, g) for m, gs in zip(runs, pool.map(
            lambda m: run_groups(output_prefix, m, groups, storage_options), runs)) for g in gs]
        tables = list(pool.map(lambda part: group_rows(output_prefix, *part, storage_options,
                                                       keep=lambda uri: verdicts.of(uri) is not None), parts))
    reviewed: dict[str, list[tuple[dict, str]]] = defaultdict(list)
    precision: dict[str, dict[str, dict]] = defaultdict(dict)
    seen: set[str] = set()
    for (manifest, group), rows in zip(parts, tables):
        rows = rows or []
        seen.update(verdict_key(r["uri"]) for r in rows)
        reviewed[group].extend((r, manifest["run_id"]) for r in rows)
        if rows:
            precision[group][manifest["run_id"]] = {"run_date": manifest["run_date"],
                                                    **flag_precision(rows, verdicts)}
    # a verdict given before the oldest run read started is about an older night, not an unknown image
    start = datetime.fromisoformat(runs[-1]["started_at"]) if len(every_run) > max_runs else None
    unmatched = set(verdicts.latest) - seen
    unknown = sorted(key for key in unmatched if start is None or verdicts.reviewed_at[key] >= start)
    warnings = tuple(f"verdicts: {key} was not scored by the last {len(runs)} successful run(s) under "
                     f"{output_prefix} (verdict_runs {max_runs}): left out" for key in unknown)
    for warning in (*verdicts.warnings, *warnings):
        log.warning("%s", warning)
    return Review(verdicts, dict(reviewed), dict(precision), tuple(warnings), len(unmatched) - len(unknown),
                  every_run)


def review_record(review: Review, prefix: str) -> dict[str, Any]:
    """What the manifest keeps of a review: the table's size, every warning, precision per group and night."""
    return {"prefix": prefix, "files": review.verdicts.files, "rows": review.verdicts.rows, "aged_out": review.aged_out,
            "warnings": [*review.verdicts.warnings, *review.warnings], "flag_precision": review.precision}


def _night(run_id: str, p: dict[str, Any]) -> str:
    rate = "-" if p["flag_precision"] is None else f"{100 * p['flag_precision']:.0f}%"
    return (f"{p['run_date']} ({run_id}) {p['confirmed_defects']}/{p['reviewed_flags']} flags confirmed ({rate}), "
            f"{p['missed_defects']}/{p['reviewed_unflagged']} unflagged were defects")


def precision_lines(record: dict[str, Any], limit: int, nights: int = 3) -> list[str]:
    """The summary's lines: per group (``limit`` of them), its latest ``nights`` reviewed nights' precision;
    the manifest has the rest."""
    groups = sorted(record["flag_precision"].items())
    lines = []
    for group, by_run in groups[:limit]:
        parts = [_night(run_id, p) for run_id, p in list(by_run.items())[:nights]]
        more = f"; {len(by_run) - nights} earlier nights in the manifest" if len(by_run) > nights else ""
        lines.append(f"  flag precision {group}: " + "; ".join(parts) + more)
    if len(groups) > limit:
        lines.append(f"  ... flag precision of {len(groups) - limit} more groups in the manifest")
    return lines
