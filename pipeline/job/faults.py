"""Deliberate worker crashes and holds at named points, for testing that retries, re-runs and lost or
added nodes lose no rows.

Set ``MUSC_CRASH_ONCE=<point>[,<point>...]:<marker folder>`` in the workers' environment. The first
process to reach ``crash_point(<point>)`` creates ``<marker folder>/<point>`` and dies with
``os._exit`` (as a killed worker does: no exception, no cleanup); every later arrival finds the
marker and carries on. Points: ``extract_shard``, ``detector_shard``, ``score_subset``,
``finalise_group``, ``sweep_trial``.

``MUSC_HOLD=<point>[,<point>...]:<folder>`` holds instead: while ``<folder>/<point>.release`` does not
exist, every process that reaches the point creates ``<folder>/<point>.<Ray node id>.<pid>`` and waits
(at most ``HOLD_LIMIT_S``). A test then knows which nodes have a shard or subset in flight when it
removes one of them or adds another: a deterministic moment on a machine whose speed it cannot know.
Unset, ``crash_point`` costs two environment lookups.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV_VAR = "MUSC_CRASH_ONCE"
HOLD_ENV_VAR = "MUSC_HOLD"
EXIT_CODE = 137  # what a SIGKILLed process reports
HOLD_LIMIT_S = 600.0  # a test that never releases fails on its own timeout, not by a worker held forever


def _marker_folder(env_var: str, point: str) -> Path | None:
    """The folder ``env_var`` names for ``point``, or None when it does not name the point."""
    points, _, folder = os.environ.get(env_var, "").partition(":")
    return Path(folder) if folder and point in points.split(",") else None


def crash_point(point: str) -> None:
    """Die here if ``MUSC_CRASH_ONCE`` names this point and no process has died here before; wait here
    while ``MUSC_HOLD`` names it and the point is not released."""
    folder = _marker_folder(ENV_VAR, point)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(folder / point, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            os._exit(EXIT_CODE)
    folder = _marker_folder(HOLD_ENV_VAR, point)
    if folder is not None and not (release := folder / f"{point}.release").exists():
        import ray

        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{point}.{ray.get_runtime_context().get_node_id()}.{os.getpid()}").touch()
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
