"""Training curves of a run: loss per iteration, validation-shard accuracy, final accuracies."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from heatlab.errors import HeatlabError
from heatlab.files import atomic_path, ensure_dir
from heatlab.report.figures import hold_flat_axes
from heatlab.run.rundir import RunDir
from heatlab.run.training import BASE, branch_info, list_branches, stage_info, stage_name
from heatlab.tables import TABLES

BASE_COLOR = "#444444"


def _smooth(values: np.ndarray) -> np.ndarray:
    """Centred moving average over ~1/25 of the curve (at least 1, at most 200 points)."""
    window = int(min(200, max(1, len(values) // 25)))
    return pd.Series(values).rolling(window, center=True, min_periods=1).mean().to_numpy()


def _read_tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    steps, vals = RunDir(run_dir).table("training"), RunDir(run_dir).table("validation")
    if not steps.is_file() or not vals.is_file():
        raise HeatlabError(f"'{run_dir}' has no training tables; train a model there first (heatlab train --out {run_dir}).")
    return TABLES["training"].read(steps), TABLES["validation"].read(vals)


def training_figure(run_dir: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Write a PNG: loss against iteration (base, then each branch continuing from it; faint raw
    values and a smoothed line), validation-shard accuracy per branch with the target line, and
    full validation/test accuracy per stage. Returns the PNG path."""
    run_dir = Path(run_dir)
    steps, vals = _read_tables(run_dir)
    branches = list_branches(run_dir)
    colors = {b: f"C{b % 10}" for b in branches}
    run = RunDir(run_dir)
    target = (run.config().get("training") or {}).get("target_acc") if run.has_config() else None

    fig = Figure(figsize=(11, 6.2), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1], left=0.07, right=0.98, top=0.92, bottom=0.08, hspace=0.35, wspace=0.3)
    ax_loss = fig.add_subplot(grid[0, :])
    ax_val = fig.add_subplot(grid[1, :2])
    ax_bar = fig.add_subplot(grid[1, 2])

    base = steps[steps["phase"] == BASE].sort_values("iteration")
    offset = int(base["iteration"].max()) if len(base) else 0
    curves = [(BASE, base, 0, BASE_COLOR)]
    for b in branches:
        part = steps[steps["phase"] == stage_name(b)].sort_values("iteration")
        curves.append((stage_name(b), part, offset, colors[b]))
    for label, part, shift, color in curves:
        if not len(part):
            continue
        x, y = part["iteration"].to_numpy() + shift, part["loss"].to_numpy()
        ax_loss.plot(x, y, color=color, alpha=0.2, lw=0.7)
        # a single iteration is a point, which a line without a marker would not draw
        ax_loss.plot(x, _smooth(y), color=color, lw=1.8, label=label, marker="o" if len(x) == 1 else None)
    if offset:
        ax_loss.axvline(offset + 0.5, color="#999999", ls=":", lw=1)
    ax_loss.set_xlabel("iteration (branches continue from the end of the base model)")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_title("Training loss: continuous mode (base), then regular-evaluation branches", fontsize=10)
    ax_loss.legend(fontsize=8, ncol=min(6, len(curves)), loc="upper right", frameon=False)
    ax_loss.grid(alpha=0.3)

    for b in branches:
        part = vals[vals["branch"] == b].sort_values("iteration")
        if not len(part):
            continue
        reason = branch_info(run_dir, b).get("stop_reason")
        x, acc, saved = part["iteration"].to_numpy(), part["accuracy"].to_numpy(), part["saved"].to_numpy(bool)
        ax_val.plot(x, acc, color=colors[b], lw=1, alpha=0.7, label=f"{stage_name(b)} ({reason})")
        ax_val.scatter(x[saved], acc[saved], color=colors[b], s=22, zorder=3)
        ax_val.scatter(x[~saved], acc[~saved], facecolors="none", edgecolors=colors[b], s=14, zorder=3)
        if len(x) == 1:  # one validation: label the point, its axis is held around it (hold_flat_axes)
            ax_val.annotate(f"{acc[0]:.3f}", (x[0], acc[0]), xytext=(6, 4), textcoords="offset points", fontsize=7,
                            color=colors[b])
    if target is not None and target <= 1:
        ax_val.axhline(target, color="#c0392b", ls="--", lw=1, label=f"target {target:g}")
    ax_val.set_xlabel("branch iteration")
    ax_val.set_ylabel("accuracy on one validation shard")
    ax_val.set_title("Regular evaluation (filled = saved as branch model)", fontsize=10)
    ax_val.set_ylim(-0.02, 1.02)
    for ax in (ax_loss, ax_val):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        hold_flat_axes(ax, integer="x")
    ax_val.grid(alpha=0.3)
    if ax_val.get_legend_handles_labels()[0]:
        ax_val.legend(fontsize=8, loc="lower right", frameon=False)

    stages = ([BASE] if stage_info(run_dir, BASE) is not None else []) + branches
    infos = [branch_info(run_dir, s) for s in stages]
    pos = np.arange(len(stages))
    for i, (key, color, label) in enumerate((("val_acc", "#4c72b0", "val"), ("test_acc", "#dd8452", "test"))):
        heights = [float(info.get(key) or 0.0) for info in infos]
        bars = ax_bar.bar(pos + (i - 0.5) * 0.38, heights, width=0.38, color=color, label=label)
        ax_bar.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    ax_bar.set_xticks(pos, [stage_name(s) for s in stages], fontsize=8,
                      rotation=30 if len(stages) > 3 else 0)
    ax_bar.set_ylim(0, 1.15)
    ax_bar.set_ylabel("accuracy (whole split)")
    ax_bar.set_title("Final accuracy", fontsize=10)
    ax_bar.legend(fontsize=8, loc="upper left", ncol=2, frameon=False)

    fig.suptitle(f"Training of {run_dir.name}", fontsize=11)
    out = Path(out_png)
    ensure_dir(out.parent)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return out
