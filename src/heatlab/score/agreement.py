"""Which no-truth metric ranks the explanation methods the way the ground truth does?

:func:`metric_agreement` compares, for each no-truth metric and each ground-truth reference score
(five-band best recall, best precision, localisation AUC, ...), the ranking of the METHODS by their
mean score (in the metric's direction) with their ranking by the reference's mean: Kendall's τ (τ-b,
ties allowed) and Spearman's ρ. +1: the metric orders the methods exactly as the truth does; −1: in
reverse; near 0: unrelated.

Intervals: a seeded percentile bootstrap over the samples (the same resampled samples for every
method and for metric and reference, since every method scored the same samples) and, with
:data:`~heatlab.score.intervals.MIN_RESAMPLED_BRANCHES` or more branches, over the branches too
(the crossed scheme of :func:`heatlab.score.intervals.count_weights`); each resample recomputes
every method's mean and both rankings. ``random_last``: whether the control method (``Random``,
seeded random heatmaps) has the worst mean of the metric, strictly (None without one).

Input tables are long: ``scores`` (branch, method, metric, sample, value) as ``tables/no_truth.parquet``
holds them, ``truth`` (branch, method, reference, sample, value), every reference higher-is-better.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from heatlab.errors import HeatlabError
from heatlab.score.intervals import BOOTSTRAP_RESAMPLES, LEVEL, MIN_RESAMPLED_BRANCHES, count_weights

CONTROL = "Random"
COLUMNS = ["metric", "reference", "tau", "tau_low", "tau_high", "rho", "rho_low", "rho_high", "random_last",
           "n_methods", "branches", "samples", "interval"]
SCORE_COLUMNS = ("branch", "method", "metric", "sample", "value")
TRUTH_COLUMNS = ("branch", "method", "reference", "sample", "value")


def metric_entry(name: str) -> dict:
    """``{"higher_is_better", "family", "source"}`` of a no-truth metric: its entry in the metric
    registry, else its ``MetricInfo`` in the family modules; {} when neither knows it."""
    from heatlab.score import axiomatic, complexity, faithfulness, randomisation, robustness
    from heatlab.score.metrics import metric_registry

    registry = metric_registry()
    if name in registry:
        m = registry[name]
        return {"higher_is_better": m.higher_is_better, "family": m.family, "source": m.source}
    for info in (*faithfulness.FAITHFULNESS, *randomisation.RANDOMISATION, *robustness.ROBUSTNESS,
                 *complexity.COMPLEXITY, *axiomatic.AXIOMATIC):
        if info.name == name:
            return {"higher_is_better": info.higher_is_better, "family": info.family, "source": info.source}
    return {}


def kendall_tau(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's τ-b of each row pair of ``a``, ``b`` (R×M, or M); NaN where a row is constant."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    i, j = np.triu_indices(a.shape[1], 1)
    da, db = np.sign(a[:, i] - a[:, j]), np.sign(b[:, i] - b[:, j])
    den = np.sqrt((da != 0).sum(1) * (db != 0).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (da * db).sum(1) / np.where(den > 0, den, 1), np.nan)


def spearman_rho(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's ρ (Pearson of average ranks) of each row pair of ``a``, ``b`` (R×M); NaN where constant."""
    ra = stats.rankdata(np.atleast_2d(a), axis=1)
    rb = stats.rankdata(np.atleast_2d(b), axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1), np.nan)


def _cube(frame: pd.DataFrame, methods: list, branches: list, samples: list) -> np.ndarray:
    """methods × branches × samples array of ``value`` (NaN where absent)."""
    wide = frame.set_index(["method", "branch", "sample"])["value"]
    if wide.index.duplicated().any():
        raise HeatlabError("A table has two values for one (method, branch, sample); pass one value per sample.")
    full = pd.MultiIndex.from_product([methods, branches, samples], names=["method", "branch", "sample"])
    return wide.reindex(full).to_numpy(np.float64).reshape(len(methods), len(branches), len(samples))


def _check(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise HeatlabError(f"{name} lacks column(s) {', '.join(missing)}; pass a long table with {', '.join(columns)}.")


def agreement_pair(s: np.ndarray, t: np.ndarray, *, level: float = LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = 0) -> dict:
    """τ and ρ (with intervals) between the method means of ``s`` and ``t`` (methods × branches × samples,
    both oriented so that higher is better, no NaN) and the bootstrap kind."""
    m, n_b, n_s = s.shape
    crossed = n_b >= MIN_RESAMPLED_BRANCHES
    out = {"tau": float(kendall_tau(s.mean((1, 2)), t.mean((1, 2)))[0]),
           "rho": float(spearman_rho(s.mean((1, 2)), t.mean((1, 2)))[0]),
           "interval": "bootstrap over branches and samples" if crossed else "bootstrap over samples"}
    taus, rhos = [], []
    for rows, cols in count_weights(n_b, n_s, resample_rows=crossed, resamples=resamples, seed=seed,
                                    budget=max(1, 4_000_000 // max(1, m))):
        rows = np.ones((len(cols), n_b)) if rows is None else rows
        total = rows.sum(1, keepdims=True) * cols.sum(1, keepdims=True)
        ms = np.einsum("rb,mbn,rn->rm", rows, s, cols) / total
        mt = np.einsum("rb,mbn,rn->rm", rows, t, cols) / total
        taus.append(kendall_tau(ms, mt))
        rhos.append(spearman_rho(ms, mt))
    q = [0.5 - level / 2, 0.5 + level / 2]
    for name, boot in (("tau", np.concatenate(taus)), ("rho", np.concatenate(rhos))):
        ok = boot[~np.isnan(boot)]
        lo, hi = np.quantile(ok, q) if len(ok) else (math.nan, math.nan)
        out[f"{name}_low"], out[f"{name}_high"] = float(lo), float(hi)
    return out


def metric_agreement(scores: pd.DataFrame, truth: pd.DataFrame, *,
                     direction: Callable[[str], bool | None] | Mapping[str, bool | None] | None = None,
                     control: str = CONTROL, level: float = LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = 0) -> pd.DataFrame:
    """One row per (no-truth metric, reference): columns :data:`COLUMNS` (see the module docstring).

    direction: each metric's ``higher_is_better`` (a mapping or a function of the name; default
    :func:`metric_entry`); a metric with no direction (None) ranks nothing and is left out.
    Compared are the methods, branches and samples both tables have; a sample with a NaN or an
    infinite value for any method or branch (in the metric or the reference) is left out. Fewer than 2 methods or no
    sample left: NaN τ and ρ.
    """
    _check(scores, SCORE_COLUMNS, "scores")
    _check(truth, TRUTH_COLUMNS, "truth")
    look = direction if callable(direction) else (
        (lambda n: metric_entry(n).get("higher_is_better")) if direction is None else direction.get)
    rows = []
    for metric, s_frame in scores.groupby("metric", sort=False):
        up = look(metric)
        if up is None:
            continue
        for reference, t_frame in truth.groupby("reference", sort=False):
            methods = [m for m in dict.fromkeys(s_frame["method"]) if m in set(t_frame["method"])]
            branches = [b for b in dict.fromkeys(s_frame["branch"]) if b in set(t_frame["branch"])]
            samples = sorted(set(s_frame["sample"]) & set(t_frame["sample"]))
            s = _cube(s_frame, methods, branches, samples) * (1.0 if up else -1.0)
            t = _cube(t_frame, methods, branches, samples)
            keep = np.isfinite(s).all((0, 1)) & np.isfinite(t).all((0, 1))
            s, t = s[:, :, keep], t[:, :, keep]
            row = {"metric": metric, "reference": reference, "n_methods": len(methods), "branches": len(branches),
                   "samples": int(keep.sum())}
            if len(methods) >= 2 and s.shape[2]:
                row.update(agreement_pair(s, t, level=level, resamples=resamples, seed=seed))
                means = s.mean((1, 2))
                if control in methods:
                    k = methods.index(control)
                    row["random_last"] = bool((np.delete(means, k) > means[k]).all())
            rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["random_last"] = out["random_last"].astype("boolean")
    return out
