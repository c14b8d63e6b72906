"""The no-truth tables for the report: reading them, each metric's entry, per-method intervals, figures.

``tables/no_truth.parquet`` (long: branch, method, metric, sample, value) and
``tables/metric_agreement.parquet`` (:mod:`heatlab.run.agreement`). A metric's direction, family and
citation come from :func:`heatlab.score.agreement.metric_entry` (the registry, else the family
module's ``MetricInfo``). Per-method means and intervals are :func:`heatlab.score.intervals.mean_interval`
over the branches (t over branches with 2 or more, else t over samples), the same numbers in the
family sections and the headline.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from heatlab.errors import HeatlabError
from heatlab.report.context import branch_label
from heatlab.report.figures import method_styles, new_figure, save_figure, literal
from heatlab.run.rundir import RunDir
from heatlab.score.agreement import SCORE_COLUMNS, metric_entry
from heatlab.score.intervals import Interval, mean_interval
from heatlab.tables import TABLES

#: The no-truth families in report order.
FAMILIES = ("faithfulness", "randomisation", "robustness", "complexity", "axiomatic")


def load_no_truth(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``tables/no_truth.parquet`` with the metric's family as a column (empty when the run has none)."""
    run = RunDir(run_dir)
    if not run.no_truth_table.is_file():
        return pd.DataFrame(columns=[*SCORE_COLUMNS, "family"])
    df = TABLES["no_truth"].read(run.no_truth_table)
    df["branch"] = [branch_label(b) for b in df["branch"]]
    df["method"] = df["method"].astype(str)
    families = {m: metric_entry(m).get("family", "") for m in df["metric"].unique()}
    return df.assign(family=df["metric"].map(families))


def load_agreement(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``tables/metric_agreement.parquet`` (empty when the run has none)."""
    run = RunDir(run_dir)
    if not run.agreement_table.is_file():
        return pd.DataFrame(columns=TABLES["metric_agreement"].names)
    return TABLES["metric_agreement"].read(run.agreement_table)


def method_intervals(table: pd.DataFrame, metric: str, methods: Sequence[str]) -> dict[str, Interval]:
    """Per method (in ``methods`` order, then any other), the mean of ``metric`` and its interval over
    branches and samples (:func:`mean_interval`); infinite values (a ratio over a zero heatmap) count
    as undefined, like NaN (:func:`non_finite` counts them); methods without a value are left out."""
    rows = table[table["metric"] == metric]
    order = [m for m in methods if m in set(rows["method"])] + [m for m in dict.fromkeys(rows["method"]) if m not in methods]
    out = {}
    for m in order:
        groups = [np.where(np.isfinite(v), v, np.nan) for v in
                  (g["value"].to_numpy(np.float64) for _, g in rows[rows["method"] == m].groupby("branch", sort=False))]
        try:
            out[m] = mean_interval(groups)
        except HeatlabError:  # no value in any branch
            continue
    return out


def non_finite(table: pd.DataFrame, metrics: Sequence[str]) -> dict[str, int]:
    """Per metric of ``metrics`` with any, how many of its values are infinite (left out of the means)."""
    rows = table[table["metric"].isin(list(metrics))]
    counts = rows.assign(inf=np.isinf(rows["value"].to_numpy(np.float64))).groupby("metric", sort=False)["inf"].sum()
    return {m: int(counts[m]) for m in metrics if m in counts and counts[m] > 0}


def family_metrics(table: pd.DataFrame, family: str) -> list[str]:
    """The metrics of ``family`` in ``table``, in table order."""
    return list(dict.fromkeys(table.loc[table["family"] == family, "metric"]))


def intervals_figure(stats: dict[str, dict[str, Interval]], out_png: str | os.PathLike, *, methods: Sequence[str],
                     directions: dict[str, bool | None]) -> Path:
    """One panel per metric: each method's mean as a bar with its interval (black line); the panel's
    title says the direction. ``stats``: metric -> method -> Interval."""
    names = list(stats)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    n_methods = max(len(s) for s in stats.values())
    fig = new_figure(4.2 * cols, 0.6 + max(1.6, 0.28 * n_methods) * rows)
    styles = method_styles(list(methods))
    for k, metric in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        ivs = stats[metric]
        ms = list(ivs)[::-1]
        y = np.arange(len(ms))
        est = [ivs[m].estimate for m in ms]
        ax.barh(y, est, color=[styles.get(m, {}).get("color", "#7F7F7F") for m in ms], alpha=0.75)
        lo = [ivs[m].low if ivs[m].defined else ivs[m].estimate for m in ms]
        hi = [ivs[m].high if ivs[m].defined else ivs[m].estimate for m in ms]
        ax.hlines(y, lo, hi, color="black", linewidth=1.2)
        ax.set_yticks(y, [literal(m) for m in ms], fontsize=8)
        up = directions.get(metric)
        arrow = "higher is better" if up else "lower is better" if up is False else "no direction"
        ax.set_title(f"{literal(metric)} ({arrow})", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.axvline(0, color="#999999", linewidth=0.6)
    fig.tight_layout()
    return save_figure(fig, out_png)


def agreement_figure(table: pd.DataFrame, out_png: str | os.PathLike) -> Path:
    """Kendall's τ with its interval per metric (rows), one marker per reference; 0 and ±1 marked."""
    metrics = list(dict.fromkeys(table["metric"]))[::-1]
    refs = list(dict.fromkeys(table["reference"]))
    fig = new_figure(7.6, 1.2 + 0.32 * len(metrics) * max(1, len(refs)) ** 0.5)
    ax = fig.add_subplot(1, 1, 1)
    styles = method_styles(refs)
    step = 0.7 / max(1, len(refs))
    for j, ref in enumerate(refs):
        rows = table[table["reference"] == ref].set_index("metric")
        y = np.array([i + (j - (len(refs) - 1) / 2) * step for i, m in enumerate(metrics) if m in rows.index])
        sub = rows.loc[[m for m in metrics if m in rows.index]]
        style = styles[ref]
        ax.hlines(y, sub["tau_low"], sub["tau_high"], color=style["color"], linewidth=1.2)
        ax.plot(sub["tau"], y, linestyle="none", marker=style["marker"], color=style["color"], label=literal(ref))
    ax.set_yticks(np.arange(len(metrics)), [literal(m) for m in metrics], fontsize=8)
    for x, ls in ((0, "-"), (-1, ":"), (1, ":")):
        ax.axvline(x, color="#999999", linewidth=0.6, linestyle=ls)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("Kendall's τ with the ground truth's ranking of the methods")
    ax.legend(fontsize=8, title="reference", title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return save_figure(fig, out_png)
