"""Section "Localisation metrics": mean of each metric per method. Needs ``tables/localisation.parquet``
(data with level truth or binary masks)."""

from __future__ import annotations

import math

import pandas as pd

from heatlab.report.context import ID_COLUMNS
from heatlab.report.page import ReportContext, Section, esc, fmt, note, table_html

METRIC_SOURCES = {
    "pointing_game": "Zhang et al. 2018, “Top-down neural attention by excitation backprop”, IJCV",
    "relevance_mass": "Arras et al. 2022, “CLEVR-XAI: a benchmark dataset for the ground truth evaluation of "
                      "neural network explanations”, Information Fusion",
    "relevance_rank": "Arras et al. 2022 (relevance rank accuracy, same paper)",
    "auc": "Fawcett 2006, “An introduction to ROC analysis”, Pattern Recognition Letters",
}


def in_range(values: pd.Series, low: float = 0.0, high: float = 1.0) -> bool:
    """Whether every non-NaN value lies in [low, high] (the range every localisation metric is defined in)."""
    v = values.dropna()
    return bool(((v >= low) & (v <= high)).all())


def _mask_of(column: str) -> str:
    return column.rsplit("/", 1)[1] if "/" in column else ""


def mask_table(loc: pd.DataFrame, metrics: list[str], methods: list[str]) -> str:
    """Per method, each metric's mean and median over branches and samples, and the samples counted.

    The best mean of a column is bold only when all of its values lie in [0, 1]; a column with
    values outside (signed relevance) gets no bold, since its mean is then not a meaningful ranking.
    """
    stats = {m: {c: loc.loc[loc["method"] == m, c] for c in metrics} for m in methods}
    ranked = {c: in_range(loc[c]) for c in metrics}
    best = {c: max((v.mean() for v in (stats[m][c] for m in methods) if v.notna().any()), default=math.nan)
            for c in metrics}
    rows = []
    for m in methods:
        counts = sorted({int(stats[m][c].notna().sum()) for c in metrics})
        cells = [esc(m)]
        for c in metrics:
            mean, median = stats[m][c].mean(), stats[m][c].median()
            cells.append(f"<b>{fmt(mean)}</b>" if ranked[c] and mean == best[c] else fmt(mean))
            cells.append(fmt(median))
        cells.append(str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}")
        rows.append(cells)
    names = [c.rsplit("/", 1)[0] for c in metrics]
    head = ["method", *(f"{esc(n).replace('_', '_<wbr>')} {w}" for n in names for w in ("mean", "median")), "samples"]
    out = table_html(head, rows)
    off = [c for c in metrics if not ranked[c]]
    if off:
        out += (f'<p class="note caveat">{esc(", ".join(off))}: some values lie outside [0, 1] (signed relevance can '
                "make the ratio exceed 1 or go negative), so no mean is marked best there; the medians are the robust "
                "summary.</p>")
    return out


def localisation_section(ctx: ReportContext) -> str:
    loc = ctx.localisation
    metrics = [c for c in loc.columns if c not in ID_COLUMNS]
    if not metrics:
        return note(f"The localisation table has no metric columns; run `heatlab evaluate {ctx.run_dir}` again.")
    groups = {k: [c for c in metrics if _mask_of(c) == k] for k in dict.fromkeys(_mask_of(c) for c in metrics)}
    sources = "; ".join(f"{esc(k)}: {esc(v)}" for k, v in METRIC_SOURCES.items())
    masks = ("“/feature” uses the discriminative-feature mask (truth 0.9), “/cell” the whole cell (truth &gt; 0)"
             if ctx.evaluation.get("truth_kind", "levels") == "levels"
             else "the data's masks are binary, so “/feature” and “/cell” both use the mask")
    tables = "".join((f"<h3>{esc(k)} mask</h3>" if k else "") + mask_table(loc, cols, ctx.methods)
                     for k, cols in groups.items())
    return (
        "<p>Mean and median over all branches and samples of each localisation metric of the channel-adjusted "
        "(standard) heatmap; “samples” counts those with a value (a metric is undefined where its mask is empty, "
        f"e.g. for the empty class). {masks}. Higher is better for every column; the best mean is bold.</p>"
        + tables
        + f'<p class="muted">Definitions: {sources}.</p>'
    )


SECTION = Section("localisation", "Localisation metrics", localisation_section, needs=("localisation",))
