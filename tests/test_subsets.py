"""Seeded subsets (paper Table 7); heat maps and reports are tested in test_report.py."""

import numpy as np
import pytest

from pipeline.engine.subsets import split_by_max_size, split_subsets


def test_split_subsets_partitions_seeded_and_balanced():
    parts = split_subsets(83, 3, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(83))
    assert sorted(len(p) for p in parts) == [27, 28, 28]
    assert all((np.diff(p) > 0).all() for p in parts)
    again = split_subsets(83, 3, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = split_subsets(83, 3, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_split_refuses_subsets_of_one():
    with pytest.raises(ValueError, match="at most 2 subsets"):
        split_subsets(5, 3, seed=0)
    with pytest.raises(ValueError, match="at least 2 images"):
        split_subsets(1, 1, seed=0)


def test_split_by_max_size():
    parts = split_by_max_size(250, 100, seed=0)
    assert len(parts) == 3 and max(len(p) for p in parts) <= 100
    assert len(split_by_max_size(100, 100, seed=0)) == 1


@pytest.mark.parametrize("max_size", [2, 3, 4, 7])
def test_split_by_max_size_never_leaves_a_subset_of_one(max_size):
    """scoring.max_subset_size 2 with a group of 3 used to fail the whole group ("cannot split 3 images")."""
    for n in range(2, 40):
        parts = split_by_max_size(n, max_size, seed=n)
        assert sorted(np.concatenate(parts).tolist()) == list(range(n))  # every image once
        assert min(len(p) for p in parts) >= 2
        # at most max_size, except the one subset of 3 that an odd group needs when max_size is 2
        assert max(len(p) for p in parts) <= (3 if max_size == 2 and n % 2 else max_size)
        assert len(parts) == -(-n // max_size) or max_size == 2
