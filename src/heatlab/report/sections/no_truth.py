"""The no-truth metrics (issue 22): a page of their own, ``report/no_truth.html``, and its summary on the index.

The page holds one section per family ("Faithfulness", "Randomisation", "Robustness", "Complexity",
"Axiomatic": per method, each metric's mean over branches and samples with its 95% interval, and a
figure of them), the deletion and insertion curves, the randomisation sanity check and "Which metrics
agree with the ground truth?". The index keeps a short section, "No ground truth": links to the
page's sections, the sanity check's verdicts and the agreement's verdicts (the headline already names
the best method per metric). Needs ``tables/no_truth.parquet``; a family without rows is left out.

The five family sections differ only in their family, so one builder (:func:`family_section`) makes
them all. Direction and citation of every metric come from its entry
(:func:`heatlab.score.agreement.metric_entry`).
"""

from __future__ import annotations

from functools import partial

from heatlab.files import write_text
from heatlab.report.no_truth import (CONTROL, CURVE_METRICS, DIRECTIONS, FAMILIES, curve_bands, curves_figure,
                                    definitions, family_metrics, intervals_figure, load_no_truth, load_no_truth_curves,
                                    method_intervals, undefined)
from heatlab.report.page import ReportContext, Section, build_sections, render_page
from heatlab.report.sections import agreement, sanity
from heatlab.report.sections.headline import kind_text
from heatlab.report.templates import number, render
from heatlab.run.rundir import RunDir
from heatlab.score.agreement import metric_entry
from heatlab.score.intervals import LEVEL, pick_best

#: The no-truth page, next to index.html.
NO_TRUTH_PAGE = "no_truth.html"

#: What each family asks of a heatmap, in one sentence.
QUESTIONS = {
    "faithfulness": "Does the model's output change as the heatmap says when the pixels or features it marks are "
                    "removed or perturbed?",
    "randomisation": "Does the heatmap change when the model's weights are randomised or another class is explained?",
    "robustness": "Does the heatmap stay put when the input changes slightly?",
    "complexity": "How concentrated is the heatmap on few pixels or features?",
    "axiomatic": "Does the heatmap obey the axioms of attribution (completeness, input invariance, non-sensitivity)?",
}
TITLES = {f: f"{f.capitalize()} (no ground truth)" for f in FAMILIES}

#: Scores of any scale: 3 significant digits.
CELL = ('{% if best %}<b>{{ est|g(".3g") }}</b>{% else %}{{ est|g(".3g") }}{% endif %} '
        '[{{ low|g(".3g") }}, {{ high|g(".3g") }}]')
HEAD = "{{ name }} <span class=\"muted\">({{ direction }})</span>"
TEMPLATE = """\
{% from "macros.html" import table, figure %}
<p>{{ question }} Per method, the mean of each metric over every branch and sample (on the split's samples the \
metric scored) and its {{ level }}% interval (3 significant digits); the best mean is bold when its interval overlaps no other method's.</p>
{{ table(header, rows) }}
<p class="muted">Intervals: {{ kinds|join("; ") }} (with three or more branches a t interval over the branches' means, \
which carries both the samples' and the branches' spread; with fewer a bootstrap over the samples within the branches). \
Definitions: {{ definitions }}.</p>
{% include "no_truth_undefined.html" %}
{% call figure(src, family ~ " metrics per method") %}Each panel one {{ family }} metric, its direction in the title: \
per method its mean (bar) and {{ level }}% interval (black line), in the table's numbers ({{ definitions }}).{% endcall %}
"""
CURVES = """\
{% from "macros.html" import figure %}
<p>The curves behind the deletion and insertion scores (Petsiuk et al. 2018, RISE): the model's score for the \
explained class as the pixels or features the heatmap ranks highest are removed from the input (deletion: a \
faithful heatmap makes it fall fast) or put back into the baseline (insertion: it rises fast). Per method the mean \
curve over every branch and sample with its pointwise {{ level }}% band ({{ kinds|join("; ") }}: each resample draws \
the samples once for every step and method){% if control %}; {{ control }}, the seeded random heatmap, is dashed: the \
floor a real method must beat{% endif %}.</p>
{% if dropped %}<p class="note caveat">Left out as undefined (a non-finite or missing score at some step): \
{% for m, n, total in dropped %}{{ n }} of {{ total }} curves of {{ m }}{% if not loop.last %}; {% endif %}{% endfor %}.</p>{% endif %}
{% call figure(src, "deletion and insertion curves per method") %}One panel per metric, its direction in the title: \
{{ definitions }}. The area under a curve is the metric's score.{% endcall %}
"""
SUMMARY = """\
<p>On <a href="{{ page }}">a page of their own</a>: {% for sid, title in parts %}<a href="{{ page }}#{{ sid }}">{{ title }}</a>\
{% if not loop.last %}, {% endif %}{% endfor %} (the headline names the best method per metric).
{%- if check %}<br><b>Sanity check</b> (model randomisation, Adebayo et al. 2018; pass: {{ check.tests|join(" and ") }} \
below {{ threshold }}): {% for v, ms in verdicts %}{{ v }}: \
{{ ms|join(", ") if ms else "none" }}{% if not loop.last %}; {% endif %}{% endfor %} (<a href="{{ page }}#sanity">table</a>).
{%- endif %}
{%- if agree %}<br><b>Which metrics agree with the ground truth?</b> (Kendall's τ of their ranking of the methods \
with the truth's): {% for v, ms in agree.items() %}{{ labels[v] }}: \
{{ ms|join(", ") if ms else "none" }}{% if not loop.last %}; {% endif %}{% endfor %} (<a href="{{ page }}#metric-agreement">table</a>).
{%- endif %}</p>
"""
AGREE_LABELS = {"agrees": "agree for every reference", "disagrees": "reverse it for some",
                "unclear": "unclear"}


def family_section(ctx: ReportContext, family: str) -> str:
    table = load_no_truth(ctx.run_dir)
    metrics = family_metrics(table, family)
    if not metrics:
        return ""
    stats = {m: method_intervals(table, m, ctx.methods) for m in metrics}
    up = {m: metric_entry(m).get("higher_is_better") for m in metrics}
    best = {m: pick_best(stats[m], higher_is_better=up[m] is not False).best if up[m] is not None else None
            for m in metrics}
    methods = list(dict.fromkeys(k for s in stats.values() for k in s))
    rows = []
    for method in methods:
        cells = [method]
        for m in metrics:
            iv = stats[m].get(method)
            low, high = (iv.low, iv.high) if iv is not None and iv.defined else ("–", "–")
            cells.append(render(CELL, est=iv.estimate, low=low, high=high, best=best[m] == method)
                         if iv is not None else number(None))
        rows.append(cells)
    header = ["method", *(render(HEAD, name=m, direction=DIRECTIONS[up[m]]) for m in metrics)]
    kinds = sorted({kind_text(iv) for s in stats.values() for iv in s.values()})
    path = intervals_figure(stats, ctx.figure_path(f"no_truth_{family}.png"), methods=ctx.methods, directions=up)
    return render(TEMPLATE, question=QUESTIONS.get(family, ""), level=f"{100 * LEVEL:.0f}", header=header, rows=rows,
                  kinds=kinds, family=family, src=ctx.src(path), undefined=undefined(table, metrics),
                  definitions=definitions(metrics))


def curves_section(ctx: ReportContext) -> str:
    """Deletion and insertion curves per method (``tables/no_truth_curves.parquet``; "" without it)."""
    table = load_no_truth_curves(ctx.run_dir)
    metrics = [m for m in CURVE_METRICS if m in set(table["metric"])]
    if not metrics:
        return ""
    bands = {m: curve_bands(table, m, ctx.methods) for m in metrics}
    up = {m: metric_entry(m).get("higher_is_better") for m in metrics}
    path = curves_figure(bands, ctx.figure_path("no_truth_curves.png"), methods=ctx.methods, directions=up)
    dropped = [(f"{metric}/{method}", b.dropped, b.dropped + b.samples * b.branches)
               for metric, per in bands.items() for method, (_, b) in per.items() if b.dropped]
    kinds = sorted({b.kind for per in bands.values() for _, b in per.values()})
    control = CONTROL if any(CONTROL in per for per in bands.values()) else None
    return render(CURVES, level=f"{100 * LEVEL:.0f}", kinds=kinds, control=control, dropped=dropped,
                  src=ctx.src(path), definitions=definitions(metrics))


FAMILY_SECTIONS: tuple[Section, ...] = tuple(
    Section(f"no-truth-{f}", TITLES[f], partial(family_section, family=f), needs=("no_truth",)) for f in FAMILIES)
CURVES_SECTION = Section("no-truth-curves", "Deletion and insertion curves", curves_section)
#: The no-truth page's sections, in order.
PAGE_SECTIONS: tuple[Section, ...] = (FAMILY_SECTIONS[0], CURVES_SECTION, *FAMILY_SECTIONS[1:], sanity.SECTION,
                                      agreement.SECTION)


def summary_section(ctx: ReportContext) -> str:
    """Write the no-truth page (:data:`PAGE_SECTIONS`) and return the index's summary of it."""
    fragments = build_sections(ctx, PAGE_SECTIONS)
    if not fragments:
        return ""
    page = ctx.page("no-truth", NO_TRUTH_PAGE, "No-truth metrics (own page)")
    write_text(page, render_page(ctx, fragments, title="No-truth metrics",
                                 back=ctx.src(RunDir(ctx.run_dir).report_page)))
    parts = [(s.id, s.title.removesuffix(" (no ground truth)")) for s, _ in fragments if s in FAMILY_SECTIONS]
    check = sanity.sanity_check(ctx)
    verdicts = [(v, [m for m, o in check.overall.items() if o == v]) for v in ("pass", "fail", "unclear")] if check else []
    return render(SUMMARY, page=ctx.src(page), parts=parts, check=check, verdicts=verdicts, threshold=sanity.THRESHOLD,
                  agree=agreement.agreement_summary(ctx), labels=AGREE_LABELS)


SECTION = Section("no-truth", "No ground truth", summary_section, needs=("no_truth",))
