"""Throttled progress lines for long stages (feature extraction, mutual scoring)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints ``label: done/total (pct) elapsed, eta`` at most every ``interval`` seconds and at the end."""

    def __init__(self, label: str, total: int, interval: float = 5.0, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.interval = interval
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self._last = -float("inf")

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = max(total, 1)
        now = time.perf_counter()
        if done < self.total and now - self._last < self.interval:
            return
        self._last = now
        elapsed = now - self.start
        eta = elapsed / done * (self.total - done) if done else float("nan")
        print(f"{self.label}: {done}/{self.total} ({100 * done / self.total:.0f}%) "
              f"{elapsed:.1f}s elapsed, eta {eta:.1f}s", file=self.stream, flush=True)
