"""A run's identity: the config hash, the run id and date, and the record that lets a run resume.

The hash covers every config key that changes results; keys declared ``run_only`` (resources, where
outputs go, credentials) stay out, so the same night with more actors is the same run. The run id
defaults to ``<run_date>-<hash[:8]>``: running the same night again with the same config resumes,
provided the inputs are the same too (``run.json`` records their fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime, timezone

import fsspec

from ..data.inputs import InputRecord
from ..settings import JobConfig, identity_view
from ..storage import StorageError, canonical_uri, exists, read_bytes, write_bytes
from .layout import RunLayout
from .plan import PLAN_VERSION
from .preflight import JobError

log = logging.getLogger(__name__)


def config_hash(cfg: JobConfig) -> str:
    """SHA-256 over every key that affects the results, locations in their canonical spelling (``in`` and
    ``in/`` are one night), and the version of the data plan's rules (a run whose shards were cut under
    other rules must not be resumed)."""
    view = {**identity_view(cfg, canonical_uri), "plan_version": PLAN_VERSION}
    return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()


def inputs_fingerprint(records: Sequence[InputRecord]) -> str:
    """SHA-256 over every input's URI, group, label and mask in URI order: what a resumed run must
    still list, because shards are positions in that list."""
    rows = [[r.uri, r.group, r.label, r.mask_uri] for r in sorted(records, key=lambda r: r.uri)]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def open_run(cfg: JobConfig, chash: str, records: Sequence[InputRecord]) -> tuple[RunLayout, dict | None]:
    """Start a new run or resume one; writes nothing. Returns the run's layout with its date (a
    resumed run keeps the date it was started with) and, for a new run, the record to write
    (``write_run_record``) once the job can start.

    A run id resumes only with the config hash, run date and inputs it was started with: with other
    inputs its finished shards would hold other images, losing and duplicating rows."""
    run_date = cfg.run_date or datetime.now(timezone.utc).date().isoformat()
    layout = RunLayout(cfg.output.prefix, cfg.run_id or f"{run_date}-{chash[:8]}")
    inputs = {"count": len(records), "fingerprint": inputs_fingerprint(records)}
    so = cfg.storage_options
    if exists(layout.record, so):
        recorded = json.loads(read_bytes(layout.record, so))
        if recorded["config_hash"] != chash:
            raise JobError(f"run_id {layout.run_id} was started with a different config (hash "
                           f"{recorded['config_hash'][:12]}, now {chash[:12]}); resume it with the same config or "
                           "choose a new run_id")
        if cfg.run_date is not None and cfg.run_date != recorded["run_date"]:
            raise JobError(f"run_id {layout.run_id} is the run of {recorded['run_date']}; run_date {cfg.run_date} "
                           "differs")
        before = recorded.get("inputs", inputs)  # runs recorded before inputs were resume unchecked
        if before != inputs:
            raise JobError(f"run_id {layout.run_id} was started with other inputs ({before['count']} images, "
                           f"fingerprint {before['fingerprint'][:12]}; now {inputs['count']}, "
                           f"{inputs['fingerprint'][:12]}): restore them to resume it, or choose a new run_id")
        return layout.dated(recorded["run_date"]), None
    return layout.dated(run_date), {"run_id": layout.run_id, "run_date": run_date, "config_hash": chash,
                                    "inputs": inputs, "created_at": datetime.now(timezone.utc).isoformat()}


def same_night_runs(layout: RunLayout, records: Sequence[InputRecord],
                    storage_options: dict | None = None) -> list[str]:
    """Other run ids under the same output prefix that scored the same inputs for the same run date (a
    changed config, or a run_id given by hand): BI that reads every part file counts those images once
    per run. Every run leaves its ``types-<run_id>`` marker in the night's scores partition when it
    starts and its inputs' fingerprint in ``run.json``: one listing and a read per run of that date."""
    fs, folder = fsspec.core.url_to_fs(layout.text_group_marker.rsplit("/", 1)[0], **(storage_options or {}))
    if not fs.exists(folder):
        return []
    fingerprint = inputs_fingerprint(records)
    others = []
    for name in sorted(path.rsplit("/", 1)[-1] for path in fs.ls(folder, detail=False)):
        run_id = name.removeprefix("types-").removesuffix(".parquet")
        record = RunLayout(layout.output_prefix, run_id).record
        if run_id == layout.run_id or not name.startswith("types-") or not exists(record, storage_options):
            continue
        if json.loads(read_bytes(record, storage_options)).get("inputs", {}).get("fingerprint") == fingerprint:
            others.append(run_id)
    return others


def warn_same_night_runs(layout: RunLayout, records: Sequence[InputRecord],
                         storage_options: dict | None = None) -> None:
    """One warning line when ``same_night_runs`` finds any: which, and how to read one run per night."""
    others = same_night_runs(layout, records, storage_options)
    if others:
        log.warning("run_date %s was already scored with the same inputs by run %s under this output.prefix: "
                    "queries over every part file count those images once per run; read the latest run per "
                    "night and group (view musc.scores_latest in infra/athena/tables.sql) or delete the other "
                    "run's part files", layout.run_date, ", ".join(others))


def write_run_record(layout: RunLayout, record: dict, storage_options: dict | None = None) -> None:
    """The new run's ``run.json``, its first object; an output location that refuses it is a one-line
    StorageError."""
    try:
        write_bytes(layout.record, json.dumps(record).encode(), storage_options)
    except OSError as err:
        raise StorageError(f"output.prefix {layout.output_prefix}: cannot write {layout.record} "
                           f"({type(err).__name__}: {err})") from None
