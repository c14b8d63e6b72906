"""Section "Augmentative eXplanation (CO score)": the AX figures, the gap numbers and Table 2.

Needs ``tables/co.parquet`` and ``tables/co_gap.parquet`` (written by ``heatlab ax``). Shows the
space h was added in, the attribution preset, the error test's grouping (correct before AX) and,
folded in ``<details>`` blocks, the histograms, the AUROC of every variant and the journal version's
grouping (correct after AX), and, when the run has it, Table 2's comparison line in the other space.
"""

from __future__ import annotations

import math

import pandas as pd
from markupsafe import Markup

from heatlab.errors import HeatlabError
from heatlab.report.co_figures import (
    AX_LABELS, VARIANTS, accuracy_frame, grouping_label, load_ax_tables, ordered, variant_label, write_ax_figures,
)
from heatlab.report.page import ReportContext, Section, attribution_text, note
from heatlab.report.sections.localisation import BOLD
from heatlab.report.templates import number, render
from heatlab.run.ax import ERROR_GROUPING, GROUPINGS

TABLE = '{% from "macros.html" import table %}{{ table(header, rows) }}'
ITALIC = "<i>{{ text }}</i>"
INFLATION = """\
In this run (raw x + h, mean AUROC over branches, before AX → after AX): {% for m, before, after in means %}\
{{ m }} {{ before|num }} → {{ after|num }}{% if not loop.last %}, {% endif %}{% endfor %}."""
BELOW_HALF = """\
<p class="note caveat">AUROC below 0.5 ({% for m, v, g, a in low %}<b>{{ m }}</b> with {{ v }}, {{ g }}: {{ a|num }}\
{% if not loop.last %}; {% endif %}{% endfor %}). There the CO score ranks wrong predictions above correct ones: as a \
detector of correct predictions it works backwards, so a high score points to a likely error, not a likely success, and \
its flag threshold (CO below it = likely error) flags the wrong side. The heatmap added this way helps the wrongly \
predicted class more than the true one.</p>"""
FIGURES = """\
{% from "macros.html" import figure %}
<div class="pair">{% for src, alt, caption in boxes %}{% call figure(src, alt) %}{{ caption }}{% endcall %}{% endfor %}</div>
<details><summary>CO histograms per method and variant</summary>
{% call figure(hist[0], hist[1]) %}{{ hist[2] }}{% endcall %}</details>"""
SPACE = "<b>{{ space }}</b> space: {{ note }}"
TEMPLATE = """\
{% from "macros.html" import figure %}
<p>Augmentative eXplanation (papers 000/001): each sample of the <b>{{ split }}</b> split is attributed to its \
<i>predicted</i> class, the heatmap h is divided by its largest magnitude, and the classifier sees x + h (or x · h). The \
CO score Σ<sub>j</sub> κ<sub>j</sub> [f(x + h) − f(x)]<sub>j</sub> (κ = 1 for the true class, −1/(C−1) for the others) \
is positive when the heatmap raised the true class; higher is better. The papers' finding is a <i>gap</i>: correct \
predictions score higher than wrong ones.</p>
<p>Every number and figure here is in the {{ space_text }}; {{ attribution }}.</p>
<p>Two groupings: the conference version (paper 000 v1) calls a sample correct when it was predicted correctly \
<i>before</i> AX; the journal version (v2) when it is predicted correctly <i>after</i> AX with the same variant. Only the \
first tests whether CO detects errors, so every error-detector number here (and in the headline) uses it. The second is \
shown as the journal version's reproduction and is not an error test: after AX the same logits decide both the group and \
the CO score, which inflates the AUROC. {{ inflation }}</p>
{% for label, what, best, high, worst, low in gaps %}
<p class="rank">Largest gap, {{ label }} (AUROC of the raw x + h score {{ what }}, mean over branches): \
<b>{{ best }}</b> {{ high|num }}; smallest: <b>{{ worst }}</b> {{ low|num }}.</p>
{% endfor %}
<p class="muted">AUROC 1 = every correct sample scores above every wrong one, 0.5 = no information, below 0.5 = wrong \
predictions score higher.</p>
{{ below_half }}
{{ error_figures }}
<details><summary>AUROC per variant and grouping, every method and branch</summary>
<h3>AUROC per variant and grouping</h3><div class="scroll">{{ auroc_table }}</div></details>
<h3>The gap in numbers (raw logits, x + h; correct before AX: the error test)</h3><p>Empty interval: the range between \
the groups when no score falls between them. Flag threshold: a sample whose CO is below it is flagged as a likely error \
(the journal's use: flag mislabelled samples); it was \
{% if holdout %}chosen on the <b>{{ holdout }}</b> split (maximising Youden's J) and measured on <b>{{ split }}</b>, so \
the threshold never saw the samples it is judged on{% else %}chosen and measured on <b>{{ split }}</b> (in-sample, \
optimistic){% endif %}. Flag precision = flagged samples that are wrong, flag recall = wrong samples that are flagged.</p>\
<div class="scroll">{{ gap_table }}</div>
<details><summary>The journal version's reproduction (correct after AX): its figures and numbers</summary>
<h3>The journal version's reproduction (raw logits, x + h; correct after AX)</h3><p>The same numbers grouped by the \
prediction after AX, as the journal version's figure does; not an error test (the post-AX logits decide both the group \
and the score), so no flag threshold is shown.</p><div class="scroll">{{ journal_table }}</div>
{{ journal_figures }}</details>
<div class="pair"><div><h3>Accuracy before and after AX</h3><p>Paper Table 2: the share of samples predicted correctly from x (before AX) and \
from x + h and x · h, in the {{ space }} space; bold where AX improved on it.{% if compare %} The last line is \
{{ compare[0] }} with h attributed and added in the <b>{{ compare[1] }}</b> space instead, for comparison: in the input \
space h is small next to standardised data, in the pixel space it is as large as the image.{% endif %}</p>\
<div class="scroll">{{ accuracy_table }}</div></div>
{% call figure(accuracy_src, "accuracy before and after AX", "fit") %}Accuracy after AX per method for {{ branch }} \
({{ space }} space); dashed: before AX.{% endcall %}</div>
"""


def gap_table_html(gap: pd.DataFrame, variant: str = "raw_sum", grouping: str = ERROR_GROUPING) -> Markup:
    """The gap numbers of ``variant`` per (method, branch) for one grouping as an HTML table.

    The flag threshold and its precision and recall are error-detector numbers, so only the
    before-AX grouping (:data:`heatlab.run.ax.ERROR_GROUPING`) shows them.
    """
    flags = grouping == ERROR_GROUPING
    rows = []
    for _, r in gap[(gap["variant"] == variant) & (gap["grouping"] == grouping)].iterrows():
        interval = "–" if math.isnan(r["interval_low"]) else f"({number(r['interval_low'])}, {number(r['interval_high'])})"
        rows.append([r["method"], r["branch"], number(r["auroc"]), number(r["median_correct"]),
                     number(r["median_wrong"]), interval,
                     *((number(r["threshold"]), number(r["flag_precision"]), number(r["flag_recall"])) if flags else ()),
                     f"{int(r['n_correct'])} / {int(r['n_wrong'])}", r["note"] or ""])
    return render(TABLE, header=["method", "branch", "AUROC", "median CO correct", "median CO wrong", "empty interval",
                                 *(("flag threshold", "flag precision", "flag recall") if flags else ()),
                                 "correct / wrong", "note"], rows=rows)


def inflation_html(gap: pd.DataFrame, variant: str = "raw_sum") -> Markup | str:
    """This run's mean AUROC over branches per method, before AX next to after AX (the circular grouping)."""
    rows = gap[gap["variant"] == variant]
    means = rows.groupby(["method", "grouping"], sort=False)["auroc"].mean().unstack("grouping")
    if not set(GROUPINGS) <= set(means.columns):
        return ""
    return render(INFLATION, means=[(m, r[ERROR_GROUPING], r["correct_after"]) for m, r in means.iterrows()])


def auroc_table_html(gap: pd.DataFrame) -> Markup:
    """AUROC per (method, branch, grouping) and variant; the highest of each column and grouping in bold."""
    wide = gap.pivot_table(index=["method", "branch", "grouping"], columns="variant", values="auroc", sort=False,
                           dropna=False)
    rows = []
    for (method, branch, grouping), r in wide.iterrows():
        cells = [method, branch, grouping_label(grouping, short=True)]
        same = wide.xs(grouping, level="grouping")
        for v in VARIANTS:
            value = r.get(v, math.nan)
            best = same[v].max() if v in same else math.nan
            cells.append(render(BOLD, value=value) if not math.isnan(value) and value == best else number(value))
        rows.append(cells)
    return render(TABLE, header=["method", "branch", "correct", *(variant_label(v) for v in VARIANTS)], rows=rows)


def accuracy_table_html(co: pd.DataFrame, compare: pd.DataFrame | None = None, space: str = "") -> Markup:
    """Paper Table 2: rows "before AX" then methods; per branch the accuracy after x + h and x · h.

    ``compare``: rows of one method in the other space, shown as one more line.
    """
    branches = ordered(co["branch"])
    per_branch = {b: accuracy_frame(co[co["branch"] == b]) for b in branches}
    methods = ordered(co["method"])
    header = [f"{b} {AX_LABELS[a]}" for b in branches for a in ("sum", "mult")]
    rows = [[render(ITALIC, text="before AX")] + [number(per_branch[b]["before"].iloc[0]) for b in branches for _ in range(2)]]
    lines = [(m, space, per_branch) for m in methods]
    if compare is not None and not compare.empty:
        other = {b: accuracy_frame(compare[compare["branch"] == b]) for b in branches}
        lines += [(m, str(compare["space"].iloc[0]), other) for m in ordered(compare["method"])]
    for method, where, frames in lines:
        cells = [method if frames is per_branch else render(ITALIC, text=f"{method}, {where} space")]
        for b in branches:
            acc = frames[b]
            for a in ("sum", "mult"):
                value = acc.loc[method, f"after_{a}"] if method in acc.index else math.nan
                better = not math.isnan(value) and value > per_branch[b]["before"].iloc[0]
                cells.append(render(BOLD, value=value) if better else number(value))
        rows.append(cells)
    return render(TABLE, header=["method", *header], rows=rows)


def below_half_html(gap: pd.DataFrame) -> Markup | str:
    """One sentence naming every (method, variant, grouping) whose mean AUROC over branches is below 0.5."""
    means = gap.groupby(["method", "variant", "grouping"], sort=False)["auroc"].mean().dropna()
    low = [(m, variant_label(v), grouping_label(g, short=True), a) for (m, v, g), a in means.items() if a < 0.5]
    return render(BELOW_HALF, low=low) if low else ""


def _figures(ctx: ReportContext, paths: dict, branch: str, grouping: str) -> Markup:
    """The CO boxplots (x + h, x · h) side by side and the CO histograms, for one grouping."""
    label = grouping_label(grouping)
    boxes = [(ctx.src(paths[f"box_sum_{grouping}"]), f"CO boxplots for x + h, {label}",
              f"Paper Fig. 2/3: CO scores with AX x + h on raw logits (top) and softmax (bottom) for {branch}, correct "
              "predictions in blue, wrong ones in orange; boxes span the quartiles, dots are samples. Each method's "
              f"AUROC is under its name. {label.capitalize()}."),
             (ctx.src(paths[f"box_mult_{grouping}"]), f"CO boxplots for x · h, {label}",
              f"The same for AX x · h. {label.capitalize()}.")]
    hist = (ctx.src(paths[f"hist_{grouping}"]), f"CO histograms, {label}",
            "Histograms of the CO scores per method (rows) and variant (columns), correct in blue and wrong in orange, "
            f"each group scaled to unit area so that a small group stays visible; dotted line at 0. {label.capitalize()}.")
    return render(FIGURES, boxes=boxes, hist=hist)


def _space_text(info: dict) -> Markup:
    space = info.get("space", "pixel")
    note_ = info.get("space_note") or ("h is added to the data as stored (pixel space)" if space == "pixel" else "")
    return render(SPACE, space=space, note=note_)


def ax_section(ctx: ReportContext) -> str:
    """The report section "Augmentative eXplanation (CO score)"; a note when ``heatlab ax`` has not run."""
    try:
        co, gap, info = load_ax_tables(ctx.run_dir)
    except HeatlabError as exc:
        return note(f"No AX results: {exc}")
    branches = ordered(co["branch"])
    branch = ctx.gallery_branch if ctx.gallery_branch in branches else branches[0]
    space = info["space"]
    paths = write_ax_figures(co, gap, ctx.fig_dir, branch=branch, space=space)
    gaps = []
    for grouping in GROUPINGS:
        main = gap[(gap["variant"] == "raw_sum") & (gap["grouping"] == grouping)]
        means = main.groupby("method", sort=False)["auroc"].mean().dropna()
        if not means.empty:
            what = ("as a detector of correct predictions" if grouping == ERROR_GROUPING
                    else "separating the after-AX groups; not an error test")
            gaps.append((grouping_label(grouping), what, means.idxmax(), means.max(), means.idxmin(), means.min()))
    compare = info.get("compare_rows")
    has_compare = compare is not None and not compare.empty
    return render(
        TEMPLATE, split=info["split"], holdout=info.get("holdout_split"), space=space, branch=branch,
        space_text=_space_text(info), attribution=attribution_text(info.get("attribution")),
        inflation=inflation_html(gap), gaps=gaps, below_half=below_half_html(gap),
        error_figures=_figures(ctx, paths, branch, ERROR_GROUPING),
        journal_figures=_figures(ctx, paths, branch, "correct_after"),
        auroc_table=auroc_table_html(gap), gap_table=gap_table_html(gap),
        journal_table=gap_table_html(gap, grouping="correct_after"),
        compare=(compare["method"].iloc[0], compare["space"].iloc[0]) if has_compare else None,
        accuracy_table=accuracy_table_html(co, compare, space), accuracy_src=ctx.src(paths["accuracy"]),
    )


SECTION = Section("ax", "Augmentative eXplanation (CO score)", ax_section, needs=("co", "co_gap"))
