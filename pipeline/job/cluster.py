"""Where a night's work ran, and what the cluster lost and retried on the way: the manifest's ``cluster``.

At 03:00 an on-call engineer asks which nodes did the work, whether a spot node went away, and
what Ray did about it. The job answers from what it saw itself: every first-stage shard and every
scoring subset reports the id of the node it ran on (``node_id``, counted per node), and the nodes
alive when the night started are compared with the nodes alive when its stages end (lost and
joined; a node that joined and died in the night is both). What Ray retried (task attempts after
the first, failed attempts) comes from Ray's state API, which the dashboard serves; without one the
manifest says so instead of guessing. A node lost in the last seconds of a night may still count as
alive: Ray notices a lost node when its health checks fail.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)

STATE_API_TIMEOUT_S = 10  # the retry count is worth a few seconds at the end of a night, not more
STATE_API_LIMIT = 10_000  # the state API's own ceiling; retried attempts of one night are far fewer


def node_id() -> str:
    """The Ray node this worker (or driver) runs on."""
    import ray

    return ray.get_runtime_context().get_node_id()


def _nodes() -> dict[str, tuple[str, bool]]:
    """Every node the cluster knows, dead ones included: id -> (address, alive)."""
    import ray

    return {n["NodeID"]: (n["NodeManagerAddress"], n["Alive"]) for n in ray.nodes()}


def _retried(job_id: str, address: str) -> dict[str, Any]:
    """Task attempts after the first and failed attempts of this job, per task name (Ray's state API)."""
    from ray.util.state import list_tasks

    def query(*condition: tuple[str, str, str]) -> list:
        return list_tasks(address, filters=[("job_id", "=", job_id), *condition], limit=STATE_API_LIMIT,
                          timeout=STATE_API_TIMEOUT_S, raise_on_missing_output=False)

    retries = query(("attempt_number", "!=", "0"))
    failed = query(("state", "=", "FAILED"))
    return {"tasks_retried": len({t.task_id for t in retries}),
            "retries_by_task": dict(Counter(t.name for t in retries)),
            "failed_attempts": len(failed), "failed_by_error": dict(Counter(t.error_type or "?" for t in failed))}


class ClusterWatch:
    """Nodes at the start of the night, then the ``cluster`` section once its stages are done."""

    def __init__(self) -> None:
        import ray

        context = ray.get_runtime_context()
        self.job_id, self.address = context.get_job_id(), context.gcs_address
        self.at_start = _nodes()

    def section(self, shards_per_node: dict[str, int], subsets_per_node: dict[str, int]) -> dict[str, Any] | None:
        """The manifest's ``cluster``: nodes that did work (shards, subsets), nodes lost and joined, retries;
        None when Ray no longer answers (the run's own outcome is recorded all the same)."""
        try:
            at_end = _nodes()
        except Exception:  # noqa: BLE001 - e.g. the head went away: the manifest must still be written
            log.warning("the cluster section is left out: Ray's node table did not answer", exc_info=True)
            return None
        nodes = sorted(set(shards_per_node) | set(subsets_per_node))
        dead_before = {n for n, (_, alive) in self.at_start.items() if not alive}
        try:
            retried: dict[str, Any] | None = _retried(self.job_id, self.address)
            why = None
        except Exception as err:  # noqa: BLE001 - no dashboard (a local ray.init without it): say so, never fail
            retried, why = None, f"Ray's state API did not answer ({type(err).__name__}): retries not counted"
        return {
            "nodes_seen": len(nodes),
            "per_node": {n: {"address": at_end.get(n, (None,))[0], "shards": shards_per_node.get(n, 0),
                             "subsets": subsets_per_node.get(n, 0)} for n in nodes},
            "nodes_at_start": len(self.at_start) - len(dead_before),
            "nodes_at_end": sum(alive for _, alive in at_end.values()),
            # a node that joined and died during the night is in both
            "nodes_lost": sorted(n for n, (_, alive) in at_end.items() if not alive and n not in dead_before),
            "nodes_joined": sorted(set(at_end) - set(self.at_start)),
            "retried": retried, "retried_unknown": why,
        }


def summary_line(cluster: dict[str, Any] | None) -> str | None:
    """One line of the job's summary, or None when the run recorded no cluster section."""
    if not cluster:
        return None
    work = ", ".join(f"{info['address']} {info['shards']} shards/{info['subsets']} subsets"
                     for info in cluster["per_node"].values())
    retried = cluster["retried"]
    retries = (cluster["retried_unknown"] if retried is None
               else f"{retried['tasks_retried']} tasks retried, {retried['failed_attempts']} failed attempts")
    seen = cluster["nodes_seen"]
    return (f"  cluster: {seen} node{'s' * (seen != 1)} did work ({work}); {len(cluster['nodes_lost'])} lost, "
            f"{len(cluster['nodes_joined'])} joined; {retries}")
