"""Paired differences with a bootstrap that respects the design (cells shared by branches), and their verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from heatlab.errors import HeatlabError
from heatlab.score.intervals import (
    BRANCHES_AND_CELLS, CELLS_ONLY, Interval, difference_verdict, paired_difference,
)


def test_a_constant_difference_has_a_zero_width_interval_at_its_value():
    rng = np.random.default_rng(0)
    base = rng.random((4, 50))
    for b in (1, 2, 4):
        iv = paired_difference(base[:b] + 0.25, base[:b])
        assert (iv.estimate, iv.low, iv.high) == pytest.approx((0.25, 0.25, 0.25), abs=1e-12)
        assert (iv.branches, iv.samples) == (b, 50)
    same = paired_difference(base, base)
    assert (same.low, same.high) == (0.0, 0.0) and difference_verdict(same) == "tied"


def test_the_bootstrap_is_the_mean_of_resampled_cells_drawn_one_resample_at_a_time():
    rng = np.random.default_rng(1)
    t, b = rng.normal(size=(2, 30)), rng.normal(size=(2, 30))
    iv = paired_difference(t, b, resamples=200, seed=5)
    draw = np.random.default_rng(5)  # slow reference with the same draws: cells shared by both branches
    counts = draw.multinomial(30, np.full(30, 1 / 30), size=200)
    d = t - b
    boot = [d[:, np.repeat(np.arange(30), c)].mean() for c in counts]
    assert iv.kind == CELLS_ONLY and iv.estimate == pytest.approx(d.mean())
    assert (iv.low, iv.high) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))


def test_on_a_large_normal_sample_the_bootstrap_approximates_the_t_interval():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, 4000)
    treated = base + rng.normal(0.1, 0.5, 4000)
    iv = paired_difference(treated, base, resamples=4000, seed=0)
    d = treated - base
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    width = hi - lo
    assert abs(iv.low - lo) < 0.05 * width and abs(iv.high - hi) < 0.05 * width


def test_pairing_matters_the_cells_own_spread_cancels():
    rng = np.random.default_rng(3)
    base = rng.normal(0.5, 0.2, (1, 60))  # cells differ a lot from each other ...
    treated = base + 0.02 + rng.normal(0, 0.005, (1, 60))  # ... the filter moves each by a little
    paired = paired_difference(treated, base)
    welch = stats.ttest_ind(treated[0], base[0], equal_var=False).confidence_interval(0.95)
    assert welch.low < 0 < welch.high  # unpaired: the small effect drowns in the cells' spread
    assert 0 < paired.low < 0.02 < paired.high < 0.025
    assert difference_verdict(paired) == "better" and difference_verdict(paired, higher_is_better=False) == "worse"


def test_identical_branches_do_not_shrink_the_interval_but_differing_branches_widen_it():
    rng = np.random.default_rng(4)
    base = rng.random(40)
    treated = base + rng.normal(0.05, 0.1, 40)
    one = paired_difference(treated, base, seed=7)
    for b in (2, 4):  # b copies of the same branch (same cells, same scores) are no more evidence than one
        many = paired_difference(np.tile(treated, (b, 1)), np.tile(base, (b, 1)), seed=7)
        assert (many.estimate, many.low, many.high) == pytest.approx((one.estimate, one.low, one.high))
    # with >= 3 branches the branches are resampled too: branch-to-branch spread widens the interval
    shifts = np.array([[-0.05], [0.0], [0.05]])
    spread = paired_difference(treated + shifts, np.tile(base, (3, 1)), seed=7)
    assert spread.kind == BRANCHES_AND_CELLS and one.kind == CELLS_ONLY
    assert spread.estimate == pytest.approx(one.estimate)
    assert spread.high - spread.low > 1.2 * (one.high - one.low)


def test_nan_cells_are_dropped_as_pairs_and_bad_shapes_are_refused():
    t = np.array([[1.0, np.nan, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0]])
    b = np.zeros((2, 4))
    iv = paired_difference(t, b)
    assert iv.samples == 3 and iv.estimate == pytest.approx(np.mean([1, 3, 4, 1, 3, 5]))
    assert not paired_difference([1.0], [0.0]).defined
    assert math.isnan(paired_difference([np.nan], [0.0]).estimate)
    with pytest.raises(HeatlabError, match="same cells"):
        paired_difference(np.zeros((2, 4)), np.zeros((2, 3)))


def test_verdict_reads_the_interval_in_the_metrics_direction():
    def iv(lo, hi):
        return Interval((lo + hi) / 2, lo, hi, CELLS_ONLY, 1, 10)

    assert difference_verdict(iv(0.1, 0.2)) == "better"
    assert difference_verdict(iv(-0.2, -0.1)) == "worse"
    assert difference_verdict(iv(-0.2, -0.1), higher_is_better=False) == "better"  # lower FPR or MAE
    assert difference_verdict(iv(-0.1, 0.2)) == "tied" and difference_verdict(iv(0.0, 0.2)) == "tied"
    assert difference_verdict(iv(math.nan, math.nan)) == "tied"


def test_curve_band_is_the_per_step_interval_from_one_set_of_draws():
    """Each step's band equals the scalar interval of that step's values (the same seeded draws): mean_interval's
    bootstrap within branches for 1-2 branches, the crossed bootstrap over branches and samples for 3 or more."""
    from heatlab.score.intervals import BRANCHES_AND_SAMPLES, curve_band, mean_interval, paired_difference

    rng = np.random.default_rng(4)
    for branches in (1, 2, 3):
        v = rng.normal(size=(branches, 15, 4))
        v[0, 2, 1], v[-1, 5, 3] = np.inf, np.nan  # two samples with an undefined step: dropped from every step
        band = curve_band(v, resamples=500)
        keep = np.delete(v, [2, 5], axis=1)
        assert band.samples == 13 and band.dropped == 2 and band.branches == branches
        for step in range(4):
            if branches < 3:
                iv = mean_interval(list(keep[:, :, step]), resamples=500)
            else:
                iv = paired_difference(keep[:, :, step], np.zeros_like(keep[:, :, step]), resamples=500)
                assert band.kind == BRANCHES_AND_SAMPLES
            np.testing.assert_allclose([band.estimate[step], band.low[step], band.high[step]],
                                       [iv.estimate, iv.low, iv.high], rtol=1e-12, atol=1e-12)
