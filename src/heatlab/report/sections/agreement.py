"""Section "Which metrics agree with the ground truth?": for each no-truth metric and ground-truth
reference, how the metric's ranking of the methods agrees with the truth's (Kendall's τ, Spearman's
ρ, bootstrap intervals) and whether it ranks the Random control last. Needs
``tables/metric_agreement.parquet`` (:mod:`heatlab.run.agreement`); computed by
:func:`heatlab.score.agreement.metric_agreement`."""

from __future__ import annotations

import pandas as pd

from heatlab.report.no_truth import agreement_figure, definitions, load_agreement
from heatlab.report.page import ReportContext, Section
from heatlab.report.templates import number, render
from heatlab.score.agreement import metric_entry
from heatlab.score.intervals import LEVEL

#: What each reference column is.
REFERENCES = {"recall_best": "five-band recall, best over thresholds (standard variant)",
              "precision_best": "five-band precision, best over thresholds (standard variant)",
              "auc/feature": "localisation AUC against the feature mask"}

TEMPLATE = """\
{% from "macros.html" import table, figure %}
<p>No-truth metrics are known to disagree with each other; on this run, which of them rank the explanation methods \
the way the ground truth does? For each metric (in its own direction) and each ground-truth reference, the methods \
are ranked by their mean over every branch and sample, and the two rankings compared: Kendall's τ and Spearman's ρ \
(+1: the same order, −1: the reverse, 0: unrelated) over {{ n_methods }} methods. A metric <b>agrees</b> with a \
reference when τ's {{ level }}% interval lies above 0, <b>disagrees</b> when it lies below, and is <i>unclear</i> \
otherwise. “Random last”: the Random control (seeded random heatmaps) has the metric's worst mean, the least a \
useful metric must show.</p>
{{ table(header, rows) }}
{% if undefined %}<p class="note caveat">τ is undefined (NaN, a metric whose means tie for every method) for \
{{ undefined }} of the {{ rows|length }} rows: they read “unclear” and the figure leaves them out.</p>{% endif %}
<p class="muted">Intervals: {{ kinds|join("; ") }}, seeded, percentile: each resample draws the samples with \
replacement, the same samples for every method, metric and reference (every method scored the same samples), and \
recomputes every mean and both rankings; with 3 or more branches it draws the branches too. With few methods τ \
takes few values, so intervals are coarse. Metrics: {{ definitions }}. References: {% for k, v in refs %}{{ k }}: {{ v }}{% if not loop.last %}; \
{% endif %}{% endfor %}.</p>
<details><summary>The same as a figure</summary>
{% call figure(src, "Kendall's tau per metric and reference") %}Kendall's τ between each no-truth metric's ranking \
of the methods and the ground truth's (one marker per reference), with its {{ level }}% bootstrap interval; 0 \
(solid) means unrelated, ±1 (dotted) the same or the reverse order. Each metric ranks in its own direction: \
{{ definitions }}.{% endcall %}
</details>
"""


def agreement_verdict(low: float, high: float) -> str:
    """"agrees" (interval above 0), "disagrees" (below 0) or "unclear"."""
    if pd.isna(low) or pd.isna(high):
        return "unclear"
    return "agrees" if low > 0 else "disagrees" if high < 0 else "unclear"


def _interval(est, low, high) -> str:
    return f"{number(est)} [{number(low)}, {number(high)}]"


def agreement_section(ctx: ReportContext) -> str:
    table = load_agreement(ctx.run_dir)
    if table.empty:
        return ""
    rows = []
    for r in table.itertuples(index=False):
        last = "–" if pd.isna(r.random_last) else ("yes" if r.random_last else "no")
        rows.append([r.metric, metric_entry(r.metric).get("family", ""), r.reference,
                     _interval(r.tau, r.tau_low, r.tau_high), _interval(r.rho, r.rho_low, r.rho_high),
                     agreement_verdict(r.tau_low, r.tau_high), last, str(r.n_methods)])
    header = ["metric", "family", "reference", f"τ [{100 * LEVEL:.0f}% interval]", f"ρ [{100 * LEVEL:.0f}% interval]",
              "verdict (τ)", "Random last", "methods"]
    kinds = sorted({f"{k} ({s} samples, {b} branch{'es' if b != 1 else ''})"
                    for k, s, b in table[["interval", "samples", "branches"]].dropna().itertuples(index=False)})
    path = agreement_figure(table, ctx.figure_path("metric_agreement.png"))
    n = sorted(set(table["n_methods"]))
    return render(TEMPLATE, header=header, rows=rows, level=f"{100 * LEVEL:.0f}", kinds=kinds, src=ctx.src(path),
                  definitions=definitions(list(dict.fromkeys(table["metric"]))), undefined=int(table["tau"].isna().sum()),
                  n_methods="–".join(str(x) for x in (n[0], n[-1])) if len(n) > 1 else str(n[0]),
                  refs=[(k, REFERENCES.get(k, k)) for k in dict.fromkeys(table["reference"])])


def agreement_summary(ctx: ReportContext) -> dict[str, list[str]] | None:
    """The metrics by their verdicts over every reference: "agrees" (τ's interval above 0 for every reference),
    "disagrees" (below 0 for some reference) and "unclear" (the rest); None when the run has no agreement table."""
    table = load_agreement(ctx.run_dir)
    if table.empty:
        return None
    out: dict[str, list[str]] = {"agrees": [], "disagrees": [], "unclear": []}
    for metric, rows in table.groupby("metric", sort=False):
        verdicts = {agreement_verdict(lo, hi) for lo, hi in zip(rows["tau_low"], rows["tau_high"])}
        out["disagrees" if "disagrees" in verdicts else "agrees" if verdicts == {"agrees"} else "unclear"].append(metric)
    return out


SECTION = Section("metric-agreement", "Which metrics agree with the ground truth?", agreement_section,
                  needs=("metric_agreement",))
