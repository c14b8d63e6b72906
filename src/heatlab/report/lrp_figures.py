"""Paper 004's figures from a stored LRP study: Mean Power per layer against iteration (Fig. 2) and
the grid of filtered LRP heatmaps (Fig. 3). Drawn from ``tables/lrp_study.parquet`` and
``lrp_study/heatmaps.safetensors`` (written by :mod:`heatlab.run.lrp_study`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors import safe_open

from heatlab.explain.postprocess import channel_adjust
from heatlab.report.figures import bare, hold_flat_axes, new_figure, save_figure


def mp_figure(table: pd.DataFrame, out_png: str | os.PathLike, *, model: str = "") -> Path:
    """MP (mean ± std over the evaluation subset) per layer against iteration, with accuracy on a twin axis.

    Panels are titled with the original's layer names and, where the table has ``recorded_at``,
    where heatlab recorded them (``convb_k``: the relevance entering block k; ``convb_1``: the input heatmap).
    """
    layers = list(dict.fromkeys(table["layer"]))
    fig = new_figure(10.0, 2.6 * ((len(layers) + 1) // 2) + 0.8)
    for i, layer in enumerate(layers):
        ax = fig.add_subplot((len(layers) + 1) // 2, 2, i + 1)
        rows = table[table["layer"] == layer].sort_values("iteration")
        it, mean, std = rows["iteration"].to_numpy(), rows["mp_mean"].to_numpy(), rows["mp_std"].to_numpy()
        ax.plot(it, mean, color="#0072B2", marker="o", markersize=3, lw=1.2)
        ax.fill_between(it, mean - std, mean + std, color="#0072B2", alpha=0.2, lw=0)
        ax.set_title(f"({chr(65 + i)}) {layer}{_where(rows)}", fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel("Mean Power", fontsize=8, color="#0072B2")
        ax.tick_params(labelsize=7)
        twin = ax.twinx()
        twin.plot(it, rows["accuracy"].to_numpy(), color="#D55E00", lw=1, ls="--")
        twin.set_ylim(0, 1.02)
        twin.set_ylabel("accuracy", fontsize=8, color="#D55E00")
        twin.tick_params(labelsize=7)
        hold_flat_axes(ax, integer="x")
    fig.suptitle(f"Mean Power of the relevance per layer during training{f' ({model})' if model else ''}: "
                 "mean ± std over the evaluation samples; dashed: accuracy"
                 + ("\nlayers named as paper 004's code: convb_k = relevance entering block k" if "recorded_at" in table else ""),
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return save_figure(fig, out_png)


def _where(rows: pd.DataFrame) -> str:
    """": input heatmap" or ": block1 output" for a panel recorded where ``recorded_at`` says, else ""."""
    if "recorded_at" not in rows or rows.empty:
        return ""
    at = str(rows["recorded_at"].iloc[0])
    return ": input heatmap" if at == "input" else f": {at} output"


def heatmap_grid_figure(heatmaps_path: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Rows: the stored samples; columns: the input, then the channel-adjusted LRP heatmap per filter."""
    with safe_open(str(heatmaps_path), framework="pt") as f:
        filters = json.loads((f.metadata() or {}).get("filters", "[]"))
        maps, inputs = f.get_tensor("heatmaps").float(), f.get_tensor("inputs").float()
        labels, preds = f.get_tensor("labels"), f.get_tensor("predictions")
    n_f, n_s = maps.shape[0], maps.shape[1]
    fig = new_figure(max(3.6, 1.25 * (n_f + 1) + 0.4), 1.3 * n_s + 1.0)
    axes = np.atleast_2d(fig.subplots(n_s, n_f + 1, squeeze=False))
    for s in range(n_s):
        img = inputs[s].permute(1, 2, 0).numpy()
        axes[s, 0].imshow(img.squeeze(-1) if img.shape[-1] == 1 else img.clip(0, 1), cmap="gray")
        axes[s, 0].set_ylabel(f"label {int(labels[s])}\npred {int(preds[s])}", fontsize=7)
        for j in range(n_f):
            h = channel_adjust(maps[j, s : s + 1])[0].numpy()
            axes[s, j + 1].imshow(h, cmap="bwr", vmin=-1, vmax=1)
            if s == 0:
                axes[s, j + 1].set_title(filters[j] if j < len(filters) else str(j), fontsize=8)
        if s == 0:
            axes[s, 0].set_title("input", fontsize=8)
    bare(axes.flat)
    fig.suptitle("LRP heatmaps per relevance filter\n(red positive, blue negative, each / max|h|)", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_figheight()))
    return save_figure(fig, out_png)
