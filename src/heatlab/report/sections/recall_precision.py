"""Section "Recall against precision" (paper 002, Fig. 3). Needs ``tables/five_band.parquet``."""

from __future__ import annotations

from heatlab.report.figures import CLAMP_ORDER_NOTE, recall_precision_figure
from heatlab.report.page import ReportContext, Section
from heatlab.report.templates import render


TEMPLATE = """\
{% from "macros.html" import figure %}
{% call figure(src, "recall against precision per method") %}Paper 002, Fig. 3: recall (y axis) against precision (x axis). Each point is one branch model with one method: the mean over the split's samples of the per-sample precision and recall, taken as the average (left) or the best (right) over the soft five-band thresholds; bars are ± one standard deviation over samples. Rows: the standard channel adjustment, then the clamp variant in both orders. {{ clamp_note }} Points towards the top right are better; an inset zooms in when the points crowd.{% endcall %}
"""


def recall_precision_section(ctx: ReportContext) -> str:
    path = recall_precision_figure(ctx.five_band, ctx.figure_path("recall_precision.png"), methods=ctx.methods)
    return render(TEMPLATE, src=ctx.src(path), clamp_note=CLAMP_ORDER_NOTE)


SECTION = Section("recall-precision", "Recall against precision", recall_precision_section, needs=("five_band",))
