"""Section "Augmentative eXplanation (CO score)": the AX figures, the gap numbers and Table 2.

Needs ``tables/co.parquet`` and ``tables/co_gap.parquet`` (written by ``heatlab ax``).
"""

from __future__ import annotations

import math

import pandas as pd

from heatlab.errors import HeatlabError
from heatlab.report.co_figures import (
    AX_LABELS, VARIANTS, accuracy_frame, load_ax_tables, ordered, variant_label, write_ax_figures,
)
from heatlab.report.page import ReportContext, Section, esc, fmt, note, table_html

def gap_table_html(gap: pd.DataFrame, variant: str = "raw_sum") -> str:
    """The gap numbers of ``variant`` per (method, branch) as an HTML table."""
    rows = []
    for _, r in gap[gap["variant"] == variant].iterrows():
        interval = "–" if math.isnan(r["interval_low"]) else f"({fmt(r['interval_low'])}, {fmt(r['interval_high'])})"
        rows.append([esc(r["method"]), esc(r["branch"]), fmt(r["auroc"]), fmt(r["median_correct"]),
                     fmt(r["median_wrong"]), interval, fmt(r["threshold"]), fmt(r["flag_precision"]),
                     fmt(r["flag_recall"]), f"{int(r['n_correct'])} / {int(r['n_wrong'])}", esc(r["note"] or "")])
    return table_html(["method", "branch", "AUROC", "median CO correct", "median CO wrong", "empty interval",
                       "flag threshold", "flag precision", "flag recall", "correct / wrong", "note"], rows)


def auroc_table_html(gap: pd.DataFrame) -> str:
    """AUROC per (method, branch) and variant; the highest of each column in bold."""
    wide = gap.pivot_table(index=["method", "branch"], columns="variant", values="auroc", sort=False, dropna=False)
    best = {v: wide[v].max() for v in VARIANTS if v in wide}
    rows = []
    for (method, branch), r in wide.iterrows():
        cells = [esc(method), esc(branch)]
        for v in VARIANTS:
            value = r.get(v, math.nan)
            cells.append(f"<b>{fmt(value)}</b>" if not math.isnan(value) and value == best[v] else fmt(value))
        rows.append(cells)
    return table_html(["method", "branch", *(esc(variant_label(v)) for v in VARIANTS)], rows)


def accuracy_table_html(co: pd.DataFrame) -> str:
    """Paper Table 2: rows "before AX" then methods; per branch the accuracy after x + h and x · h."""
    branches = ordered(co["branch"])
    per_branch = {b: accuracy_frame(co[co["branch"] == b]) for b in branches}
    methods = ordered(co["method"])
    header = ["method"] + [f"{esc(b)} {esc(AX_LABELS[a])}" for b in branches for a in ("sum", "mult")]
    rows = [["<i>before AX</i>"] + [fmt(per_branch[b]["before"].iloc[0]) for b in branches for _ in range(2)]]
    for method in methods:
        cells = [esc(method)]
        for b in branches:
            acc = per_branch[b]
            for a in ("sum", "mult"):
                value = acc.loc[method, f"after_{a}"] if method in acc.index else math.nan
                better = not math.isnan(value) and value > acc.loc[method, "before"]
                cells.append(f"<b>{fmt(value)}</b>" if better else fmt(value))
        rows.append(cells)
    return table_html(header, rows)


def ax_section(ctx: ReportContext) -> str:
    """The report section "Augmentative eXplanation (CO score)"; a note when ``heatlab ax`` has not run."""
    try:
        co, gap, info = load_ax_tables(ctx.run_dir)
    except HeatlabError as exc:
        return note(f"No AX results: {exc}")
    branches = ordered(co["branch"])
    branch = ctx.gallery_branch if ctx.gallery_branch in branches else branches[0]
    paths = write_ax_figures(co, gap, ctx.fig_dir, branch=branch)
    split, holdout = info["split"], info.get("holdout_split")
    main = gap[gap["variant"] == "raw_sum"].groupby("method", sort=False)["auroc"].mean().dropna()
    out = [
        f"<p>Augmentative eXplanation (papers 000/001): each sample of the <b>{esc(split)}</b> split is attributed "
        "to its <i>predicted</i> class, the heatmap h is divided by its largest magnitude, and the classifier sees "
        "x + h (or x · h). The CO score Σ<sub>j</sub> κ<sub>j</sub> [f(x + h) − f(x)]<sub>j</sub> (κ = 1 for the "
        "true class, −1/(C−1) for the others) is positive when the heatmap raised the true class; higher is "
        "better. The papers' finding is a <i>gap</i>: correct predictions score higher than wrong ones.</p>"
    ]
    if not main.empty:
        out.append(f"<p class=\"rank\">Largest gap (AUROC of the raw x + h score as a detector of correct "
                   f"predictions, mean over branches): <b>{esc(main.idxmax())}</b> {fmt(main.max())}; smallest: "
                   f"<b>{esc(main.idxmin())}</b> {fmt(main.min())}. AUROC 1 = every correct sample scores above "
                   "every wrong one, 0.5 = no information, below 0.5 = wrong predictions score higher.</p>")
    out.append(ctx.img(paths["box_sum"], "CO boxplots for x + h",
                       f"Paper Fig. 2/3: CO scores with AX x + h on raw logits (top) and softmax (bottom) for "
                       f"{esc(branch)}, correct predictions in blue, wrong ones in orange; boxes span the quartiles, "
                       "whiskers 1.5 IQR, dots are samples. Each method's AUROC is under its name."))
    out.append(ctx.img(paths["box_mult"], "CO boxplots for x · h", "The same for AX x · h."))
    out.append(ctx.img(paths["hist"], "CO histograms",
                       "Histograms of the CO scores per method (rows) and variant (columns), correct in blue and "
                       "wrong in orange, each group scaled to unit area so that a small group stays visible; "
                       "dotted line at 0."))
    threshold_text = (f"chosen on the <b>{esc(holdout)}</b> split (maximising Youden's J) and measured on "
                      f"<b>{esc(split)}</b>, so the threshold never saw the samples it is judged on"
                      if holdout else f"chosen and measured on <b>{esc(split)}</b> (in-sample, optimistic)")
    out.append("<h3>AUROC per variant</h3>" + auroc_table_html(gap))
    out.append(
        "<h3>The gap in numbers (raw logits, x + h)</h3><p>Empty interval: the range between the groups when "
        "no score falls between them. Flag threshold: a sample whose CO is below it is flagged as a likely "
        f"error (the journal's use: flag mislabelled samples); it was {threshold_text}. Flag precision = "
        "flagged samples that are wrong, flag recall = wrong samples that are flagged.</p>" + gap_table_html(gap)
    )
    out.append("<h3>Accuracy before and after AX</h3><p>Paper Table 2: the share of samples predicted correctly "
               "from x (before AX) and from x + h and x · h; bold where AX improved on it.</p>"
               + accuracy_table_html(co))
    out.append(ctx.img(paths["accuracy"], "accuracy before and after AX",
                       f"Accuracy after AX per method for {esc(branch)}; dashed: before AX."))
    return "\n".join(out)


SECTION = Section("ax", "Augmentative eXplanation (CO score)", ax_section, needs=("co", "co_gap"))
