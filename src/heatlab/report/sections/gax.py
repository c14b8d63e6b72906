"""Section "Generative AX (GAX)": CO against step, the outcome numbers and a link to the viewer page.

Needs ``<run>/gax/`` (written by ``heatlab gax``). Images link the slider viewer
(:func:`heatlab.report.gax_pages.build_gax_viewer`); table runs link the results page with the
final h per feature, which the same function writes for N×F inputs.
"""

from __future__ import annotations

import os

import numpy as np

from heatlab.errors import HeatlabError
from heatlab.report.gax_pages import build_gax_viewer, gax_figure, gax_warning
from heatlab.report.page import ReportContext, Section, note
from heatlab.report.templates import render
from heatlab.run.gax import load_gax_result

TEMPLATE = """\
{% from "macros.html" import figure %}
{{ warning }}
<p>Generative AX (papers 000/001): for the first {{ n }} correctly predicted {{ what }} of the
<b>{{ s["split"] }}</b> split ({{ s["branch"] }}), heatmaps h = tanh(w⊙x + b) were optimised with Adam
until the CO score of x + h reached {{ s["target_co"]|g }} or {{ s["max_steps"] }} steps passed.
<b>{{ reached }} of {{ n }}</b> ({{ share|pct }}) reached the target, in a median of
<b>{{ median }}</b> steps (of those that reached it); median final CO {{ final_co|num }}.</p>
{% call figure(fig, "GAX CO against step") %}Paper 001, Fig. 4: CO score against the optimisation step, one curve per
sample (blue: reached the target, orange: did not within the step cap); dashed: the target.{% endcall %}
{% if images %}
<p><a href="{{ link }}">Open the GAX viewer</a>: a slider over the optimisation steps of each image
with the R, G and B channels of h and their change since the previous stored step (paper Fig. 5A).</p>
{% else %}
<p><a href="{{ link }}">The GAX results per sample</a>: the final h over the features (the inputs are a table,
optimised in the [0, 1] min-max space of the training features).</p>
{% endif %}
"""


def gax_section(ctx: ReportContext) -> str:
    """The GAX part of the report: CO-vs-step figure, outcome numbers and a link to gax.html."""
    try:
        res = load_gax_result(ctx.run_dir)
        fig = gax_figure(ctx.run_dir, ctx.figure_path("gax_co.png"))
        viewer = build_gax_viewer(ctx.run_dir)
    except HeatlabError as exc:
        return note(f"No GAX result: {exc}")
    table = res.table
    reached = table["reached"].to_numpy(bool)
    steps = table.loc[reached, "steps_to_target"]
    return render(TEMPLATE, s=res.summary, warning=gax_warning(res),
                  n=len(table), what="images" if res.images.dim() == 4 else "samples",
                  reached=int(reached.sum()), share=float(reached.mean()),
                  median=f"{float(np.median(steps)):g}" if len(steps) else "–",
                  final_co=float(table["final_co"].median()), fig=ctx.src(fig), images=res.images.dim() == 4,
                  link=os.path.relpath(viewer, ctx.out_dir).replace(os.sep, "/"))


SECTION = Section("gax", "Generative AX (GAX)", gax_section, needs=("gax",))
