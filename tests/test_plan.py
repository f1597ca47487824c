"""The data plan: subsets drawn from the listing, shards cut inside them, at 10^5 inputs in seconds."""

import time
from collections import Counter

import pytest

from pipeline.data.inputs import InputRecord
from pipeline.job.plan import plan_run


def listing(sizes: dict[str, int]) -> list[InputRecord]:
    return [InputRecord(f"s3://b/{g}/{i:06d}.png", g) for g, n in sizes.items() for i in range(n)]


def test_shards_lie_inside_subsets_and_each_subset_owns_its_shards():
    records = listing({"big": 1000, "mid": 301, "two": 2, "one": 1})
    plan = plan_run(records, shard_size=64, max_subset_size=200, seed=3)
    shards = {s.shard_id: s for s in plan.shards}
    assert sorted(r.uri for s in plan.shards for r in s.records) == sorted(r.uri for r in records)  # each once
    assert [s.shard_id for s in plan.shards] == list(range(len(plan.shards)))
    owners = Counter(s for subsets in plan.subsets.values() for p in subsets for s in p.shard_ids)
    assert set(owners.values()) == {1}  # no shard is read by two subsets
    for group, subsets in plan.subsets.items():
        for p in subsets:
            held = [r for s in p.shard_ids for r in shards[s].records]
            assert len(held) == p.size and {r.group for r in held} == {group}
            assert all(shards[s].subset_id == p.subset_id for s in p.shard_ids)
            assert max(len(shards[s].records) for s in p.shard_ids) <= 64
    assert [p.size for p in plan.subsets["big"]] == [200] * 5 and len(plan.subsets["mid"]) == 2
    assert [len(shards[s].records) for s in plan.subsets["big"][0].shard_ids] == [50, 50, 50, 50]  # near-equal
    assert plan.subsets.get("one", []) == [] and len(plan.shards_of_group["one"]) == 1
    known_good = plan_run(records, 64, 200, seed=3, references={"one": ["s3://b/ref/0.png", "s3://b/ref/1.png"]})
    (alone,) = known_good.subsets["one"]  # one image and its references: scored, not too small
    assert alone.size == 1 and len(alone.reference_shard_ids) == 1
    assert alone.group_shard_ids == tuple(known_good.shards_of_group["one"]) == alone.shard_ids


def test_trained_detectors_get_group_shards_without_subsets():
    plan = plan_run(listing({"a": 5, "b": 3}), shard_size=2, max_subset_size=None, seed=0)
    assert not any(plan.subsets.values())
    assert [[r.uri[-10:] for r in s.records] for s in plan.shards] == [
        ["000000.png", "000001.png"], ["000002.png"], ["000003.png", "000004.png"],
        ["000000.png", "000001.png"], ["000002.png"]]
    assert [s.group for s in plan.shards] == ["a", "a", "a", "b", "b"]
    with pytest.raises(ValueError, match="shard size"):
        plan_run(listing({"a": 2}), 0, None, 0)


def test_a_plan_of_a_hundred_thousand_inputs_takes_seconds():
    records = listing({**{f"line{g:02d}": 1999 for g in range(40)}, "huge": 20_000, "solo": 1})
    assert len(records) == 99_961
    start = time.perf_counter()
    plan = plan_run(records, shard_size=64, max_subset_size=200, seed=0)
    seconds = time.perf_counter() - start
    assert seconds < 10, seconds
    assert sum(len(s.records) for s in plan.shards) == len(records)
    assert len(plan.subsets["huge"]) == 100 and sum(p.size for p in plan.subsets["huge"]) == 20_000


def test_subset_tasks_read_every_feature_row_exactly_once(tmp_path, monkeypatch):
    """Read amplification 1.0: all subset tasks together read each shard once and every row once."""
    import os

    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from pipeline.engine.features import Features
    from pipeline.job import subsets
    from pipeline.job.extract import shard_table
    from pipeline.job.layout import RunLayout, shard_uri
    from pipeline.settings import MuscConfig

    records = listing({"line": 700, "other": 90})
    plan = plan_run(records, shard_size=64, max_subset_size=200, seed=0)
    prefix = str(tmp_path / "features")
    os.makedirs(prefix)
    rng = np.random.default_rng(0)
    for shard in plan.shards:
        n = len(shard.records)
        feats = Features([torch.from_numpy(rng.normal(size=(n, 8, 3, 3)).astype(np.float32))],
                         torch.nn.functional.normalize(torch.randn(n, 4), dim=1))
        errors = ["" if i % 50 else "OSError: broken" for i in range(n)]  # some images did not decode
        pq.write_table(shard_table([r.__dict__ for r in shard.records], errors, feats, "test"),
                       shard_uri(prefix, shard.shard_id))
    reads: Counter = Counter()
    rows_read: Counter = Counter()
    real_read = subsets.read_feature_shard

    def counting_read(uri, storage_options=None):
        table, feats = real_read(uri, storage_options)
        reads[uri] += 1
        rows_read[uri] += table.num_rows
        return table, feats

    monkeypatch.setattr(subsets, "read_feature_shard", counting_read)
    layout = RunLayout(str(tmp_path / "out"), "r")
    cfg = MuscConfig(aggregation_degrees=[1], rscin_windows=None)
    scored = sum(subsets.score_subset(p, prefix, layout.subset(g, p.subset_id), cfg)["images"]
                 for g, ps in plan.subsets.items() for p in ps)
    assert set(reads.values()) == {1} and len(reads) == len(plan.shards)  # every shard read once
    assert sum(rows_read.values()) == len(records)  # read amplification 1.0
    assert scored == len(records) - sum(1 for s in plan.shards for i in range(len(s.records)) if i % 50 == 0)
