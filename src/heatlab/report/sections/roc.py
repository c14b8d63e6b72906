"""Section "ROC per method" (paper 002, Fig. 4, axes as defined). Needs ``tables/roc.parquet``."""

from __future__ import annotations

from heatlab.report.figures import CLAMP_ORDER_NOTE, roc_figure
from heatlab.report.page import ReportContext, Section
from heatlab.report.templates import render


TEMPLATE = """\
{% from "macros.html" import figure %}
{% call figure(src, "ROC per method") %}Paper 002, Fig. 4, with the axes of the definition: false positive rate on the x axis, recall on the y axis (the original code had them swapped). Each curve joins the means over samples at each soft threshold for one (method, branch); the marker is the first threshold. Dashed: chance diagonal. Curves need not reach (0, 0) or (1, 1) because the five bands move together. Panels: standard, then the clamp variant in both orders. {{ clamp_note }}{% endcall %}
"""


def roc_section(ctx: ReportContext) -> str:
    path = roc_figure(ctx.roc, ctx.figure_path("roc.png"), methods=ctx.methods)
    return render(TEMPLATE, src=ctx.src(path), clamp_note=CLAMP_ORDER_NOTE)


SECTION = Section("roc", "ROC per method", roc_section, needs=("roc",))
