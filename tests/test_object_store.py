"""The manifest's object_store figure is Ray's own: a store made to spill reports what it spilled and restored."""

import numpy as np
import pytest

from pipeline.job.object_store import spilled_since, store_stats

MB = 2**20


def test_spilling_and_restoring_are_read_from_rays_stats():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("an in-process Ray instance is running")
    assert store_stats() is None  # outside Ray: no figure (the manifest's null)
    ray.init(num_cpus=1, object_store_memory=80 * MB, include_dashboard=False, log_to_driver=False)
    try:
        before = store_stats()
        assert before is not None and spilled_since(before) == {"spilled_bytes": 0, "spilled_objects": 0,
                                                                "restored_bytes": 0}
        refs = [ray.put(np.full(30 * MB // 8, i, np.float64)) for i in range(5)]  # 150 MB into an 80 MB store
        spilled = spilled_since(before)
        assert spilled["spilled_objects"] >= 2 and spilled["spilled_bytes"] >= 2 * 30 * MB, spilled
        assert [float(ray.get(ref)[0]) for ref in refs] == [0, 1, 2, 3, 4]  # spilled ones come back from disk
        assert spilled_since(before)["restored_bytes"] >= 30 * MB
    finally:
        ray.shutdown()
