"""Images and masks decoded by a thread pool ahead of their use, so reading overlaps extraction and
scoring instead of preceding them.

PIL releases the GIL while it decodes and resizes, so the threads decode in parallel with each other
and with torch. The arrays are those of a serial ``load_image`` / ``load_mask`` loop; only the time
the evaluation spends waiting for one counts as its "read" stage.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import overload

import numpy as np

from ..engine.timing import StageTimes

# decoding threads: enough to keep ahead of extraction without crowding out torch's own threads
READ_THREADS = min(4, os.cpu_count() or 1)


class ReadAhead(Sequence[np.ndarray]):
    """Arrays being decoded, in order; taking one waits for it (timed as "read")."""

    def __init__(self, futures: list[Future[np.ndarray]], timings: StageTimes) -> None:
        self.futures, self.timings = futures, timings

    def __len__(self) -> int:
        return len(self.futures)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        with self.timings.stage("read"):
            return self.futures[index].result()


class Reader:
    """Decodes a category's subsets one ahead: asking for subset s submits s + 1 as well, so at most
    two subsets' images are held at a time."""

    def __init__(self, pool: ThreadPoolExecutor, load: Callable[[int], np.ndarray], subsets: list[np.ndarray],
                 timings: StageTimes) -> None:
        self.pool, self.load, self.subsets, self.timings = pool, load, subsets, timings
        self.pending: dict[int, list[Future[np.ndarray]]] = {}

    def _submit(self, sid: int) -> None:
        if sid < len(self.subsets) and sid not in self.pending:
            self.pending[sid] = [self.pool.submit(self.load, int(i)) for i in self.subsets[sid]]

    def subset(self, sid: int) -> ReadAhead:
        """The images of subset ``sid``, in its order."""
        self._submit(sid)
        self._submit(sid + 1)
        return ReadAhead(self.pending.pop(sid), self.timings)
