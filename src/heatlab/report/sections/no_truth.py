"""Sections "Faithfulness", "Randomisation", "Robustness", "Complexity", "Axiomatic" (no ground truth):
per method, each metric's mean over branches and samples with its 95% interval, and a figure of
them. Needs ``tables/no_truth.parquet``; a family without rows is left out.

The five sections differ only in their family, so one builder (:func:`family_section`) makes them
all. Direction and citation of every metric come from its entry
(:func:`heatlab.score.agreement.metric_entry`).
"""

from __future__ import annotations

from functools import partial

from heatlab.report.no_truth import (FAMILIES, family_metrics, intervals_figure, load_no_truth, method_intervals,
                                    non_finite)
from heatlab.report.page import ReportContext, Section
from heatlab.report.sections.headline import kind_text
from heatlab.report.templates import number, render
from heatlab.score.agreement import metric_entry
from heatlab.score.intervals import LEVEL, pick_best

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
DIRECTIONS = {True: "higher is better", False: "lower is better", None: "no direction"}

#: Scores of any scale: 3 significant digits.
CELL = ('{% if best %}<b>{{ est|g(".3g") }}</b>{% else %}{{ est|g(".3g") }}{% endif %} '
        '[{{ low|g(".3g") }}, {{ high|g(".3g") }}]')
HEAD = "{{ name }} <span class=\"muted\">({{ direction }})</span>"
TEMPLATE = """\
{% from "macros.html" import table, figure %}
<p>{{ question }} Per method, the mean of each metric over every branch and sample (on the split's samples the \
metric scored) and its {{ level }}% interval (3 significant digits); the best mean is bold when its interval overlaps no other method's.</p>
<details><summary>Per-method means and intervals ({{ rows|length }} methods)</summary>
{{ table(header, rows) }}
</details>
<p class="muted">Intervals: {{ kinds|join("; ") }} (with three or more branches a t interval over the branches' means, \
which carries both the samples' and the branches' spread; with fewer a bootstrap over the samples within the branches). \
Definitions: {% for name, direction, source in sources %}{{ name }} ({{ direction }}{% if source %}; {{ source }}{% endif %})\
{% if not loop.last %}; {% endif %}{% endfor %}.</p>
{% if infinite %}
<p class="note caveat">Left out as undefined: {% for m, n in infinite.items() %}{{ n }} infinite value(s) of {{ m }}\
{% if not loop.last %}, {% endif %}{% endfor %} (a ratio over a heatmap that is zero everywhere).</p>
{% endif %}
<details><summary>The same as bars with intervals</summary>
{% call figure(src, family ~ " metrics per method") %}Each panel one {{ family }} metric: per method its mean (bar) \
and {{ level }}% interval (black line), in the table's numbers.{% endcall %}
</details>
"""


def family_section(ctx: ReportContext, family: str) -> str:
    table = load_no_truth(ctx.run_dir)
    metrics = family_metrics(table, family)
    if not metrics:
        return ""
    stats = {m: method_intervals(table, m, ctx.methods) for m in metrics}
    entries = {m: metric_entry(m) for m in metrics}
    up = {m: entries[m].get("higher_is_better") for m in metrics}
    best = {m: pick_best(stats[m], higher_is_better=up[m] is not False).best if up[m] is not None else None
            for m in metrics}
    methods = list(dict.fromkeys(k for s in stats.values() for k in s))
    rows = []
    for method in methods:
        cells = [method]
        for m in metrics:
            iv = stats[m].get(method)
            low, high = (iv.low, iv.high) if iv.defined else ("–", "–")
            cells.append(render(CELL, est=iv.estimate, low=low, high=high, best=best[m] == method)
                         if iv is not None else number(None))
        rows.append(cells)
    header = ["method", *(render(HEAD, name=m, direction=DIRECTIONS[up[m]]) for m in metrics)]
    kinds = sorted({kind_text(iv) for s in stats.values() for iv in s.values()})
    path = intervals_figure(stats, ctx.figure_path(f"no_truth_{family}.png"), methods=ctx.methods, directions=up)
    return render(TEMPLATE, question=QUESTIONS.get(family, ""), level=f"{100 * LEVEL:.0f}", header=header, rows=rows,
                  kinds=kinds, family=family, src=ctx.src(path), infinite=non_finite(table, metrics),
                  sources=[(m, DIRECTIONS[up[m]], entries[m].get("source", "")) for m in metrics])


SECTIONS: tuple[Section, ...] = tuple(
    Section(f"no-truth-{f}", TITLES[f], partial(family_section, family=f), needs=("no_truth",)) for f in FAMILIES)
