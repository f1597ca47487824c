"""Progress metrics: the night's progress as Ray metrics, which each node serves to Prometheus.

Not the run's *metrics table* (AUROC and friends, ``manifest.write_metrics``): these are operational
counters for an on-call engineer (docs/monitoring.md). Each is emitted where the work happens: the
driver (images listed, tasks planned, stage seconds), the decode tasks (the images' bytes), the first
stage's actors, the scoring tasks and the group tasks (tasks done, their seconds, images, bytes read
and written). Ray names them
``ray_musc_<name>`` on the metrics endpoint (counters end in ``_total``).

Only counters and a histogram: Ray drops a gauge's series when its process exits, and a job's workers
and driver exit with the job, so a gauge would vanish at the end of the night; counters stay. Every
series carries ``run_id`` and, where it applies, ``stage`` or ``status`` (few values each: never a
group or a URI, which would make one series per image). Counters count work done, retried work
included; the manifest holds the exact counts. Outside a Ray worker or driver (the engine's tests,
``score_subset`` called alone) every call does nothing, and a metrics failure never fails the work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..storage import bytes_moved
from .scores_table import SCORED_STATUSES

log = logging.getLogger(__name__)

PREFIX = "musc_"
# task seconds: a shard of 64 at 518 px on a GPU takes seconds, a group of 20,000 images some minutes
SECONDS_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
# name -> (kind, what it counts, tag keys)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "images_listed": ("counter", "input images listed by preflight (driver)", ("run_id",)),
    "images_extracted": ("counter", "images through the first stage's model: features extracted, or scored by a "
                         "trained detector (actors)", ("run_id", "stage")),
    "images_scored": ("counter", "images given a score: by mutual scoring (subset tasks) or by a trained detector "
                      "(its actors)", ("run_id", "stage")),
    "images_failed": ("counter", "rows written without a score, by status (group tasks)", ("run_id", "status")),
    "tasks_planned": ("counter", "shards, subsets and groups of the run's plan (driver)", ("run_id", "stage")),
    "tasks_done": ("counter", "shards, subsets and groups finished by this run", ("run_id", "stage")),
    "stage_seconds": ("counter", "wall seconds of each finished stage (driver)", ("run_id", "stage")),
    "task_seconds": ("histogram", "seconds of one shard, subset or group task", ("run_id", "stage")),
    "bytes_read": ("counter", "bytes read from storage by the tasks (stage decode: the images)", ("run_id", "stage")),
    "bytes_written": ("counter", "bytes written to storage by the tasks", ("run_id", "stage")),
}
_made: dict[str, Any] = {}  # this process's metric objects, made on first use


def _metric(name: str) -> Any | None:
    """The process's metric ``name``, or None outside Ray."""
    import ray

    if not ray.is_initialized():
        return None
    if name not in _made:
        from ray.util.metrics import Counter, Histogram

        kind, doc, tags = METRICS[name]
        _made[name] = (Counter(PREFIX + name, doc, tag_keys=tags) if kind == "counter"
                       else Histogram(PREFIX + name, doc, boundaries=list(SECONDS_BUCKETS), tag_keys=tags))
    return _made[name]


def record(name: str, value: float, run_id: str, **tags: str) -> None:
    """Add ``value`` to counter ``name`` (observe it, for the histogram); zero adds nothing."""
    if value <= 0 and METRICS[name][0] == "counter":
        return
    try:
        metric = _metric(name)
        if metric is not None:
            tags = {"run_id": run_id, **tags}
            if METRICS[name][0] == "counter":
                metric.inc(value, tags)
            else:
                metric.observe(value, tags)
    except Exception as err:  # noqa: BLE001 - progress metrics never fail the work they describe
        log.warning("progress metric %s not recorded: %s", name, err)


@contextmanager
def moved(stage: str, run_id: str) -> Iterator[None]:
    """The bytes read and written through ``storage`` inside the block, finished or not."""
    before = bytes_moved()
    try:
        yield
    finally:
        after = bytes_moved()
        record("bytes_read", after["read"] - before["read"], run_id, stage=stage)
        record("bytes_written", after["written"] - before["written"], run_id, stage=stage)


@contextmanager
def task(stage: str, run_id: str) -> Iterator[None]:
    """One unit of a stage's work (a shard, a subset, a group): its bytes (``moved``) and, when it
    finishes, one task done and its seconds."""
    start = time.perf_counter()
    with moved(stage, run_id):
        yield
        record("tasks_done", 1, run_id, stage=stage)
        record("task_seconds", time.perf_counter() - start, run_id, stage=stage)


def run_planned(run_id: str, inputs: int, tasks: dict[str, int]) -> None:
    """The driver, once the run is planned: its inputs and its tasks per stage."""
    record("images_listed", inputs, run_id)
    for stage, count in tasks.items():
        record("tasks_planned", count, run_id, stage=stage)


def stages_finished(run_id: str, timings: dict[str, float]) -> None:
    """The driver, before it leaves Ray: each stage's wall seconds (a counter, so that it outlives the
    driver; the actors' busy seconds are the manifest's)."""
    for stage, seconds in timings.items():
        if not stage.endswith("_actor_busy"):
            record("stage_seconds", seconds, run_id, stage=stage)


def group_finished(run_id: str, statuses: dict[str, int]) -> None:
    """A group task's rows without a score, by status."""
    for status, count in statuses.items():
        if status not in SCORED_STATUSES:
            record("images_failed", count, run_id, status=status)
