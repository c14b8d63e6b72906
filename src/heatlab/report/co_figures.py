"""Figures and the report section of Augmentative eXplanation (papers 000/001, Fig. 2/3, Table 2).

Drawn from ``tables/co.parquet`` and ``tables/co_gap.parquet`` (written by :mod:`heatlab.run.ax`):

- :func:`co_boxplot_figure`: per method, boxes of the CO scores of correctly (blue) and wrongly
  (orange) predicted samples, every sample as a dot on top; rows raw logits / softmax; one
  figure per AX variant (``x + h``, ``x * h``). Each method's label carries its AUROC.
- :func:`co_histogram_figure`: per method (rows) and variant (columns), the two groups'
  histograms, each normalised to unit area so a small wrong group stays visible.
- :func:`accuracy_figure`: accuracy before AX (dashed line) and after ``x + h`` / ``x * h`` per method.

Boxplots and histograms take a ``grouping`` (:data:`heatlab.run.ax.GROUPINGS`): correct *before*
AX (conference version) or correct *after* AX with the figure's variant (journal version).

The report section that shows them (with the gap numbers and Table 2) is
:mod:`heatlab.report.sections.ax`.

Figures show one branch model (the report's gallery branch when it was scored, else the first);
the tables cover every branch. Scores are those of the run's AX split (``ax.json``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from heatlab.errors import HeatlabError
from heatlab.report.figures import new_figure, save_figure
from heatlab.run.ax import ERROR_GROUPING, GROUPINGS, grouping_column
from heatlab.run.rundir import RunDir
from heatlab.tables import TABLES

CORRECT_COLOR, WRONG_COLOR = "#0072B2", "#D55E00"
AX_LABELS = {"sum": "x + h", "mult": "x · h"}
OUTPUT_LABELS = {"raw": "raw logits", "softmax": "softmax"}
VARIANTS = ("raw_sum", "softmax_sum", "raw_mult", "softmax_mult")
CO_COLUMNS = ("branch", "method", "split", "shard", "index", "correct_before", "correct_after_sum",
              "correct_after_mult", *(f"co_{v}" for v in VARIANTS))
GAP_COLUMNS = ("branch", "method", "variant", "auroc", "median_correct", "median_wrong", "interval_low",
               "interval_high", "threshold", "flag_precision", "flag_recall", "n_correct", "n_wrong",
               "threshold_split", "note")


def variant_label(variant: str) -> str:
    """``"raw_sum"`` -> ``"raw logits, x + h"``."""
    output, ax = variant.split("_")
    return f"{OUTPUT_LABELS[output]}, {AX_LABELS[ax]}"


# --- loading -----------------------------------------------------------------------------------

def grouping_label(grouping: str, short: bool = False, role: bool = True) -> str:
    """"grouped by correct before AX (conference version, paper 000 v1; the error test)" (without
    "; the error test" when ``role`` is False), or short "before AX (v1)"."""
    g = GROUPINGS.get(grouping)
    if g is None:
        return grouping
    if short:
        return f"{g['when']} ({g['version'].split()[-1]})"
    return f"grouped by correct {g['when']} ({g['version']}" + (f"; {g['role']})" if role else ")")


def load_ax_tables(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``(co, gap, ax.json)`` of a run; HeatlabError if absent.

    ``co`` holds the analysed split's rows in the main space; the comparison method's rows in the
    other space (Table 2's extra line) are in ``info["compare_rows"]`` (maybe empty).
    """
    run = RunDir(run_dir).path
    tables = {}
    for name in ("co", "co_gap"):
        path = RunDir(run).table(name)
        if not path.is_file():
            raise HeatlabError(f"Run '{run}' has no {name}.parquet; run `heatlab ax {run}` first.")
        df = TABLES[name].read(path)
        if df.empty:
            raise HeatlabError(f"Table '{path}' has no rows; run `heatlab ax {run}` again.")
        tables[name] = df.assign(branch=df["branch"].astype(str), method=df["method"].astype(str))
    info = RunDir(run).stage_summary("ax") or {}
    split = str(info.get("split", tables["co"]["split"].iloc[0]))
    co, gap = tables["co"], tables["co_gap"]
    if "space" not in co:  # written before AX had a space: pixels
        co = co.assign(space="pixel")
    if "grouping" not in gap:
        gap = gap.assign(grouping="correct_before")
    space = str(info.get("space", co["space"].iloc[0]))
    co = co[co["split"] == split]
    main = co[co["space"] == space]
    if main.empty:
        raise HeatlabError(f"Table co.parquet has no rows of split '{split}'; run `heatlab ax {run}` again.")
    compare = co[co["space"] != space].reset_index(drop=True)
    return main.reset_index(drop=True), gap, {**info, "split": split, "space": space, "compare_rows": compare}


def ordered(values: pd.Series) -> list[str]:
    return list(dict.fromkeys(values))


def auroc_of(gap: pd.DataFrame, branch: str, method: str, variant: str, grouping: str = "correct_before") -> float:
    row = gap[(gap["branch"] == branch) & (gap["method"] == method) & (gap["variant"] == variant)
              & (gap["grouping"] == grouping)]
    return float(row["auroc"].iloc[0]) if len(row) else math.nan


def _auroc_text(value: float) -> str:
    return "AUROC –" if math.isnan(value) else f"AUROC {value:.2f}"


# --- figures -----------------------------------------------------------------------------------

def co_boxplot_figure(co: pd.DataFrame, gap: pd.DataFrame, out_png: str | os.PathLike, *, branch: str,
                      ax: str = "sum", methods: Sequence[str] | None = None,
                      grouping: str = "correct_before", space: str = "") -> Path:
    """Paper Fig. 2/3 boxplots for AX variant ``ax``: rows raw / softmax, a box pair per method."""
    ok = grouping_column(grouping, ax)
    rows = co[co["branch"] == branch]
    methods = list(methods or ordered(rows["method"]))
    fig = new_figure(max(7.0, 1.05 * len(methods) + 1.5), 7.4)
    axes = fig.subplots(2, 1)
    rng = np.random.default_rng(0)  # jitter of the dots only; fixed so the figure's bytes are stable
    for panel, output in zip(axes, ("raw", "softmax")):
        variant = f"{output}_{ax}"
        for i, method in enumerate(methods):
            m = rows[rows["method"] == method]
            for offset, flag, color in ((-0.19, True, CORRECT_COLOR), (0.19, False, WRONG_COLOR)):
                values = m.loc[m[ok] == flag, f"co_{variant}"].to_numpy()
                if not len(values):
                    continue
                box = panel.boxplot(values, positions=[i + offset], widths=0.32, patch_artist=True,
                                    showfliers=False, medianprops={"color": "black"})
                for patch in box["boxes"]:
                    patch.set(facecolor=color, alpha=0.35, edgecolor=color)
                panel.scatter(i + offset + rng.uniform(-0.09, 0.09, len(values)), values, s=5, color=color,
                              alpha=0.6, linewidths=0, zorder=3)
        panel.axhline(0, color="#888", lw=0.8, ls=":")
        panel.set_xticks(range(len(methods)))
        panel.set_xticklabels([f"{m}\n{_auroc_text(auroc_of(gap, branch, m, variant, grouping))}" for m in methods],
                              fontsize=7.5, rotation=20, ha="right", rotation_mode="anchor")
        panel.set_xlim(-0.6, len(methods) - 0.4)
        panel.set_ylabel(f"CO score ({OUTPUT_LABELS[output]})")
        panel.set_title(f"AX {AX_LABELS[ax]}, {OUTPUT_LABELS[output]}", fontsize=10)
        panel.grid(axis="y", alpha=0.3)
    where = f", {space} space" if space else ""
    fig.suptitle(f"CO scores of correct and wrong predictions ({branch}{where})\n{grouping_label(grouping, role=False)}"
                 + ("" if grouping == ERROR_GROUPING else ", not an error test"),
                 fontsize=10)
    _group_legend(fig, rows, ok, anchor=(0.5, 0.925))  # under the two-line title
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return save_figure(fig, out_png)


def co_histogram_figure(co: pd.DataFrame, gap: pd.DataFrame, out_png: str | os.PathLike, *, branch: str,
                        methods: Sequence[str] | None = None, bins: int = 25,
                        grouping: str = "correct_before") -> Path:
    """Histograms of CO per group: rows methods, columns the four variants, unit area per group."""
    rows = co[co["branch"] == branch]
    methods = list(methods or ordered(rows["method"]))
    fig = new_figure(11.0, 1.75 * len(methods) + 1.0)
    axes = np.atleast_2d(fig.subplots(len(methods), len(VARIANTS), squeeze=False))
    for r, method in enumerate(methods):
        m = rows[rows["method"] == method]
        for c, variant in enumerate(VARIANTS):
            panel = axes[r, c]
            values = m[f"co_{variant}"].to_numpy()
            edges = np.histogram_bin_edges(values, bins=bins)
            for flag, color in ((True, CORRECT_COLOR), (False, WRONG_COLOR)):
                ok = grouping_column(grouping, variant.split("_")[1])
                group = m.loc[m[ok] == flag, f"co_{variant}"].to_numpy()
                if len(group):
                    panel.hist(group, bins=edges, density=True, color=color, alpha=0.5)
            panel.axvline(0, color="#888", lw=0.8, ls=":")
            panel.set_title(f"{_auroc_text(auroc_of(gap, branch, method, variant, grouping))}", fontsize=8)
            panel.tick_params(labelsize=6.5)
            panel.set_yticks([])
            panel.xaxis.set_major_locator(MaxNLocator(nbins=4))
            panel.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
            panel.xaxis.get_offset_text().set_fontsize(6.5)
            if r == 0:
                panel.annotate(variant_label(variant), (0.5, 1.35), xycoords="axes fraction", ha="center",
                               fontsize=9, fontweight="bold")
            if c == 0:
                panel.set_ylabel(method, fontsize=8)
    _group_legend(fig, rows, grouping_column(grouping, "sum"))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / fig.get_figheight()))
    return save_figure(fig, out_png)


def accuracy_figure(co: pd.DataFrame, out_png: str | os.PathLike, *, branch: str,
                    methods: Sequence[str] | None = None, space: str = "") -> Path:
    """Paper Table 2 as bars: accuracy after ``x + h`` and ``x · h`` per method, before AX dashed."""
    acc = accuracy_frame(co[co["branch"] == branch])
    methods = list(methods or acc.index)
    fig = new_figure(max(7.0, 0.85 * len(methods) + 2.0), 4.2)
    panel = fig.subplots()
    x = np.arange(len(methods))
    for offset, col, color, label in ((-0.2, "after_sum", "#009E73", "after AX x + h"),
                                      (0.2, "after_mult", "#CC79A7", "after AX x · h")):
        values = acc.loc[methods, col].to_numpy()
        panel.bar(x + offset, values, width=0.38, color=color, label=label)
        for xi, v in zip(x + offset, values):
            panel.text(xi, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=6.5)
    before = float(acc["before"].iloc[0])
    panel.axhline(before, color="black", ls="--", lw=1, label=f"before AX ({before:.3f})")
    panel.set_xticks(x)
    panel.set_xticklabels(methods, fontsize=7.5, rotation=20, ha="right", rotation_mode="anchor")
    panel.set_ylim(0, 1.08)
    panel.set_ylabel("accuracy")
    fig.suptitle(f"Accuracy before and after AX ({branch}{f', {space} space' if space else ''})", fontsize=10)
    panel.legend(fontsize=7.5, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out_png)


def accuracy_frame(co: pd.DataFrame) -> pd.DataFrame:
    """Index method: accuracy ``before``, ``after_sum``, ``after_mult`` over ``co``'s rows (one branch)."""
    g = co.groupby("method", sort=False)
    return pd.DataFrame({"before": g["correct_before"].mean(), "after_sum": g["correct_after_sum"].mean(),
                         "after_mult": g["correct_after_mult"].mean()}).astype(float)


def _group_legend(fig, rows: pd.DataFrame, column: str = "correct_before", anchor=None) -> None:
    from matplotlib.patches import Patch

    # Counts of one method's rows: with "correct after AX" each method has its own groups.
    rows = rows[rows["method"] == rows["method"].iloc[0]] if len(rows) else rows
    n_ok = int(rows.drop_duplicates(["shard", "index"])[column].sum())
    n_all = len(rows.drop_duplicates(["shard", "index"]))
    labels = (f"correct ({n_ok})", f"wrong ({n_all - n_ok})") if column == "correct_before" else (
        "correct after AX", "wrong after AX")  # the groups differ per method then
    fig.legend(handles=[Patch(color=CORRECT_COLOR, alpha=0.6, label=labels[0]),
                        Patch(color=WRONG_COLOR, alpha=0.6, label=labels[1])],
               loc="upper right" if anchor is None else "upper center", bbox_to_anchor=anchor, fontsize=8,
               frameon=False, ncol=2)


def write_ax_figures(co: pd.DataFrame, gap: pd.DataFrame, fig_dir: str | os.PathLike, *, branch: str,
                     space: str = "") -> dict[str, Path]:
    """Every AX figure of ``branch`` into ``fig_dir``: {name: path} (fixed file names).

    Boxplots ``box_<ax>_<grouping>`` and histograms ``hist_<grouping>`` for both groupings.
    """
    fig_dir = Path(fig_dir)
    out = {}
    for grouping in GROUPINGS:
        tag = "" if grouping == "correct_before" else "_after"
        for ax in ("sum", "mult"):
            out[f"box_{ax}_{grouping}"] = co_boxplot_figure(co, gap, fig_dir / f"ax_co_box_{ax}{tag}.png", branch=branch,
                                                            ax=ax, grouping=grouping, space=space)
        out[f"hist_{grouping}"] = co_histogram_figure(co, gap, fig_dir / f"ax_co_hist{tag}.png", branch=branch,
                                                      grouping=grouping)
    out["accuracy"] = accuracy_figure(co, fig_dir / "ax_accuracy.png", branch=branch, space=space)
    return out
