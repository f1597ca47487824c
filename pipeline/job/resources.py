"""Waiting for the Ray resources the job asks for, with a limit (``resource_wait_s``).

Two nights on a 2-CPU cluster hung forever: each held one CPU for its extraction actor, and the
decoding and scoring tasks of both waited for a CPU that neither would free. Before it writes
anything the job now waits, at most ``resource_wait_s``, until the cluster has free what it asks
for at once; then it stops in one line naming both. That is exit 2 (a ``JobError``): nothing of
the run was written, and the same command works once the cluster is free or the config asks for
less. Ray Data's wait for the first stage's actors to start gets the same limit; past it the stage
fails (exit 1), as any stage that cannot finish does.

What remains: two drivers that pass the wait in the same moment can still both start their actors
on a cluster that fits one; the second's actor pool then times out instead of hanging.
"""

from __future__ import annotations

import math
import time

from ..settings import JobConfig
from .preflight import JobError

POLL_S = 1.0  # how often the free resources are looked at while waiting


def demand(cfg: JobConfig) -> dict[str, float]:
    """What the job asks for at once, per resource: an extraction actor with a decoding task beside it, or
    a scoring task, whichever is more."""
    ex, sc = cfg.extraction, cfg.scoring
    first = {"CPU": ex.num_cpus_per_actor + ex.num_cpus_per_decode_task, "GPU": ex.num_gpus_per_actor}
    scoring = {"CPU": float(sc.num_cpus_per_task), "GPU": sc.num_gpus_per_task}
    return {k: max(first[k], scoring[k]) for k in first if max(first[k], scoring[k]) > 0}


def _listed(resources: dict[str, float], keys: list[str]) -> str:
    return ", ".join(f"{k} {resources.get(k, 0.0):g}" for k in keys)


def wait_for_resources(cfg: JobConfig) -> None:
    """Return once the cluster has ``demand(cfg)`` free; a JobError after ``resource_wait_s``."""
    import ray

    asked = demand(cfg)
    deadline = time.monotonic() + cfg.resource_wait_s
    while True:
        free = ray.available_resources()
        if all(free.get(k, 0.0) >= v - 1e-9 for k, v in asked.items()):
            return
        if time.monotonic() >= deadline:
            keys = list(asked)
            raise JobError(f"the Ray cluster did not have the resources this job asks for free within "
                           f"{cfg.resource_wait_s:g}s (resource_wait_s): it asks for {_listed(asked, keys)} at once "
                           f"(extraction.num_cpus_per_actor + num_cpus_per_decode_task, num_gpus_per_actor; "
                           f"scoring.num_cpus_per_task); the cluster has {_listed(ray.cluster_resources(), keys)}, "
                           f"{_listed(free, keys)} of them free (another job holds the rest): run it when that "
                           "job is done, or ask for less")
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


def limit_actor_wait(cfg: JobConfig) -> None:
    """Ray Data waits for the first stage's actor pool at most ``resource_wait_s`` (it waits forever by default)."""
    import ray

    ray.data.DataContext.get_current().wait_for_min_actors_s = math.ceil(cfg.resource_wait_s)
