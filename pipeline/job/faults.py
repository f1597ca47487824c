"""Deliberate worker crashes at named points, for testing that retries and re-runs lose no rows.

Set ``MUSC_CRASH_ONCE=<point>[,<point>...]:<marker folder>`` in the workers' environment. The first
process to reach ``crash_point(<point>)`` creates ``<marker folder>/<point>`` and dies with
``os._exit`` (as a killed worker does: no exception, no cleanup); every later arrival finds the
marker and carries on. Points: ``extract_shard``, ``detector_shard``, ``score_subset``,
``finalise_group``, ``sweep_trial``.
Unset, ``crash_point`` costs one environment lookup.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "MUSC_CRASH_ONCE"
EXIT_CODE = 137  # what a SIGKILLed process reports


def crash_point(point: str) -> None:
    """Die here if ``MUSC_CRASH_ONCE`` names this point and no process has died here before."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    points, _, folder = spec.partition(":")
    if point not in points.split(",") or not folder:
        return
    marker = Path(folder) / point
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(EXIT_CODE)
