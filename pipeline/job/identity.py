"""A run's identity: the config hash, the run id and date, and the record that lets a run resume.

The hash covers every config key that changes results; keys declared ``run_only`` (resources, where
outputs go, credentials) stay out, so the same night with more actors is the same run. The run id
defaults to ``<run_date>-<hash[:8]>``: running the same night again with the same config resumes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from ..settings import JobConfig, identity_view
from ..storage import exists, read_bytes, write_bytes
from .layout import RunLayout
from .plan import PLAN_VERSION
from .preflight import JobError


def config_hash(cfg: JobConfig) -> str:
    """SHA-256 over every key that affects the results, and the version of the data plan's rules (a
    run whose shards were cut under other rules must not be resumed)."""
    view = {**identity_view(cfg), "plan_version": PLAN_VERSION}
    return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()


def open_run(cfg: JobConfig, chash: str) -> RunLayout:
    """Start a new run or resume one: the run id's recorded config hash must match. Returns the run's
    layout with its date (a resumed run keeps the date it was started with)."""
    run_date = cfg.run_date or datetime.now(timezone.utc).date().isoformat()
    layout = RunLayout(cfg.output.prefix, cfg.run_id or f"{run_date}-{chash[:8]}")
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
        return layout.dated(recorded["run_date"])
    write_bytes(layout.record, json.dumps({
        "run_id": layout.run_id, "run_date": run_date, "config_hash": chash,
        "created_at": datetime.now(timezone.utc).isoformat(),
    }).encode(), so)
    return layout.dated(run_date)
