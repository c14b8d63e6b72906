"""Result figures of an evaluated run, drawn from its tables (paper 002, Fig. 3 and Fig. 4).

- :func:`recall_precision_figure`: one point per (method, branch) = mean over samples of the
  per-sample (precision, recall), error bars ± one standard deviation over samples; panels
  average/best × standard/clamp. Precision on x, recall on y ("recall vs precision", points (P, R)).
- :func:`roc_figure`: one curve per (method, branch) through the per-threshold means of (FPR,
  recall); FPR on x, recall on y (the original plots had the axes swapped), panels standard/clamp.

Figures are built on :class:`matplotlib.figure.Figure` (no pyplot state) and written atomically.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from heatlab.files import atomic_path, ensure_dir

if TYPE_CHECKING:
    import torch

VARIANTS = ("standard", "clamp", "clamp_original")
#: Panel titles of the five-band variants.
VARIANT_LABELS = {"standard": "standard", "clamp": "clamp, clipped after normalising (paper text)",
                  "clamp_original": "clamp, raw attribution clipped (original code)"}

#: Why the two clamp orders differ, in one sentence for the report.
CLAMP_ORDER_NOTE = (
    "The two clamp orders differ because the paper's text clips h/max|h| to ±0.1, which flattens every peak, while "
    "its original code clipped the raw attribution, whose values are often all below 0.1, so there the clip changes "
    "little: the heatmap stays close to the standard one but is judged with the clamp variant's higher thresholds "
    "(from ±0.5 and ±0.9), which lowers its recall."
)


def present_variants(table: pd.DataFrame) -> list[str]:
    """The five-band variants of ``table`` in :data:`VARIANTS` order (runs from before clamp_original have two)."""
    have = set(table["variant"])
    return [v for v in VARIANTS if v in have] or ["standard"]
STATS = ("avg", "best")
STAT_LABELS = {"avg": "average over thresholds", "best": "best over thresholds"}
# Colour-blind-safe qualitative palette (Okabe-Ito, then Tableau) so 11 methods stay distinct.
PALETTE = (
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
    "#000000", "#8C564B", "#7F7F7F", "#BCBD22", "#9467BD", "#17BECF",
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")
# Zoom into a panel (inset) when the points sit in a region narrower than this.
ZOOM_SPAN = 0.3


def method_styles(methods: Sequence[str]) -> dict[str, dict]:
    """A fixed colour and marker per method, by position in ``methods`` (same order, same look)."""
    return {m: {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)]} for i, m in enumerate(methods)}


def branch_points(five_band: pd.DataFrame, variant: str, stat: str) -> pd.DataFrame:
    """Per (method, branch): mean and std over samples of precision_<stat> and recall_<stat>.

    Columns: method, branch, p_mean, p_std, r_mean, r_std, n (samples). The std is the population
    std (ddof=0), so a single sample gives 0 rather than NaN.
    """
    rows = five_band[five_band["variant"] == variant]
    g = rows.groupby(["method", "branch"], sort=False)
    out = g.agg(
        p_mean=(f"precision_{stat}", "mean"),
        p_std=(f"precision_{stat}", lambda s: s.std(ddof=0)),
        r_mean=(f"recall_{stat}", "mean"),
        r_std=(f"recall_{stat}", lambda s: s.std(ddof=0)),
        n=(f"recall_{stat}", "size"),
    )
    return out.reset_index()


def literal(text: object) -> str:
    """``text`` as a figure shows it verbatim (matplotlib would read ``$...$`` in a class name as math)."""
    return str(text).replace("$", r"\$")


def new_figure(width: float, height: float, *, layout: str | None = None) -> Figure:
    """A pyplot-free figure of ``width`` × ``height`` inches at 100 dpi (``layout``: e.g. "constrained")."""
    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def bare(axes, edge: str | None = None) -> None:
    """No ticks on image axes (and the frame in ``edge`` colour when given)."""
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        if edge is not None:
            for spine in ax.spines.values():
                spine.set_edgecolor(edge)


def hold_flat_axes(ax: Axes, *, integer: str = "") -> None:
    """Fixed limits for an autoscaled axis whose data hold one value only.

    Matplotlib zooms such an axis to the value ± 5% (one validation at iteration 4 reads 3.80-4.20),
    which makes a single point look like a measured spread. Here it gets the value ± 1 on an axis
    named in ``integer`` ("x", "y" or "xy": counts such as iterations, never below 0 for a
    non-negative value) and the value ± half its size (at least ± 0.5) otherwise. Call after plotting.
    """
    for name, (lo, hi), auto, setter in (("x", ax.dataLim.intervalx, ax.get_autoscalex_on(), ax.set_xlim),
                                         ("y", ax.dataLim.intervaly, ax.get_autoscaley_on(), ax.set_ylim)):
        if not auto or not (math.isfinite(lo) and lo == hi):
            continue
        pad = 1.0 if name in integer else max(abs(lo), 1.0) * 0.5
        setter(max(0.0, lo - pad) if name in integer and lo >= 0 else lo - pad, hi + pad)


def save_figure(fig: Figure, out_png: str | os.PathLike) -> Path:
    out = Path(out_png)
    ensure_dir(out.parent)
    with atomic_path(out) as tmp:
        # No "Software" metadata, so the same figure gives the same bytes across matplotlib builds; zlib
        # level 3 instead of 6: half the encoding time of the large gallery mosaics for ~10% more bytes.
        fig.savefig(tmp, format="png", metadata={"Software": None}, pil_kwargs={"compress_level": 3})
    return out


def _unit_square(ax: Axes, xlabel: str, ylabel: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)


def _zoom_box(xs: Sequence[float], ys: Sequence[float], *, x_only: bool = False) -> tuple[float, float, float, float] | None:
    """(x0, x1, y0, y1) around the points, padded, when they are crowded into a small region
    (on both axes, or with ``x_only`` on the x axis alone)."""
    xs = [x for x in xs if x == x]
    ys = [y for y in ys if y == y]
    if not xs or not ys:
        return None
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 - x0 > ZOOM_SPAN or (not x_only and y1 - y0 > ZOOM_SPAN):
        return None
    px, py = max(x1 - x0, 0.01) * 0.12, max(y1 - y0, 0.01) * 0.12
    return max(0.0, x0 - px), min(1.0, x1 + px), max(0.0, y0 - py), min(1.0, y1 + py)


def _inset(ax: Axes, box: tuple[float, float, float, float], corner: tuple[float, float] | None = None) -> Axes:
    """An inset axes zoomed on ``box`` with the region marked; its lower-left ``corner`` in axes
    fractions defaults to the quadrant opposite the box."""
    if corner is None:
        cx, cy = (box[0] + box[1]) / 2, (box[2] + box[3]) / 2
        corner = (0.53 if cx < 0.5 else 0.06, 0.53 if cy < 0.5 else 0.06)
    ins = ax.inset_axes([corner[0], corner[1], 0.42, 0.42])
    ins.set_xlim(box[0], box[1])
    ins.set_ylim(box[2], box[3])
    ins.tick_params(labelsize=6, length=2)
    ins.grid(True, color="#eeeeee", linewidth=0.5)
    ax.indicate_inset_zoom(ins, edgecolor="#777777")
    return ins


def _legend(fig: Figure, methods: Sequence[str], styles: dict[str, dict], *, line: bool,
            loc: str = "lower center") -> None:
    handles = [
        Line2D([], [], color=styles[m]["color"], marker=styles[m]["marker"], linestyle="-" if line else "none",
               markersize=6, label=m)
        for m in methods
    ]
    fig.legend(handles=handles, loc=loc, ncol=min(len(methods), 6), fontsize=8, frameon=False)


def recall_precision_figure(
    five_band: pd.DataFrame, out_png: str | os.PathLike, *, methods: Sequence[str] | None = None
) -> Path:
    """Paper Fig. 3: recall (y) vs precision (x), panels (average, best) in rows × each stored variant in columns.

    ``five_band`` has the columns of ``tables/five_band.parquet``; ``methods`` fixes the legend
    order and colours (default: order of appearance). Returns the PNG path.
    """
    methods = list(methods) if methods is not None else list(dict.fromkeys(five_band["method"]))
    styles = method_styles(methods)
    variants = present_variants(five_band)
    # Constrained layout keeps the titles, panels and legend apart (long variant titles are wrapped).
    fig = new_figure(max(6.0, 3.2 * len(variants) + 0.5), 0.8 + 3.3 * len(STATS), layout="constrained")
    panels = [(stat, variant) for stat in STATS for variant in variants]
    for i, (stat, variant) in enumerate(panels):
        ax = fig.add_subplot(len(STATS), len(variants), i + 1)
        _unit_square(ax, f"precision ({stat})", f"recall ({stat})")
        ax.set_title(f"({chr(65 + i)}) {STAT_LABELS[stat]},\n{textwrap.fill(VARIANT_LABELS[variant], 34)}", fontsize=9)
        pts = branch_points(five_band, variant, stat)
        pts = pts[pts["method"].isin(methods)]
        box = _zoom_box(list(pts["p_mean"]), list(pts["r_mean"]))
        targets = [ax] if box is None else [ax, _inset(ax, box)]
        for target in targets:
            for method in methods:
                sel = pts[pts["method"] == method]
                if sel.empty:
                    continue
                st = styles[method]
                bars = target.errorbar(
                    sel["p_mean"], sel["r_mean"], xerr=sel["p_std"], yerr=sel["r_std"], fmt=st["marker"],
                    color=st["color"], markersize=6 if target is ax else 4, elinewidth=0.8, capsize=2,
                    markeredgecolor="white", markeredgewidth=0.5, zorder=3,
                )
                for part in (*bars.lines[1], *bars.lines[2]):  # caps and bars fainter than the points
                    part.set_alpha(0.45)
        if pts.empty:
            ax.text(0.5, 0.5, "no rows", ha="center", va="center", color="#888888")
    _legend(fig, methods, styles, line=False, loc="outside lower center")
    fig.suptitle("Five-band recall vs precision\none point per branch (mean ± std over samples)", fontsize=11)
    return save_figure(fig, out_png)


def roc_figure(roc: pd.DataFrame, out_png: str | os.PathLike, *, methods: Sequence[str] | None = None) -> Path:
    """Paper Fig. 4 with the axes of the definition: FPR on x, recall on y; one panel per stored variant.

    ``roc`` has the columns of ``tables/roc.parquet``; one line per (method, branch) through the
    thresholds in order, its first threshold marked with a dot. Returns the PNG path.
    """
    methods = list(methods) if methods is not None else list(dict.fromkeys(roc["method"]))
    styles = method_styles(methods)
    variants = present_variants(roc)
    fig = new_figure(5.25 * len(variants), 6.0)
    for i, variant in enumerate(variants):
        ax = fig.add_subplot(1, len(variants), i + 1)
        _unit_square(ax, "false positive rate (FPR)", "recall (true positive rate)")
        ax.set_title(f"({chr(65 + i)}) {VARIANT_LABELS[variant]}", fontsize=9)
        ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", linewidth=0.8)
        rows = roc[(roc["variant"] == variant) & roc["method"].isin(methods)]
        # ROC points hug the left edge (low FPR): zoom on x and put the inset at the lower right.
        box = _zoom_box(list(rows["fpr"]), list(rows["recall"]), x_only=True)
        targets = [ax] if box is None else [ax, _inset(ax, box, (0.53, 0.06))]
        for target in targets:
            for (method, _branch), curve in rows.groupby(["method", "branch"], sort=False):
                curve = curve.sort_values("threshold")
                st = styles[method]
                target.plot(curve["fpr"], curve["recall"], color=st["color"], linewidth=1.1, alpha=0.85)
                target.plot(curve["fpr"].iloc[:1], curve["recall"].iloc[:1], marker=st["marker"],
                            color=st["color"], markersize=4, linestyle="none")
        if rows.empty:
            ax.text(0.5, 0.5, "no rows", ha="center", va="center", color="#888888")
    _legend(fig, methods, styles, line=True)
    fig.suptitle("ROC of the five-band score: one curve per (method, branch), marker = first threshold", fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.2, wspace=0.2)
    return save_figure(fig, out_png)


def feature_relevance_figure(relevance: dict[str, "torch.Tensor"], feature_names: Sequence[str],
                             out_png: str | os.PathLike) -> Path:
    """Bar charts of stored table relevance, one panel per method: per feature the mean over samples of
    the attribution divided by its largest magnitude per sample (filled bars, red positive, blue
    negative) and the mean of its magnitude (outlined bars).

    ``relevance[m]`` is N×F (the stored, normalised attributions); ``feature_names`` label the x axis
    when there is one per feature (else f0, f1, ...).
    """
    methods = list(relevance)
    fig = new_figure(8.5, 0.6 + 2.0 * max(1, len(methods)))
    for i, method in enumerate(methods):
        attr = relevance[method].double()
        signed, magnitude = attr.mean(0).numpy(), attr.abs().mean(0).numpy()
        labels = [literal(n) for n in feature_names] if len(feature_names) == len(signed) else [f"f{j}" for j in range(len(signed))]
        ax = fig.add_subplot(len(methods), 1, i + 1)
        x = range(len(signed))
        ax.bar(x, magnitude, color="none", edgecolor="#57606a", linewidth=0.8, label="mean |relevance|")
        ax.bar(x, signed, color=["#b42318" if v >= 0 else "#2166ac" for v in signed], width=0.6, label="mean relevance")
        ax.axhline(0, color="#999999", linewidth=0.6)
        ax.set_ylabel(method, fontsize=8)
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels if i == len(methods) - 1 else [], rotation=60, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        if i == 0:
            ax.legend(fontsize=7, loc="upper right", frameon=False)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.98, bottom=0.9 / fig.get_figheight() + 0.04, hspace=0.15)
    return save_figure(fig, out_png)
