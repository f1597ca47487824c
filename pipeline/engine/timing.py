"""Wall time per named stage of a scoring run (read, extract, LNAMD, MSM, RsCIN, ...)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StageTimes:
    """Seconds per stage, summed over every time a stage runs (e.g. once per subset).

    A stage on a CUDA device waits for its kernels before the clock stops, so the time of
    asynchronous work is charged to the stage that launched it rather than to the next one.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, device: torch.device | str | None = None) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if device is not None and torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
