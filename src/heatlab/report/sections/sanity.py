"""Section "Sanity check: model randomisation" (Adebayo et al. 2018): which methods' heatmaps change
when the model's weights are randomised. Needs ``tables/no_truth.parquet`` with ``mprt`` or ``smprt``
(the Spearman rank correlation between the heatmap of the trained model and that of the model with
every layer randomised; lower is better).

A method **passes** when the upper end of its mean correlation's 95% interval is below
:data:`THRESHOLD`, **fails** when the lower end is at or above it, and is **unclear** otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from heatlab.report.no_truth import DIRECTIONS, load_no_truth, method_intervals, undefined
from heatlab.report.page import ReportContext, Section
from heatlab.report.sections.headline import interval_text, kind_text
from heatlab.report.templates import render
from heatlab.score.agreement import metric_entry
from heatlab.score.intervals import LEVEL, Interval

#: The randomisation tests read here: rank correlations between trained- and random-weight heatmaps.
TESTS = ("mprt", "smprt")
#: Pass below this mean rank correlation. Independent heatmaps give 0 and identical ones 1; at 0.5 the
#: heatmap of random weights still keeps half of the ranking, the usual edge of a "strong" correlation,
#: so what is left is mostly what does not depend on the weights (the input's edges).
THRESHOLD = 0.5

TEMPLATE = """\
{% from "macros.html" import table %}
<p>The sanity check users expect (Adebayo et al. 2018, “Sanity checks for saliency maps”): a heatmap that explains the \
model must change when the model's weights are replaced by random ones. Scored by {{ tests|join(" and ") }}: the \
Spearman rank correlation between each sample's heatmap of the trained model and its heatmap of the same model with \
every layer randomised (0: unrelated, 1: unchanged; lower is better). A method <b>passes</b> when the upper end of \
its mean's {{ level }}% interval lies below {{ threshold }}, <b>fails</b> when the lower end lies at or above it, and is \
<i>unclear</i> otherwise. Why {{ threshold }}: independent heatmaps give 0 and identical ones 1; at {{ threshold }} the \
random model's heatmap still keeps half of the ranking, the usual edge of a strong correlation, so what is left is \
mostly what does not depend on the weights (the input's edges, as Adebayo et al. found for Guided Backprop). \
Passing is necessary, not sufficient: the Random control passes by construction (its noise is seeded by the model's \
parameters, so random weights get other noise).</p>
{{ table(header, rows) }}
<p class="muted">Passing: {{ passing|join(", ") if passing else "none" }}. Intervals: {{ kinds|join("; ") }}. \
{% for name, direction, source in sources %}{{ name }} ({{ direction }}): {{ source }}{% if not loop.last %}; {% endif %}{% endfor %}.</p>
{% include "no_truth_undefined.html" %}
"""


@dataclass(frozen=True)
class Sanity:
    """The randomisation tests a run scored (``tests``), per test and method the mean's interval
    (``stats``), per method its verdict per test (``verdicts``, "–" where it has no score) and overall
    (``overall``: "pass" when every test passes, "fail" when any fails, else "unclear"), and the
    tests' undefined values (:func:`~heatlab.report.no_truth.undefined`)."""

    tests: list[str]
    stats: dict[str, dict[str, Interval]]
    verdicts: dict[str, list[str]]
    overall: dict[str, str]
    undefined: dict[str, dict[str, int]]


def verdict(iv: Interval, threshold: float = THRESHOLD) -> str:
    """"pass" (interval below ``threshold``), "fail" (at or above it) or "unclear" (it straddles, or is undefined
    and the mean is not decisive)."""
    low, high = (iv.low, iv.high) if iv.defined else (iv.estimate, iv.estimate)
    return "pass" if high < threshold else "fail" if low >= threshold else "unclear"


def sanity_check(ctx: ReportContext) -> Sanity | None:
    """The run's randomisation tests read against :data:`THRESHOLD` (None when it scored none)."""
    table = load_no_truth(ctx.run_dir)
    tests = [t for t in TESTS if t in set(table["metric"])]
    if not tests:
        return None
    stats = {t: method_intervals(table, t, ctx.methods) for t in tests}
    methods = list(dict.fromkeys(m for s in stats.values() for m in s))
    verdicts = {m: [verdict(stats[t][m]) if m in stats[t] else "–" for t in tests] for m in methods}
    overall = {m: "fail" if "fail" in v else "unclear" if "unclear" in v else "pass" for m, v in verdicts.items()}
    return Sanity(tests, stats, verdicts, overall, undefined(table, tests))


def sanity_section(ctx: ReportContext) -> str:
    check = sanity_check(ctx)
    if check is None:
        return ""
    rows = []
    for m, verdicts in check.verdicts.items():
        cells = [m]
        for t, v in zip(check.tests, verdicts):
            cells += [interval_text(check.stats[t][m]) if m in check.stats[t] else "–", v]
        rows.append(cells)
    tests = check.tests
    header = ["method", *(h for t in tests for h in (f"{t}: mean [{100 * LEVEL:.0f}% interval]", f"{t}: verdict"))]
    kinds = sorted({kind_text(iv) for s in check.stats.values() for iv in s.values()})
    passing = [m for m, v in check.overall.items() if v == "pass"]
    return render(TEMPLATE, tests=tests, level=f"{100 * LEVEL:.0f}", threshold=THRESHOLD, header=header, rows=rows,
                  passing=passing, kinds=kinds, undefined=check.undefined,
                  sources=[(t, DIRECTIONS[metric_entry(t).get("higher_is_better")], metric_entry(t).get("source", ""))
                           for t in tests])


SECTION = Section("sanity", "Sanity check: model randomisation", sanity_section, needs=("no_truth",))
