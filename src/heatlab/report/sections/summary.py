"""Section "Summary": methods ranked by the score tables' means, and the classifier's accuracy.

Needs ``tables/five_band.parquet`` (recall/precision rankings) or ``tables/localisation.parquet``
(AUC ranking); left out when evaluate wrote neither (data without ground truth).
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from heatlab.report.page import ReportContext, Section, attribution_text
from heatlab.report.templates import render


def rank_methods(df: pd.DataFrame, column: str, methods: Sequence[str]) -> list[tuple[str, float, int]]:
    """(method, mean of ``column`` over non-NaN rows, count) sorted by mean, highest first.

    Ties keep the order of ``methods``; methods without any non-NaN value come last.
    """
    stats = []
    for method in methods:
        values = df.loc[df["method"] == method, column].dropna()
        stats.append((method, float(values.mean()) if len(values) else math.nan, len(values)))
    # sorted() is stable, so equal means keep the order of ``methods``.
    return sorted(stats, key=lambda s: (math.isnan(s[1]), -s[1] if not math.isnan(s[1]) else 0.0))


def branch_accuracy(table: pd.DataFrame) -> list[tuple[str, float, int]]:
    """(branch, fraction of correctly predicted samples, samples) from a per-sample score table."""
    out = []
    for branch, rows in table.groupby("branch", sort=False):
        samples = rows.drop_duplicates(["shard", "index"])
        out.append((str(branch), float(samples["correct"].astype(bool).mean()), len(samples)))
    return out


TEMPLATE = """\
{% macro ranking(what, ranked) %}<p class="rank">{{ what }}: {% for m, v, _ in ranked %}<b>{{ m }}</b> {{ v|num }}{% if not loop.last %} &gt; {% endif %}{% endfor %}.</p>{% endmacro %}
<p>{{ methods|length }} attribution method(s) were scored on the <b>{{ split }}</b> split for {{ n_branches }} branch model(s), {{ n_samples }} (branch, sample) pairs in all. {{ scores }}; for every score below, higher is better.</p>
<p class="muted">Heatmaps: {{ attribution }}.</p>
{% if recall is not none %}
{{ ranking("Ranked by mean best recall (standard variant, all branches and samples)", recall) }}
{% if recall %}
<p>{{ recall[0][0] }} finds the largest share of the truth's localisation and feature pixels with the right band; {{ recall[-1][0] }} the smallest.</p>
{% endif %}
{{ ranking("Ranked by mean best precision (standard variant, all branches and samples)", precision) }}
{% if precision %}
<p>The pixels {{ precision[0][0] }} marks are most often in the truth's band; those of {{ precision[-1][0] }} least often.</p>
{% endif %}
{% endif %}
{% if auc is not none %}
{{ ranking("Ranked by mean AUC of the adjusted heatmap against the feature mask (localisation table, samples with an empty mask left out)", auc) }}
{% endif %}
<p>Classifier accuracy on the {{ split }} split, per branch: {% for b, a, n, test_acc in accuracy %}{{ b }} {{ a|num }} ({{ n }} samples; test_acc {{ test_acc|num }} at training){% if not loop.last %}, {% endif %}{% endfor %}.</p>
"""


def summary_section(ctx: ReportContext) -> str:
    fb, loc = ctx.five_band, ctx.localisation
    per_sample = fb if not fb.empty else loc
    if per_sample.empty:
        return ""
    standard = fb[fb["variant"] == "standard"] if not fb.empty else None
    return render(
        TEMPLATE, methods=ctx.methods, split=ctx.split, n_branches=len(per_sample["branch"].unique()),
        n_samples=len(per_sample.drop_duplicates(["branch", "shard", "index"])),
        scores=("Scores compare each heatmap, after channel adjustment and five-band stratification, with the ground "
                "truth" if not fb.empty else "Scores compare each channel-adjusted heatmap with the ground-truth mask"),
        attribution=attribution_text(ctx.evaluation.get("attribution")),
        recall=None if standard is None else rank_methods(standard, "recall_best", ctx.methods),
        precision=None if standard is None else rank_methods(standard, "precision_best", ctx.methods),
        auc=rank_methods(loc, "auc/feature", ctx.methods) if "auc/feature" in loc else None,
        accuracy=[(b, a, n, ctx.models.get(b, {}).get("test_acc")) for b, a, n in branch_accuracy(per_sample)],
    )


SECTION = Section("summary", "Summary", summary_section, needs=("evaluate",))
