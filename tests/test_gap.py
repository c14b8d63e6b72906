"""Gap analysis of CO scores on hand-made scores whose answers are known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from heatlab.errors import HeatlabError
from heatlab.score.gap import auroc, gap_analysis


def _split(correct_scores, wrong_scores):
    co = np.array(list(correct_scores) + list(wrong_scores), dtype=float)
    ok = np.array([True] * len(correct_scores) + [False] * len(wrong_scores))
    order = np.random.default_rng(0).permutation(len(co))  # the order of samples must not matter
    return co[order], ok[order]


def test_separated_groups_give_auroc_one_and_the_empty_interval():
    res = gap_analysis(*_split([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]))
    assert res.auroc == 1.0
    assert res.empty_interval == (2.0, 3.0)
    assert (res.median_correct, res.median_wrong) == (4.0, 1.0)
    assert res.threshold == 2.5  # the midpoint of the gap, chosen in-sample
    assert (res.flag_precision, res.flag_recall) == (1.0, 1.0)
    assert (res.n_correct, res.n_wrong, res.threshold_source, res.note) == (3, 3, "in-sample", "")
    row = res.as_row()
    assert (row["interval_low"], row["interval_high"]) == (2.0, 3.0) and "empty_interval" not in row


def test_reversed_groups_give_auroc_zero_and_the_reverse_interval():
    res = gap_analysis(*_split([0.0, 1.0], [5.0, 7.0]))
    assert res.auroc == 0.0
    assert res.empty_interval == (1.0, 5.0)
    # "CO below t" cannot catch errors that score high: the best Youden J is 0 and flags nothing.
    assert math.isnan(res.flag_precision) and res.flag_recall == 0.0


def test_identical_groups_give_auroc_one_half_and_no_interval():
    res = gap_analysis(*_split([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]))
    assert res.auroc == 0.5
    assert res.empty_interval is None
    assert math.isnan(res.as_row()["interval_low"])


def test_auroc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(5)
    pos, neg = rng.integers(0, 6, 40).astype(float), rng.integers(0, 6, 30).astype(float)  # many ties
    slow = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])
    assert auroc(pos, neg) == pytest.approx(slow, abs=1e-12)


def test_threshold_maximises_youden_j_by_hand():
    # Sorted: 1w 2c 3w 4c 4.5w 5c 6c. J at each candidate ("CO < t" flagged), by hand:
    # t=1: 0; 1.5: 1/3; 2.5: 1/3-1/4; 3.5: 2/3-1/4; 4.25: 2/3-2/4; 4.75: 1-2/4 = 0.5 (max); 5.5: 1/4; 6.5: 0.
    res = gap_analysis(*_split([2.0, 4.0, 5.0, 6.0], [1.0, 3.0, 4.5]))
    assert res.threshold == 4.75
    assert res.flag_precision == pytest.approx(3 / 5) and res.flag_recall == 1.0
    assert res.auroc == pytest.approx(9 / 12)  # pairs (c > w): 2>1; 4>1,3; 5>1,3,4.5; 6>1,3,4.5 = 9 of 12


def test_threshold_chosen_on_holdout_and_measured_on_the_analysed_scores():
    hold_co, hold_ok = _split([5.0, 6.0, 7.0, 8.0], [1.0, 2.0, 3.0])  # best t = midpoint 4
    co, ok = _split([3.5, 6.0, 7.0, 9.0], [2.0, 4.5, 1.0])
    res = gap_analysis(torch.tensor(co), torch.tensor(ok), holdout_co=hold_co, holdout_correct=hold_ok)
    assert res.threshold == 4.0 and res.threshold_source == "holdout"
    # flagged (< 4): 3.5 (correct), 2.0 and 1.0 (wrong); 4.5 (wrong) is missed
    assert res.flag_precision == pytest.approx(2 / 3) and res.flag_recall == pytest.approx(2 / 3)
    assert (res.n_correct, res.n_wrong) == (4, 3)


def test_equal_j_picks_the_smallest_threshold():
    # J = 1/2 at t = 1.5 (flags 1w) and at t = 3.5 (flags 1w 2c 3w): the first wins.
    res = gap_analysis(*_split([2.0, 4.0], [1.0, 3.0]))
    assert res.threshold == 1.5


def test_an_empty_group_gives_nan_and_a_note_not_a_crash():
    res = gap_analysis([1.0, 2.0, 3.0], [True, True, True])
    assert math.isnan(res.auroc) and math.isnan(res.median_wrong) and res.median_correct == 2.0
    assert res.empty_interval is None and math.isnan(res.threshold)
    assert math.isnan(res.flag_precision) and math.isnan(res.flag_recall)
    assert res.n_wrong == 0 and "no wrong predictions" in res.note
    res = gap_analysis([2.0, 1.0], [1, 0], holdout_co=[0.5, 0.7], holdout_correct=[0, 0])
    assert math.isnan(res.threshold) and "holdout scores have no correct" in res.note
    assert res.auroc == 1.0  # the analysed split itself still has both groups
    res = gap_analysis([], [])
    assert res.n_correct == res.n_wrong == 0 and math.isnan(res.auroc)


def test_bad_input_raises_one_clear_sentence():
    with pytest.raises(HeatlabError, match="one entry per sample"):
        gap_analysis([1.0, 2.0], [True])
    with pytest.raises(HeatlabError, match="NaN or Inf"):
        gap_analysis([1.0, math.nan], [True, False])
    with pytest.raises(HeatlabError, match="booleans"):
        gap_analysis([1.0, 2.0], [1, 2])
    with pytest.raises(HeatlabError, match="both holdout_co and holdout_correct"):
        gap_analysis([1.0, 2.0], [1, 0], holdout_co=[1.0])
