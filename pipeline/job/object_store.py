"""What the Ray object store spilled to disk during a run, from Ray's own stats.

A full object store does not fail a night: Ray spills objects to local disk and restores them when they
are read, which is slow. The figures are the cluster's, as ``ray memory --stats-only`` prints them
(every raylet's plasma stats, summed by the raylet asked), read when the run starts and when it ends:
their difference is what the cluster spilled meanwhile, other jobs' spilling on a shared cluster included.
Ray exposes them only through an internal call, so a Ray that changes it costs the figure (None and a
warning), never the run.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# manifest name -> field of Ray's ObjectStoreStats (node_manager.proto)
STORE_FIELDS = {"spilled_bytes": "spilled_bytes_total", "spilled_objects": "spilled_objects_total",
                "restored_bytes": "restored_bytes_total"}


def store_stats() -> dict[str, int] | None:
    """The cluster's spilling totals so far, or None when Ray is not connected or cannot say."""
    try:
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        if not ray.is_initialized():
            return None
        reply = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address),
                                      timeout_seconds=30.0)
        return {name: int(getattr(reply.store_stats, field)) for name, field in STORE_FIELDS.items()}
    except Exception as err:  # noqa: BLE001 - an internal API: the figure is optional, the run is not
        log.warning("object store stats not read (%s: %s); the manifest's object_store is null",
                    type(err).__name__, str(err).splitlines()[0][:200] if str(err) else "")
        return None


def spilled_since(before: dict[str, int] | None) -> dict[str, int] | None:
    """What the cluster spilled and restored since ``before`` (``store_stats``); None when either end is
    unknown."""
    after = store_stats() if before is not None else None
    if before is None or after is None:
        return None
    return {name: after[name] - before[name] for name in STORE_FIELDS}

