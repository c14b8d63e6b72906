"""Section "Do LRP filters improve heatmaps?": the filter study against ground truth (paper 004's open question).

Needs ``lrp-filters.json`` (written by ``heatlab lrp-filters``): per filter and metric the paired
difference against no filter with its interval and verdict (the sentence and the effects table
follow those), and the per-(branch, filter) means (descriptive).
"""

from __future__ import annotations

from heatlab.report.page import ReportContext, Section
from heatlab.report.templates import number, render
from heatlab.run.lrp_filters import METRICS
from heatlab.run.rundir import RunDir

WHAT = {column: (what, higher) for _, column, what, higher in METRICS}

TEMPLATE = """\
{% from "macros.html" import table %}
<p>Paper 004 filters relevance between layers during LRP but had no ground truth to say whether that makes heatmaps \
better. Here the LRP heatmaps ({{ s.get("composite") }}, relevance from \
{{ "every logit" if s.get("start") == "all" else "the predicted logit" }}) of the <b>{{ s.get("split") }}</b> split \
({{ s.get("samples") }} samples, scored by each of {{ s.get("branches", [])|length }} branches) were computed with each \
filter applied at {{ s.get("layers", [])|join(", ") }} and scored against the ground truth like every other method.\
{% if s.get("maxpool") %} LRP through max-pooling: {{ s["maxpool"] }} (\
{{ "each window's relevance split in proportion to its inputs, as paper 004's code" if s["maxpool"] == "average" \
else "all of a window's relevance to its maximum" }}).{% endif %}</p>
{% if verdicts %}
<p>{% if design %}Every effect is the paired difference filter − none on the same sample and branch, averaged over \
{{ design["cells"] }} samples × {{ design["branches"] }} branches (n = {{ design["n"] }} pairs; {{ design["cells"] }} \
distinct samples, since the branches score the same samples), with a {{ level }}% seeded bootstrap interval that \
resamples {{ resampled }}. A filter is <i>better</i> or <i>worse</i> on a metric when the interval excludes 0 (lower FPR \
and MAE are better), else <i>tied</i>.{% endif %}</p>
<p class="rank">Against no filter: {% for f, said in verdicts %}<b>{{ f }}</b>: {{ said|join("; ") }}\
{% if not loop.last %}<br>{% endif %}{% endfor %}.</p>
{{ table(["filter", "metric", "better is", "filter − none [interval]", "verdict"], effects) }}
{% else %}
<p class="muted">This run's lrp-filters.json has no paired effects (an older heatlab); run <code>heatlab lrp-filters</code> \
again for them. The means below are descriptive.</p>
{% endif %}
<p class="muted">Means per branch and filter (descriptive; the verdicts above come from the paired intervals, not from \
these means):</p>
<div class="scroll">{{ table(means_header, means) }}</div>
"""


def _in_order(s: dict) -> list[str]:
    """The filters with effects, in the order they were asked for (the JSON's keys come back sorted)."""
    effects = s.get("effects", {})
    return [f for f in s.get("filters", []) if f in effects] + [f for f in effects if f not in s.get("filters", [])]


def _metrics(e: dict) -> list[str]:
    return [m for m in WHAT if m in e] + [m for m in e if m not in WHAT]


def _signed(x: float) -> str:
    return ("+" if x > 0 else "") + number(x)


def _effect(e: dict) -> str:
    return f"{_signed(e['difference'])} [{_signed(e['low'])}, {_signed(e['high'])}]"


def _listed(e: dict, metrics: list[str]) -> str:
    return ", ".join(f"{WHAT.get(m, (m,))[0]} {_effect(e[m])}" for m in metrics)


def verdicts(s: dict) -> list[tuple[str, list[str]]]:
    """Per filter, its clauses (as text): the metrics on which its interval says better, worse or tied."""
    out = []
    for f in _in_order(s):
        e, v = s["effects"][f], s["verdicts"][f]
        v = {kind: [m for m in _metrics(e) if m in v.get(kind, [])] for kind in ("better", "worse", "tied")}
        said = [f"better on {_listed(e, v['better'])}" if v["better"] else "",
                f"worse on {_listed(e, v['worse'])}" if v["worse"] else "",
                f"tied on {', '.join(WHAT.get(m, (m,))[0] for m in v['tied'])}" if v["tied"] else ""]
        out.append((f, [p for p in said if p]))
    return out


def effect_rows(s: dict) -> list[list[str]]:
    """The effects table's rows: filter, metric, which way is better, the effect with its interval, the verdict."""
    rows = []
    for f in _in_order(s):
        for m in _metrics(s["effects"][f]):
            e = s["effects"][f][m]
            what, higher = WHAT.get(m, (m, e.get("higher_is_better", True)))
            rows.append([f, what, "higher" if higher else "lower", _effect(e), e["verdict"]])
    return rows


def lrp_filters_section(ctx: ReportContext) -> str:
    s = RunDir(ctx.run_dir).stage_summary("lrp-filters") or {}
    means = s.get("means", {})
    if not means:
        return ""
    cols = list(next(iter(means.values())))
    rows = []
    order = {f: i for i, f in enumerate(s.get("filters", []))}  # "none" first, then as asked
    for key in sorted(means, key=lambda k: (k.split("/", 1)[0], order.get(k.split("/", 1)[1], len(order)))):
        branch, filt = key.split("/", 1)
        rows.append([branch, filt, *(number(means[key][c]) for c in cols)])
    d = s.get("design") or {}
    resampled = ("" if not d else
                 "the branches and the samples (the same samples for every branch)" if "branches" in d["interval"]
                 else "the samples, the same samples for every branch (with fewer than 3 branches the branches are "
                      "not resampled, so the interval shows the samples' spread only)")
    return render(TEMPLATE, s=s, design=d, resampled=resampled, level=f"{100 * d['level']:.0f}" if d else "",
                  verdicts=verdicts(s) if s.get("effects") else [], effects=effect_rows(s) if s.get("effects") else [],
                  means_header=["branch", "filter", *cols], means=rows)


SECTION = Section("lrp-filters", "Do LRP filters improve heatmaps?", lrp_filters_section, needs=("lrp-filters",))
