"""Section "Summary": methods ranked by the score tables' means, and the classifier's accuracy.

Needs ``tables/five_band.parquet`` (recall/precision rankings) or ``tables/localisation.parquet``
(AUC ranking); left out when evaluate wrote neither (data without ground truth).
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from heatlab.report.page import ReportContext, Section, attribution_text, esc, fmt


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


def ranking_sentence(what: str, ranked: list[tuple[str, float, int]]) -> str:
    parts = [f"<b>{esc(m)}</b> {fmt(v)}" for m, v, _ in ranked]
    return f'<p class="rank">{what}: ' + " &gt; ".join(parts) + ".</p>"


def summary_section(ctx: ReportContext) -> str:
    fb, loc = ctx.five_band, ctx.localisation
    per_sample = fb if not fb.empty else loc
    if per_sample.empty:
        return ""
    n_samples = len(per_sample.drop_duplicates(["branch", "shard", "index"]))
    scores = ("Scores compare each heatmap, after channel adjustment and five-band stratification, with the ground truth"
              if not fb.empty else "Scores compare each channel-adjusted heatmap with the ground-truth mask")
    out = [
        f"<p>{len(ctx.methods)} attribution method(s) were scored on the <b>{esc(ctx.split)}</b> split for "
        f"{len(per_sample['branch'].unique())} branch model(s), {n_samples} (branch, sample) pairs in all. "
        f"{scores}; for every score below, higher is better.</p>",
        f"<p class=\"muted\">Heatmaps: {attribution_text(ctx.evaluation.get('attribution'))}.</p>",
    ]
    if not fb.empty:
        standard = fb[fb["variant"] == "standard"]
        recall = rank_methods(standard, "recall_best", ctx.methods)
        precision = rank_methods(standard, "precision_best", ctx.methods)
        out.append(ranking_sentence("Ranked by mean best recall (standard variant, all branches and samples)", recall))
        if recall:
            out.append(f"<p>{esc(recall[0][0])} finds the largest share of the truth's localisation and feature pixels "
                       f"with the right band; {esc(recall[-1][0])} the smallest.</p>")
        out.append(ranking_sentence("Ranked by mean best precision (standard variant, all branches and samples)", precision))
        if precision:
            out.append(f"<p>The pixels {esc(precision[0][0])} marks are most often in the truth's band; "
                       f"those of {esc(precision[-1][0])} least often.</p>")
    if "auc/feature" in loc:
        out.append(ranking_sentence("Ranked by mean AUC of the adjusted heatmap against the feature mask "
                                    "(localisation table, samples with an empty mask left out)",
                                    rank_methods(loc, "auc/feature", ctx.methods)))
    acc_text = ", ".join(
        f"{esc(b)} {fmt(a)} ({n} samples; test_acc {fmt(ctx.models.get(b, {}).get('test_acc'))} at training)"
        for b, a, n in branch_accuracy(per_sample)
    )
    out.append(f"<p>Classifier accuracy on the {esc(ctx.split)} split, per branch: {acc_text}.</p>")
    return "\n".join(out)


SECTION = Section("summary", "Summary", summary_section, needs=("evaluate",))
