"""Wall time per named stage of a scoring run (read, extract, LNAMD, MSM, RsCIN, ...)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StageTimes:
    """Seconds per stage, summed over every time a stage runs (e.g. once per subset).

    A stage that runs inside another (extraction waiting for an image still being decoded) is
    charged to the inner stage only, so the stages never add up to more than the wall time. A stage
    on a CUDA device waits for its kernels before the clock stops, so asynchronous work is charged
    to the stage that launched it rather than to the next one.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._inner: list[float] = []  # per open stage: seconds of the stages nested in it

    @contextmanager
    def stage(self, name: str, device: torch.device | str | None = None) -> Iterator[None]:
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            if device is not None and torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - self._inner.pop()
            if self._inner:
                self._inner[-1] += elapsed
