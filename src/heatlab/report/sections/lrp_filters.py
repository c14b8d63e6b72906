"""Section "Do LRP filters improve heatmaps?": the filter study against ground truth (paper 004's open question).

Needs ``lrp-filters.json`` (written by ``heatlab lrp-filters``): per (branch, filter) the mean
scores and which filters beat no filter.
"""

from __future__ import annotations

from heatlab.report.page import ReportContext, Section, esc, fmt, table_html
from heatlab.run.rundir import RunDir


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
        rows.append([esc(branch), esc(filt), *(fmt(means[key][c]) for c in cols)])
    verdicts = []
    for branch, better in s.get("better_than_none", {}).items():
        what = ", ".join(esc(f) for f in better) if better else "none of the filters"
        verdicts.append(f"<b>{esc(branch)}</b>: {what}")
    criterion = ("higher mean best precision <i>and</i> higher mean best recall (standard five-band variant)"
                 if "precision_best" in cols else "a higher mean AUC against every mask")
    return (
        f"<p>Paper 004 filters relevance between layers during LRP but had no ground truth to say whether that "
        f"makes heatmaps better. Here the LRP heatmaps ({esc(s.get('composite'))}, relevance from {'every logit' if s.get('start') == 'all' else 'the predicted logit'}) of the <b>{esc(s.get('split'))}"
        f"</b> split ({s.get('samples')} samples) were computed with each filter applied at "
        f"{esc(', '.join(s.get('layers', [])))} and scored against the ground truth like every other method."
        + (f" LRP through max-pooling: {esc(s['maxpool'])} ("
           + ("each window's relevance split in proportion to its inputs, as paper 004's code" if s["maxpool"] == "average"
              else "all of a window's relevance to its maximum") + ")." if s.get("maxpool") else "") + "</p>"
        f"<p class=\"rank\">Filters that beat no filter on {criterion}: {'; '.join(verdicts)}.</p>"
        + "<div class=\"scroll\">" + table_html(["branch", "filter", *(esc(c) for c in cols)], rows) + "</div>"
    )


SECTION = Section("lrp-filters", "Do LRP filters improve heatmaps?", lrp_filters_section, needs=("lrp-filters",))
