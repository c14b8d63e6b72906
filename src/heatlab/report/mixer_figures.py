"""Paper 003's figures from a stored Mixer run: accuracy of C(x) and C(x ⊙ M) per attribution setting
with 95% intervals (bootstrap over seeds and test samples; the label-informed true-class bar also
shows its leak test), and a gallery of x, A, M and x ⊙ M. Drawn from ``mixer.json`` and
``mixer/gallery.safetensors`` (written by :mod:`heatlab.run.mixer`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from heatlab.errors import HeatlabError
from heatlab.explain.postprocess import channel_adjust
from heatlab.improve.mixer import SETTINGS
from heatlab.report.figures import bare, literal, new_figure, save_figure
from heatlab.run.rundir import RunDir

#: How each setting is named in figures: what A(x, C) is taken for and whether it needs the label.
SETTING_LABELS = {"true-class": "true class\n(label-informed)", "predicted": "predicted class",
                  "expected": "probability-weighted", "none": "no attribution\n(control)"}
COLORS = {"true-class": "#D55E00", "predicted": "#0072B2", "expected": "#009E73", "none": "#999999"}


def _summary(run_dir: str | os.PathLike) -> dict:
    s = RunDir(run_dir).stage_summary("mixer")
    if not s or not s.get("complete"):
        raise HeatlabError(f"'{run_dir}' has no finished Mixer run; run `heatlab mixer {run_dir}` first.")
    return s


def ordered_settings(summary: dict) -> list[str]:
    """The settings of a Mixer summary in :data:`SETTINGS` order (JSON keeps them sorted)."""
    return [x for x in SETTINGS if x in summary["settings"]]


def mixer_bars_figure(run_dir: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Bars: C(x) once, then C(x ⊙ M) per setting (mean over seeds and test samples, 95% bootstrap interval as
    error bars); a hatched bar after the label-informed setting shows its leak test (the share of
    predictions equal to a random wrong label whose attribution it was fed)."""
    s = _summary(run_dir)
    # (label, value, low, high, colour, hatch) per bar
    plain = next(iter(s["settings"].values()))["accuracy_plain"]
    bars = [("C(x)", plain, plain, plain, "#999999", None)]
    for setting in ordered_settings(s):
        r = s["settings"][setting]
        bars.append((SETTING_LABELS.get(setting, setting), r["accuracy_masked"], r["ci_low"], r["ci_high"],
                     COLORS.get(setting, "#666666"), None))
        if "leak" in r:
            k = r["leak"]
            bars.append(("fed a wrong label's A:\nshare predicting it", k["wrong_share"], k["wrong_share_low"],
                         k["wrong_share_high"], COLORS.get(setting, "#666666"), "//"))
    fig = new_figure(1.7 * len(bars) + 1.2, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    for i, (_, value, low, high, color, hatch) in enumerate(bars):
        err = None if low == high == value else [[value - low], [high - value]]
        ax.bar(i, value, yerr=err, capsize=5, color="white" if hatch else color, edgecolor=color, hatch=hatch, width=0.6)
        ax.text(i, high + 0.01, f"{value:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
    low = min(b[2] for b in bars)
    ax.set_ylim(max(0.0, low - 0.1), 1.04)
    ax.set_ylabel("test accuracy (hatched: share)", fontsize=9)
    ax.set_title(f"C(x) and C(x⊙M) per attribution setting ({s['seeds']} seed(s), 95% interval over seeds and "
                 "test samples)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_png)


def _image(t: torch.Tensor) -> np.ndarray:
    """C×H×W (or F) -> something imshow takes: H×W grey, H×W×3 colour, or 1×F for a table row."""
    if t.dim() == 1:
        return t[None].numpy()
    img = t.permute(1, 2, 0).numpy()
    return img[..., 0] if img.shape[-1] == 1 else img.clip(0, 1)


def mixer_gallery_figure(run_dir: str | os.PathLike, out_png: str | os.PathLike, samples: int = 4) -> Path:
    """Rows: test samples; columns: x, then A, M and x ⊙ M for each setting (first seed's Mixer)."""
    s = _summary(run_dir)
    g = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(RunDir(run_dir).mixer_gallery)).items()}
    names = RunDir(run_dir).class_names()
    settings = [x for x in ordered_settings(s) if f"m/{x}" in g]
    n = min(samples, len(g["labels"]))
    cols = 1 + 3 * len(settings)
    fig = new_figure(1.25 * cols + 0.6, 1.35 * n + 1.1)
    axes = np.atleast_2d(fig.subplots(n, cols, squeeze=False))
    label = lambda k: literal(names[k]) if k < len(names) else str(k)  # noqa: E731
    for i in range(n):
        x = g["x"][i]
        axes[i, 0].imshow(_image(x), cmap="gray", aspect="auto" if x.dim() == 1 else "equal")
        axes[i, 0].set_ylabel(f"{label(int(g['labels'][i]))}\nC(x): {label(int(g['plain'][i]))}", fontsize=7)
        for j, setting in enumerate(settings):
            a, m = g[f"a/{setting}"][i], g[f"m/{setting}"][i]
            flat = x.dim() == 1
            heat = a[None] if flat else channel_adjust(a[None])[0]
            col = 1 + 3 * j
            axes[i, col].imshow(heat.numpy(), cmap="bwr", vmin=-1, vmax=1, aspect="auto" if flat else "equal")
            axes[i, col + 1].imshow(m[None].numpy() if flat else m.mean(0).numpy(), cmap="viridis", vmin=0, vmax=1,
                                    aspect="auto" if flat else "equal")
            axes[i, col + 2].imshow(_image(x * m), cmap="gray", aspect="auto" if flat else "equal")
            axes[i, col + 2].set_xlabel(f"C(x⊙M): {label(int(g[f'predictions/{setting}'][i]))}", fontsize=6)
            if i == 0:
                short = SETTING_LABELS.get(setting, setting)
                for k, what in enumerate(("A", "M", "x⊙M")):
                    axes[i, col + k].set_title(f"{what}\n{short}", fontsize=7)
        if i == 0:
            axes[i, 0].set_title("x", fontsize=7)
    bare(axes.flat)
    fig.suptitle("Mixer inputs and masks per attribution setting (A: IG / max|A|, red positive; M in [0, 1])", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return save_figure(fig, out_png)
