"""Section "Headline": which method is best for this model by each family of metrics, with
intervals over samples and branches, and the classifier's test accuracy with a warning when it is
near chance.

Families (each only when the run stored its table; the others get one short note):
five-band (``tables/five_band.parquet``, standard variant: best recall, best precision),
localisation (``tables/localisation.parquet``: AUC and relevance mass accuracy against the feature
mask) and CO/AX detection (``tables/co.parquet``: AUROC of the raw x + h CO score as a detector of
correct predictions, grouped by correct before AX), and one row per no-truth metric
(``tables/no_truth.parquet``, in family order, each in its own direction). Intervals, the tie rule
and the chance rule are :mod:`heatlab.score.intervals`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from markupsafe import Markup

from heatlab.errors import HeatlabError
from heatlab.report.co_figures import load_ax_tables
from heatlab.report.no_truth import FAMILIES as NO_TRUTH_FAMILIES, family_metrics, load_no_truth, method_intervals
from heatlab.report.page import ReportContext, Section
from heatlab.report.sections.localisation import in_range
from heatlab.report.templates import general, number, render
from heatlab.score.agreement import metric_entry
from heatlab.score.intervals import (
    CHANCE_MARGIN, LEVEL, WITHIN_BRANCHES, Interval, Pick, auroc_interval, chance_level, mean_interval, near_chance, pick_best,
)

#: (family, table, column, what the score is) of the per-sample rows.
PER_SAMPLE_SCORES = (
    ("five-band", "five_band", "recall_best", "recall, best over thresholds (standard variant)"),
    ("five-band", "five_band", "precision_best", "precision, best over thresholds (standard variant)"),
    ("localisation", "localisation", "auc/feature", "AUC against the feature mask"),
    ("localisation", "localisation", "relevance_mass_accuracy/feature", "relevance mass accuracy, feature mask"),
)
CO_SCORE = "AUROC of the CO score (raw logits, x + h) as a detector of correct predictions (correct before AX)"
FAMILIES = {"five-band": "five_band", "localisation": "localisation", "CO/AX detection": "co"}
MISSING = {"five-band": "needs ground truth with levels (heatlab evaluate)",
           "localisation": "needs ground-truth masks (heatlab evaluate)",
           "CO/AX detection": "needs heatlab ax"}


@dataclass(frozen=True)
class Row:
    """One line of the headline: the score, each method's interval and the verdict."""

    family: str
    score: str
    intervals: dict[str, Interval]
    pick: Pick
    details: dict[str, str] | None = None  # per method, e.g. the group sizes behind an AUROC
    higher_is_better: bool = True
    digits: str = ""  # a number format for scores of any scale (see interval_text)


def per_sample_row(table: pd.DataFrame, column: str, methods: list[str], family: str, what: str) -> Row:
    """The intervals of ``column``'s mean per method over the branches and samples of ``table``."""
    intervals = {}
    for m in methods:
        rows = table[table["method"] == m]
        groups = [g[column].to_numpy() for _, g in rows.groupby("branch", sort=False)]
        try:
            intervals[m] = mean_interval(groups, bounds=(0.0, 1.0))
        except HeatlabError:  # no value in any branch (e.g. only empty masks)
            continue
    return Row(family, what, intervals, pick_best(intervals))


def co_row(co: pd.DataFrame) -> Row:
    """AUROC intervals of the raw x + h CO score per method (positive = correct before AX)."""
    intervals, details = {}, {}
    for m in dict.fromkeys(co["method"]):
        rows = co[co["method"] == m]
        branches = [g for _, g in rows.groupby("branch", sort=False)]
        ok = [g["correct_before"].astype(bool).to_numpy() for g in branches]
        iv = auroc_interval([g["co_raw_sum"].to_numpy()[k] for g, k in zip(branches, ok)],
                            [g["co_raw_sum"].to_numpy()[~k] for g, k in zip(branches, ok)])
        if not math.isnan(iv.estimate):
            intervals[m] = iv
            n_ok = sum(int(k.sum()) for k in ok)
            details[m] = f"{n_ok} correct, {sum(len(k) for k in ok) - n_ok} wrong"
    return Row("CO/AX detection", CO_SCORE, intervals, pick_best(intervals), details)


def headline_rows(ctx: ReportContext) -> tuple[list[Row], list[str]]:
    """The headline's rows and one sentence per family or score the run lacks or cannot rank."""
    rows, notes = [], []
    for family, table_name, column, what in PER_SAMPLE_SCORES:
        table = getattr(ctx, table_name)
        if table.empty or column not in table:
            continue
        if table_name == "five_band":
            table = table[table["variant"] == "standard"]
        if not in_range(table[column]):
            notes.append(f"{what}: values outside [0, 1] (signed relevance), so its mean ranks nothing; see the "
                         "medians in the localisation table.")
            continue
        row = per_sample_row(table, column, ctx.methods, family, what)
        if row.intervals:
            rows.append(row)
    if ctx.has("co"):
        try:
            co, _, _ = load_ax_tables(ctx.run_dir)
        except HeatlabError as exc:
            notes.append(f"CO/AX detection: {exc}")
        else:
            row = co_row(co)
            if row.intervals:
                rows.append(row)
            else:
                notes.append("CO/AX detection: no branch had both correct and wrong predictions, so no AUROC.")
    rows += no_truth_rows(ctx)
    have = {r.family for r in rows}
    lacking = [f"{f} ({'the data has no ground truth for it' if ctx.has('evaluate') and t != 'co' else MISSING[f]})"
               for f, t in FAMILIES.items() if f not in have and not ctx.has(t)]
    if lacking:
        notes.append("Not in this run: " + "; ".join(lacking) + ".")
    return rows, notes


#: No-truth scores have any scale (an AOPC of 1e-4, an entropy of 5): 3 significant digits.
NO_TRUTH_DIGITS = ".3g"


def no_truth_rows(ctx: ReportContext) -> list[Row]:
    """One row per no-truth metric with a direction (family order), as its family section computes it."""
    if not ctx.has("no_truth"):
        return []
    table, rows = load_no_truth(ctx.run_dir), []
    for family in NO_TRUTH_FAMILIES:
        for metric in family_metrics(table, family):
            up = metric_entry(metric).get("higher_is_better")
            intervals = method_intervals(table, metric, ctx.methods)
            if up is None or not intervals:
                continue
            what = f"{metric} ({'higher' if up else 'lower'} is better; no ground truth)"
            rows.append(Row(family, what, intervals, pick_best(intervals, higher_is_better=up), higher_is_better=up,
                            digits=NO_TRUTH_DIGITS))
    return rows


def interval_text(iv: Interval, digits: str = "") -> str:
    """The estimate and its interval as text, e.g. "0.500 [0.400, 0.600]" ("[–]" when undefined);
    ``digits``: a format such as ".3g" (significant digits, for scores of any scale) instead of 3 decimals."""
    fmt = (lambda x: general(x, digits)) if digits else number
    if not iv.defined:
        return f"{fmt(iv.estimate)} [–]"
    return f"{fmt(iv.estimate)} [{fmt(iv.low)}, {fmt(iv.high)}]"


METHODS = """\
{% for m, interval, detail in ranked %}<span class="nw">{{ m }} {{ interval }}\
{% if detail is not none %} <span class="muted">({{ detail }})</span>{% endif %}</span>{% if not loop.last %}<br>{% endif %}\
{% endfor %}"""
ANSWER = """\
{% if pick.best is not none %}<b>{{ pick.best }}</b>{% if n == 1 %} (only method){% endif %}\
{% else %}tied: {% for m in pick.tied %}<b>{{ m }}</b>{% if not loop.last %}, {% endif %}{% endfor %}{% endif %}"""
ACCURACY = """\
{% if not accs %}
<p class="muted">Classifier test accuracy: not recorded in model.json.</p>
{%- else %}
<p class="accuracy">Classifier test accuracy (heatlab train, test split): \
{% for b, a in accs %}{{ b }} <b>{{ a|num }}</b>{% if not loop.last %}, {% endif %}{% endfor %}{{ chance }}.</p>
{%- if low %}
<p class="note warn">Warning: near chance ({% for b, a in low %}{{ b }} {{ a|num }}{% if not loop.last %}, {% endif %}\
{% endfor %}; the rule: test accuracy below {{ rule }}). The heatmaps explain a model that has barely learned the task, so \
the answers below say little about the methods; train longer or with other settings first.</p>
{%- endif %}
{%- endif %}"""
TEMPLATE = """\
{% from "macros.html" import table %}
{{ accuracy }}
{% if rows %}
{{ table(["family", "score (higher is better unless marked)", "best method", "mean [" ~ level ~ "% interval]", "interval"], rows, wrap=True) }}
<p class="muted">Intervals ({{ level }}%; the last column names the one each row used): a mean over samples gets, \
with three or more branches, a t interval over the branches' means (t with B − 1 degrees of freedom), which carries both \
the samples' and the branches' spread; with one or two branches (where t over two means would be 12.7 standard errors \
wide) a seeded percentile bootstrap over the samples within the branches (2,000 resamples; the samples drawn once per \
resample for every branch, since all scored the same samples). An AUROC gets, with two or more branches, a t interval \
over the branches' AUROCs; with one branch a seeded bootstrap over its samples (correct and wrong resampled \
separately). A bootstrap over samples cannot show how another branch would differ; every interval of a score \
that lies in [0, 1] is clipped to [0, 1]. A bootstrap interval from few correct or wrong samples is too narrow (their counts are shown). A method is named \
best only when its interval overlaps no other method's; otherwise the overlapping methods are <i>tied</i>.</p>
{% endif %}
{% for n in notes %}
<p class="muted">{{ n }}</p>
{% endfor %}
"""


def methods_html(row: Row) -> Markup:
    """Each method's estimate and interval, best first, one per line."""
    sign = 1.0 if row.higher_is_better else -1.0
    ranked = sorted(row.intervals.items(), key=lambda kv: -sign * kv[1].estimate)
    extra = row.details or {}
    return render(METHODS, ranked=[(m, interval_text(iv, row.digits), extra.get(m)) for m, iv in ranked])


def kind_text(iv: Interval) -> str:
    """Which interval ``iv`` is, with its sizes, e.g. "bootstrap over 40 samples within 2 branches"."""
    if iv.kind == "t over branches":
        return f"t over {iv.branches} branches"
    if iv.kind == WITHIN_BRANCHES:
        return f"bootstrap over {iv.samples} samples within {iv.branches} branch{'es' if iv.branches > 1 else ''}"
    return f"{iv.kind.split()[0]} over {iv.samples} samples, 1 branch"


def answer_html(pick: Pick, n: int) -> Markup:
    return render(ANSWER, pick=pick, n=n)


def accuracy_html(ctx: ReportContext) -> Markup:
    """The classifier's test accuracy per branch (model.json) and a warning when it is near chance."""
    k = len(ctx.class_names) or int(next(iter(ctx.models.values()), {}).get("spec", {}).get("num_classes", 0) or 0)
    accs = [(b, ctx.models.get(b, {}).get("test_acc")) for b in ctx.branches]
    accs = [(b, float(a)) for b, a in accs if a is not None]
    if not accs:
        return render(ACCURACY, accs=accs)
    # train records the share of the test split's most frequent class (chance on unbalanced data).
    stored = [ctx.models.get(b, {}).get("chance_acc") for b in ctx.branches]
    share = max((float(c) for c in stored if c is not None), default=None)
    base = max(share, chance_level(k)) if share is not None and k >= 2 else (chance_level(k) if k >= 2 else None)
    if k >= 2 and share is not None and share > chance_level(k) + 1e-9:
        chance = f"; {k} classes, chance (always the most frequent class) = {number(base)}"
        rule = f"chance {number(base)} + {CHANCE_MARGIN:g} = {number(base + CHANCE_MARGIN)}"
    else:
        chance = f"; {k} classes, chance 1/{k} = {number(chance_level(k))}" if k >= 2 else ""
        rule = f"1/K + {CHANCE_MARGIN:g} = {number(chance_level(k) + CHANCE_MARGIN)}" if k >= 2 else ""
    low = [(b, a) for b, a in accs if k >= 2 and near_chance(a, k, chance=share)]
    return render(ACCURACY, accs=accs, chance=chance, rule=rule, low=low)


def headline_section(ctx: ReportContext) -> str:
    rows, notes = headline_rows(ctx)
    cells = [[r.family, r.score, answer_html(r.pick, len(r.intervals)), methods_html(r),
              "; ".join(sorted({kind_text(iv) for iv in r.intervals.values()}))] for r in rows]
    return render(TEMPLATE, accuracy=accuracy_html(ctx), rows=cells, level=f"{100 * LEVEL:.0f}", notes=notes)


SECTION = Section("headline", "Headline", headline_section)
