"""Waiting for the Ray resources the job asks for, with a limit (``resource_wait_s``).

Two nights on a 2-CPU cluster hung forever: each held one CPU for its extraction actor, and the
decoding and scoring tasks of both waited for a CPU that neither would free. Before it writes
anything the job now reserves what each stage asks for at once (the first stage: the extraction
pool's min actors and a decoding task; then a scoring task) as a placement group, which an
autoscaling cluster scales up for as it does for any pending demand, and releases it again once
granted. The group is packed on as few nodes as fit but may spread: a cluster of 1-CPU nodes runs a
stage that no single node holds. A reservation
not granted within ``resource_wait_s`` stops the job in one line naming what it asked for and what
the cluster has: exit 2 (a ``JobError``), because nothing of the run was written and the same
command works once the cluster is free or the config asks for less. Ray Data's wait for the first
stage's actors to start gets the same limit; past it the stage fails (exit 1), as any stage that
cannot finish does.

What remains: the reservation is released before the stage starts, so two drivers that are granted
theirs one after the other can still both start their actors on a cluster that fits one; the
second's actor pool then times out instead of hanging.
"""

from __future__ import annotations

import math
import time

from ..settings import JobConfig
from .preflight import JobError


def task_device(num_gpus: float) -> str:
    """The torch device of a task or actor that reserved ``num_gpus``: 'auto' (CUDA where the worker has it)
    when it reserved any. Ray's GPUs are scheduling tokens: a node may declare a logical GPU without CUDA
    (a test cluster, a GPU fraction on a CPU node), and the work then runs on its CPU instead of failing."""
    return "auto" if num_gpus > 0 else "cpu"


def demands(cfg: JobConfig) -> dict[str, list[dict[str, float]]]:
    """What each stage asks for at once, as placement-group bundles (one per actor or task): the first
    stage starts its pool's min actors and needs a decoding task beside them, or it never moves."""
    ex, sc = cfg.extraction, cfg.scoring
    actor = {"CPU": ex.num_cpus_per_actor, "GPU": ex.num_gpus_per_actor}
    asked = {"first stage (extraction.actors min, num_cpus_per_actor, num_gpus_per_actor, num_cpus_per_decode_task)": [
                 *[actor] * ex.pool_sizes()[0], {"CPU": ex.num_cpus_per_decode_task}],
             "scoring (scoring.num_cpus_per_task, num_gpus_per_task)": [
                 {"CPU": sc.num_cpus_per_task, "GPU": sc.num_gpus_per_task}]}
    return {stage: [{k: float(v) for k, v in b.items() if v > 0} for b in bundles] for stage, bundles in asked.items()}


def _listed(resources: dict[str, float]) -> str:
    """CPUs (also none) and GPUs (where there are any) of a bundle or a cluster."""
    return ", ".join(f"{k} {resources.get(k, 0.0):g}" for k in ("CPU", "GPU") if k == "CPU" or k in resources)


def wait_for_resources(cfg: JobConfig) -> None:
    """Return once the cluster has granted each stage's bundles; a JobError after ``resource_wait_s``."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    deadline = time.monotonic() + cfg.resource_wait_s
    for stage, bundles in demands(cfg).items():
        group = placement_group(bundles, strategy="PACK")  # best effort: bundles spread over nodes when needed
        try:
            ready, _ = ray.wait([group.ready()], timeout=max(0.0, deadline - time.monotonic()))
            free = ray.available_resources()
        finally:
            remove_placement_group(group)
        if not ready:
            asked = " + ".join(f"{{{_listed(b)}}}" for b in bundles)
            raise JobError(f"the Ray cluster did not grant the resources this job asks for within "
                           f"{cfg.resource_wait_s:g}s (resource_wait_s): its {stage} asks for {asked} at once; the "
                           f"cluster has {_listed(ray.cluster_resources())}, {_listed(free)} of them free (another "
                           "job holds the rest?): run it when that job is done, or ask for less")


def limit_actor_wait(cfg: JobConfig) -> None:
    """Ray Data waits for the first stage's actor pool at most ``resource_wait_s`` (it waits forever by default)."""
    import ray

    ray.data.DataContext.get_current().wait_for_min_actors_s = math.ceil(cfg.resource_wait_s)
