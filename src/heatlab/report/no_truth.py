"""The no-truth tables for the report: reading them, each metric's entry, per-method intervals, figures.

``tables/no_truth.parquet`` (long: branch, method, metric, sample, value),
``tables/no_truth_curves.parquet`` (long: branch, method, metric, sample, step, fraction, value; the
deletion and insertion curves) and ``tables/metric_agreement.parquet`` (:mod:`heatlab.run.agreement`).
Every table is read here (the ``load_*`` functions), nowhere else in the report. A metric's direction, family and
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

from markupsafe import Markup

from heatlab.errors import HeatlabError
from heatlab.report.context import branch_label
from heatlab.report.figures import method_styles, new_figure, save_figure, literal
from heatlab.report.templates import render
from heatlab.run.rundir import RunDir
from heatlab.score.agreement import CONTROL, SCORE_COLUMNS, metric_entry
from heatlab.score.intervals import CurveBand, Interval, curve_band, mean_interval
from heatlab.tables import TABLES

#: The no-truth families in report order.
FAMILIES = ("faithfulness", "randomisation", "robustness", "complexity", "axiomatic")
#: A metric's direction (its entry's ``higher_is_better``) as the report says it.
DIRECTIONS = {True: "higher is better", False: "lower is better", None: "no direction"}
#: Columns of ``tables/no_truth_curves.parquet``.
#: The curve metrics, in panel order.
CURVE_METRICS = ("deletion", "insertion")


#: Each metric's direction and citation, as every no-truth table and figure on the page states them.
DEFINITIONS = """\
{% for name, direction, source in sources %}{{ name }} ({{ direction }}{% if source %}; {{ source }}{% endif %})\
{% if not loop.last %}; {% endif %}{% endfor %}"""


def definitions(metrics: Sequence[str]) -> Markup:
    """"name (direction; citation); ..." of ``metrics`` from their entries (:func:`metric_entry`), escaped."""
    entries = {m: metric_entry(m) for m in metrics}
    return render(DEFINITIONS, sources=[(m, DIRECTIONS[e.get("higher_is_better")], e.get("source", ""))
                                        for m, e in entries.items()])


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


def load_no_truth_curves(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``tables/no_truth_curves.parquet`` (empty when the run has none)."""
    run = RunDir(run_dir)
    if not run.no_truth_curves.is_file():
        return pd.DataFrame(columns=TABLES["no_truth_curves"].names)
    df = TABLES["no_truth_curves"].read(run.no_truth_curves)
    df["branch"] = [branch_label(b) for b in df["branch"]]
    df["method"] = df["method"].astype(str)
    return df


def load_agreement(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``tables/metric_agreement.parquet`` (empty when the run has none)."""
    run = RunDir(run_dir)
    if not run.agreement_table.is_file():
        return pd.DataFrame(columns=TABLES["metric_agreement"].names)
    return TABLES["metric_agreement"].read(run.agreement_table)


def method_intervals(table: pd.DataFrame, metric: str, methods: Sequence[str]) -> dict[str, Interval]:
    """Per method (in ``methods`` order, then any other), the mean of ``metric`` and its interval over
    branches and samples (:func:`mean_interval`); infinite values (a ratio over a zero heatmap) count
    as undefined, like NaN (:func:`undefined` counts both); methods without a value are left out."""
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


def undefined(table: pd.DataFrame, metrics: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per metric of ``metrics`` with any undefined value (left out of every mean and figure): how many values it
    has ("values"), how many are NaN ("nan") and how many infinite ("inf")."""
    rows = table[table["metric"].isin(list(metrics))]
    v = rows["value"].to_numpy(np.float64)
    counts = rows.assign(nan=np.isnan(v), inf=np.isinf(v)).groupby("metric", sort=False)[["nan", "inf"]].sum()
    sizes = rows.groupby("metric", sort=False).size()
    return {m: {"values": int(sizes[m]), "nan": int(counts.at[m, "nan"]), "inf": int(counts.at[m, "inf"])}
            for m in metrics if m in counts.index and counts.loc[m].sum() > 0}


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
        ax.set_title(f"{literal(metric)} ({DIRECTIONS[directions.get(metric)]})", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.locator_params(axis="x", nbins=4)  # long tick labels (5.81e-05) would run into each other
        ax.axvline(0, color="#999999", linewidth=0.6)
    fig.tight_layout()
    return save_figure(fig, out_png)


def curve_bands(table: pd.DataFrame, metric: str, methods: Sequence[str]) -> dict[str, tuple[np.ndarray, CurveBand]]:
    """Per method (``methods`` order, then any other) of ``metric``'s curves: the fractions (S) and the mean curve
    with its band (:func:`curve_band` over branches × samples × steps; a sample a branch lacks counts as undefined)."""
    rows = table[table["metric"] == metric]
    order = [m for m in methods if m in set(rows["method"])] + [m for m in dict.fromkeys(rows["method"]) if m not in methods]
    out = {}
    for m in order:
        r = rows[rows["method"] == m]
        grid = r.set_index(["branch", "sample", "step"])["value"].unstack("step").sort_index(axis=1)
        branches, samples = list(dict.fromkeys(r["branch"])), sorted(set(r["sample"]))
        grid = grid.reindex(pd.MultiIndex.from_product([branches, samples], names=["branch", "sample"]))
        values = grid.to_numpy(np.float64).reshape(len(branches), len(samples), grid.shape[1])
        fraction = r.groupby("step")["fraction"].first().reindex(grid.columns).to_numpy(np.float64)
        out[m] = (fraction, curve_band(values))
    return out


def curves_figure(bands: dict[str, dict[str, tuple[np.ndarray, CurveBand]]], out_png: str | os.PathLike, *,
                  methods: Sequence[str], directions: dict[str, bool | None]) -> Path:
    """One panel per metric (``bands``: metric -> method -> (fractions, band)): each method's mean curve over the
    fraction of pixels or features removed/inserted with its band; the control (:data:`CONTROL`, Random) dashed,
    as the floor."""
    names = list(bands)
    fig = new_figure(5.2 * len(names) + 1.8, 3.4)
    styles = method_styles(list(methods))
    for k, metric in enumerate(names):
        ax = fig.add_subplot(1, len(names), k + 1)
        for m, (x, band) in bands[metric].items():
            color = "#555555" if m == CONTROL else styles.get(m, {}).get("color", "#7F7F7F")
            ax.plot(x, band.estimate, color=color, linestyle="--" if m == CONTROL else "-", linewidth=1.4,
                    label=literal(m))
            if np.isfinite(band.low).all():
                ax.fill_between(x, band.low, band.high, color=color, alpha=0.18, linewidth=0)
        ax.set_title(f"{literal(metric)} ({DIRECTIONS[directions.get(metric)]})", fontsize=9)
        ax.set_xlabel(f"fraction {'removed' if metric == 'deletion' else 'inserted' if metric == 'insertion' else ''}"
                      .strip(), fontsize=8)
        ax.set_ylabel("target score (mean)", fontsize=8)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=8)
    if names:
        fig.axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
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
