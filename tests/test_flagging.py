"""Flag policies and in-group ranks on hand-computed cases."""

import numpy as np
import pytest

from pipeline.job.flagging import (
    FlagRule,
    flag,
    rank_in_group,
    reference_threshold,
    robust_z,
)


def test_rank_and_percentile_hand_case():
    rank, pct = rank_in_group(np.array([0.2, 0.9, 0.5, 0.9]))
    assert rank.tolist() == [4, 1, 3, 1]
    assert pct.tolist() == [25.0, 100.0, 50.0, 100.0]


def test_top_fraction_flags_at_least_one_and_rounds_up():
    scores = np.array([0.1, 0.4, 0.3, 0.9, 0.2])
    assert flag(scores, "top_fraction", 0.01).tolist() == [False, False, False, True, False]
    assert flag(scores, "top_fraction", 0.3).tolist() == [False, True, False, True, False]  # ceil(1.5) = 2


def test_robust_z_hand_case():
    scores = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    # median 3, |dev| = 2,1,0,1,97 -> MAD 1; z = 0.6745 * dev
    assert np.allclose(robust_z(scores), 0.6745 * np.array([-2, -1, 0, 1, 97]))
    assert flag(scores, "robust_z", 3.5).tolist() == [False, False, False, False, True]


def test_robust_z_with_zero_mad_and_constant_group():
    scores = np.array([1.0, 1.0, 1.0, 1.0, 5.0])  # MAD = 0: mean absolute deviation 0.8 stands in
    assert np.allclose(robust_z(scores), np.array([0, 0, 0, 0, 4]) / (1.253314 * 0.8))
    assert not flag(np.ones(4), "robust_z", 3.5).any()


def test_threshold_and_bad_policy():
    assert flag(np.array([0.1, 0.5, 0.7]), "threshold", 0.5).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="unknown flag policy"):
        flag(np.ones(3), "magic", 1.0)
    with pytest.raises(ValueError, match="top_fraction"):
        flag(np.ones(3), "top_fraction", 0.0)


def test_reference_fpr_flags_above_the_references_own_quantile():
    references = np.arange(1.0, 21.0)  # 20 good parts' leave-one-out scores
    scores = np.array([5.0, 19.0, 19.5, 20.0, 21.0])
    assert reference_threshold(references, 0.1) == 19.0  # 1 of 20 references above it: 5% <= 10%
    assert flag(scores, "reference_fpr", 0.1, references).tolist() == [False, False, True, True, True]
    assert flag(scores, "reference_fpr", 0.0, references).tolist() == [False, False, False, False, True]
    bad_night = np.concatenate([np.full(25, 3.0), np.full(25, 30.0)])  # half the parts defective
    assert flag(bad_night, "reference_fpr", 0.05, references).sum() == 25
    assert flag(bad_night, "robust_z", 3.5).sum() == 0  # the group-relative rule cannot see it
    with pytest.raises(ValueError, match="needs the references' scores"):
        flag(scores, "reference_fpr", 0.05)
    assert FlagRule("reference_fpr", 0.05).label == "reference_fpr=0.05"


@pytest.mark.parametrize("policy, value, strict", [("top_fraction", 0.3, False), ("robust_z", 1.0, True),
                                                   ("threshold", 0.45, False), ("reference_fpr", 0.2, True)])
def test_the_flag_line_is_where_each_policy_flags(policy, value, strict):
    """group_nights.flag_line: the flags are exactly the scores past the line the rule reports."""
    scores = np.random.default_rng(0).normal(0.4, 0.1, 50)
    references = np.random.default_rng(1).normal(0.4, 0.1, 20)
    rule = FlagRule(policy, value)
    line = rule.line(scores, references)
    flags = rule.apply(scores, references)
    assert 0 < flags.sum() < len(scores)
    assert flags.tolist() == ((scores > line) if strict else (scores >= line)).tolist()
    assert FlagRule("robust_z", 3.5).line(np.ones(4)) is None  # no spread: nothing is ever flagged
