"""Meta-evaluation: agreement of no-truth metrics' method rankings with the ground truth's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from heatlab.score.agreement import COLUMNS, metric_agreement, metric_entry
from heatlab.score.intervals import count_weights

METHODS = ["A", "B", "C", "D", "Random"]


def _truth(n_branches=1, n=40, seed=0, gap=1.0, noise=0.3):
    """Reference values: methods A > B > C > D > Random by ``gap`` each, plus Gaussian noise per sample."""
    rng = np.random.default_rng(seed)
    rows = []
    means = {"A": 4.0, "B": 3.0, "C": 2.0, "D": 1.0, "Random": 0.0}
    for b in range(n_branches):
        for m in METHODS:
            v = gap * means[m] + noise * rng.standard_normal(n)
            rows.append(pd.DataFrame({"branch": f"branch-{b:02d}", "method": m, "sample": np.arange(n), "value": v}))
    return pd.concat(rows, ignore_index=True).assign(reference="recall_best")


def _as_metric(truth, name, transform=lambda v: v):
    return truth.drop(columns="reference").assign(metric=name, value=transform(truth["value"].to_numpy()))


@pytest.mark.parametrize("branches", [1, 3])
def test_a_metric_equal_to_the_reference_agrees_perfectly_and_its_mirror_disagrees(branches):
    truth = _truth(branches)
    scores = pd.concat([_as_metric(truth, "same"), _as_metric(truth, "mirror", np.negative),
                        _as_metric(truth, "mirror_low", np.negative)])
    out = metric_agreement(scores, truth, direction={"same": True, "mirror": True, "mirror_low": False}, resamples=300)
    assert list(out.columns) == COLUMNS
    got = out.set_index("metric")
    assert got.loc["same", ["tau", "rho", "tau_low", "tau_high", "rho_low", "rho_high"]].tolist() == [1.0] * 6
    assert got.loc["mirror", ["tau", "rho", "tau_low", "tau_high"]].tolist() == [-1.0] * 4
    # lower is better: a metric that falls as the reference rises ranks the methods the same way
    assert got.loc["mirror_low", ["tau", "rho", "tau_low", "tau_high"]].tolist() == [1.0] * 4
    assert got.loc["same", "random_last"] and not got.loc["mirror", "random_last"] and got.loc["mirror_low", "random_last"]
    assert (got["n_methods"] == 5).all() and (got["samples"] == 40).all() and (got["branches"] == branches).all()
    want = "bootstrap over branches and samples" if branches >= 3 else "bootstrap over samples"
    assert (got["interval"] == want).all()


def test_a_metric_independent_of_the_reference_has_an_interval_covering_zero():
    truth = _truth(1, n=60)
    rng = np.random.default_rng(7)
    # no real difference between the methods: its ranking is noise
    scores = _as_metric(truth, "noise", lambda v: rng.standard_normal(len(v)))
    row = metric_agreement(scores, truth, direction={"noise": True}, resamples=500).iloc[0]
    assert row["tau_low"] < 0 < row["tau_high"] and row["rho_low"] < 0 < row["rho_high"]


def test_random_last_on_hand_made_tables():
    truth = pd.DataFrame({"branch": "b", "method": ["A", "B", "Random"] * 2, "sample": [0, 0, 0, 1, 1, 1],
                          "value": [0.9, 0.5, 0.1, 0.8, 0.6, 0.2], "reference": "auc/feature"})
    last = truth.drop(columns="reference").assign(metric="m", value=[3.0, 2.0, 1.0, 3.0, 2.0, 1.0])
    middle = last.assign(metric="k", value=[3.0, 0.0, 1.0, 3.0, 0.0, 1.0])
    tied = last.assign(metric="t", value=[3.0, 1.0, 1.0, 3.0, 1.0, 1.0])
    lower = last.assign(metric="low", value=[1.0, 2.0, 3.0, 1.0, 2.0, 3.0])  # Random worst when lower is better
    no_control = last[last["method"] != "Random"].assign(metric="nc")
    out = metric_agreement(pd.concat([last, middle, tied, lower, no_control]), truth, resamples=50,
                           direction={"m": True, "k": True, "t": True, "low": False, "nc": True}).set_index("metric")
    assert out.loc[["m", "k", "t", "low"], "random_last"].tolist() == [True, False, False, True]
    assert pd.isna(out.loc["nc", "random_last"])  # no control method: nothing to say
    assert out.loc["nc", "n_methods"] == 2 and out.loc["m", "n_methods"] == 3


def test_direction_none_is_left_out_and_samples_with_nan_are_dropped():
    truth = _truth(1, n=10)
    scores = pd.concat([_as_metric(truth, "x"), _as_metric(truth, "neither")])
    scores.loc[(scores["metric"] == "x") & (scores["sample"] == 3) & (scores["method"] == "B"), "value"] = np.nan
    out = metric_agreement(scores, truth, direction={"x": True, "neither": None}, resamples=20)
    assert out["metric"].tolist() == ["x"] and out["samples"].tolist() == [9]


def test_directions_come_from_the_metric_entries():
    assert metric_entry("pixel_flipping")["higher_is_better"] is False
    assert metric_entry("sparseness") == {"higher_is_better": True, "family": "complexity", "source": "Chalasani et al. 2020"}
    assert metric_entry("no_such_metric") == {}


def _slow(scores, truth, up, resamples, seed, level=0.95):
    """Loop reference: the same count draws turned into explicit resampled rows, means by pandas, scipy τ/ρ."""
    branches = sorted(truth["branch"].unique())
    samples = sorted(truth["sample"].unique())
    crossed = len(branches) >= 3
    taus, rhos = [], []
    for rows, cols in count_weights(len(branches), len(samples), resample_rows=crossed, resamples=resamples,
                                    seed=seed, budget=max(1, 4_000_000 // 5)):
        for r in range(len(cols)):
            bs = np.repeat(branches, rows[r]) if rows is not None else np.array(branches)
            ss = np.repeat(samples, cols[r])
            pick = pd.DataFrame([(b, s) for b in bs for s in ss], columns=["branch", "sample"])
            ms = pick.merge(scores, on=["branch", "sample"]).groupby("method")["value"].mean() * (1 if up else -1)
            mt = pick.merge(truth, on=["branch", "sample"]).groupby("method")["value"].mean()
            taus.append(stats.kendalltau(ms.to_numpy(), mt[ms.index].to_numpy()).statistic)
            rhos.append(stats.spearmanr(ms.to_numpy(), mt[ms.index].to_numpy()).statistic)
    q = [0.5 - level / 2, 0.5 + level / 2]
    return np.quantile(taus, q), np.quantile(rhos, q)


@pytest.mark.parametrize("branches", [1, 3])
def test_the_vectorised_bootstrap_equals_a_loop_over_explicit_resamples(branches):
    truth = _truth(branches, n=6, seed=2, gap=0.2, noise=0.5)
    rng = np.random.default_rng(3)
    scores = _as_metric(truth, "m", lambda v: v + rng.standard_normal(len(v)))
    row = metric_agreement(scores, truth, direction={"m": False}, resamples=60, seed=5).iloc[0]
    (tl, th), (rl, rh) = _slow(scores.drop(columns="metric"), truth.drop(columns="reference"), False, 60, 5)
    assert row[["tau_low", "tau_high", "rho_low", "rho_high"]].tolist() == pytest.approx([tl, th, rl, rh], abs=1e-12)
    means = scores.groupby("method")["value"].mean()
    ref = truth.groupby("method")["value"].mean()
    assert row["tau"] == pytest.approx(stats.kendalltau(-means, ref[means.index]).statistic)
    assert row["rho"] == pytest.approx(stats.spearmanr(-means, ref[means.index]).statistic)
