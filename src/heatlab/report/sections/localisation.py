"""Section "Localisation metrics": mean of each metric per method. Needs ``tables/localisation.parquet``
(data with level truth or binary masks)."""

from __future__ import annotations

import math

from heatlab.report.context import ID_COLUMNS
from heatlab.report.page import ReportContext, Section, esc, fmt, note, table_html

METRIC_SOURCES = {
    "pointing_game": "Zhang et al. 2018, “Top-down neural attention by excitation backprop”, IJCV",
    "relevance_mass": "Arras et al. 2022, “CLEVR-XAI: a benchmark dataset for the ground truth evaluation of "
                      "neural network explanations”, Information Fusion",
    "relevance_rank": "Arras et al. 2022 (relevance rank accuracy, same paper)",
    "auc": "Fawcett 2006, “An introduction to ROC analysis”, Pattern Recognition Letters",
}


def localisation_section(ctx: ReportContext) -> str:
    loc = ctx.localisation
    metrics = [c for c in loc.columns if c not in ID_COLUMNS]
    if not metrics:
        return note(f"The localisation table has no metric columns; run `heatlab evaluate {ctx.run_dir}` again.")
    means = {m: {c: loc.loc[loc["method"] == m, c].mean() for c in metrics} for m in ctx.methods}
    best = {c: max((means[m][c] for m in ctx.methods if not math.isnan(means[m][c])), default=math.nan)
            for c in metrics}
    rows = []
    for m in ctx.methods:
        cells = [esc(m)]
        for c in metrics:
            n = int(loc.loc[loc["method"] == m, c].notna().sum())
            text = f"{fmt(means[m][c])} <span class=\"muted\">({n})</span>"
            cells.append(f"<b>{text}</b>" if means[m][c] == best[c] else text)
        rows.append(cells)
    sources = "; ".join(f"{esc(k)}: {esc(v)}" for k, v in METRIC_SOURCES.items())
    masks = ("“/feature” uses the discriminative-feature mask (truth 0.9), “/cell” the whole cell (truth &gt; 0)"
             if ctx.evaluation.get("truth_kind", "levels") == "levels"
             else "the data's masks are binary, so “/feature” and “/cell” both use the mask")
    return (
        "<p>Mean over all branches and samples of each localisation metric of the channel-adjusted (standard) "
        "heatmap, with the number of samples that have a value in brackets (a metric is undefined where its mask "
        f"is empty, e.g. for the empty class). {masks}. Higher is better for every column; the best mean is bold.</p>"
        + table_html(["method", *(esc(c).replace("/", "/<wbr>") for c in metrics)], rows)
        + f'<p class="muted">Definitions: {sources}.</p>'
    )


SECTION = Section("localisation", "Localisation metrics", localisation_section, needs=("localisation",))
