"""Section "Relevance per feature" (table data): bar charts of the stored relevance per feature and
method, the features each method ranks highest, and the accuracy over the stored samples.

Needs the table heatmaps evaluate stored (every sample of the split, ``selection`` "all"). Feature
names are evaluate.json's ``feature_names`` (the data's column order), else f0, f1, ...
"""

from __future__ import annotations

import torch

from heatlab.errors import HeatlabError
from heatlab.report.figures import feature_relevance_figure
from heatlab.report.heatmaps import load_heatmaps
from heatlab.report.page import ReportContext, Section, note
from heatlab.report.templates import render

#: Features listed per method in the ranking table.
TOP = 5


def feature_names(ctx: ReportContext, width: int) -> list[str]:
    names = [str(n) for n in ctx.evaluation.get("feature_names") or []]
    return names if len(names) == width else [f"f{j}" for j in range(width)]


def top_features(relevance: torch.Tensor, names: list[str], k: int = TOP) -> list[tuple[str, float]]:
    """The ``k`` features with the largest mean |relevance| (N×F), largest first; ties keep column order."""
    magnitude = relevance.double().abs().mean(0).tolist()
    order = sorted(range(len(magnitude)), key=lambda j: -magnitude[j])  # stable
    return [(names[j], magnitude[j]) for j in order[:k]]

CELL = '{{ name }} <span class="muted">{{ value|num }}</span>'
TEMPLATE = """\
{% from "macros.html" import figure, table %}
<p>Branch <b>{{ branch }}</b>, all {{ n }} samples of the <b>{{ split }}</b> split (classifier accuracy {{ accuracy|num }}), each attributed to its predicted class by heatlab evaluate. The data is a table, so a heatmap is one relevance value per feature; there is no ground truth to score it against.</p>
{% call figure(src, "relevance per feature") %}One panel per method: per feature the mean over samples of the attribution divided by its largest magnitude per sample (filled bars: signed mean, red positive, blue negative; outlined bars: mean magnitude).{% endcall %}
<h3>The {{ top }} most relevant features per method (mean |relevance|)</h3>
{{ table(header, rows) }}
"""


def features_section(ctx: ReportContext) -> str:
    try:
        stored = {m: load_heatmaps(ctx.run_dir, ctx.split, ctx.gallery_branch, m) for m in ctx.heatmaps}
    except HeatlabError as exc:
        return note(f"No feature relevance: {exc}")
    relevance = {m: s.attributions.flatten(1) for m, s in stored.items()}
    first = next(iter(stored.values()))
    names = feature_names(ctx, relevance[ctx.heatmaps[0]].shape[1])
    path = feature_relevance_figure(relevance, names, ctx.figure_path("feature_relevance.png"))
    rows = [[m, *(render(CELL, name=n, value=v) for n, v in top_features(r, names))] for m, r in relevance.items()]
    accuracy = float((first.labels == first.predictions).double().mean()) if len(first) else float("nan")
    return render(TEMPLATE, branch=ctx.gallery_branch, n=len(first), split=ctx.split, accuracy=accuracy,
                  src=ctx.src(path), top=TOP, header=["method", *(f"#{k + 1}" for k in range(min(TOP, len(names))))],
                  rows=rows)


SECTION = Section("features", "Relevance per feature", features_section, needs=("table_heatmaps",))
