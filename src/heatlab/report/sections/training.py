"""Section "Training and accuracy per branch": the training curves and each branch's stop reason and
accuracies. Needs the training tables and model.json files every trained run has."""

from __future__ import annotations

from heatlab.errors import HeatlabError
from heatlab.report.page import ReportContext, Section, note
from heatlab.report.templates import number, render
from heatlab.report.training_figures import training_figure


TEMPLATE = """\
{% from "macros.html" import figure, table %}
{% if src %}
{% call figure(src, "training curves") %}Training loss of the base model and validation accuracy of each branch during regular-evaluation training.{% endcall %}
{% else %}
{{ problem }}
{% endif %}
{{ table(["branch", "stop reason", "iterations", "val_acc", "test_acc"], rows) }}
"""


def training_section(ctx: ReportContext) -> str:
    src, problem = None, ""
    try:
        src = ctx.src(training_figure(ctx.run_dir, ctx.figure_path("training.png")))
    except HeatlabError as exc:
        problem = note(f"No training curves: {exc}")
    rows = []
    for branch in ctx.branches:
        meta = ctx.models.get(branch, {})
        rows.append([branch, meta.get("stop_reason", "–"), meta.get("iterations", "–"),
                     number(meta.get("val_acc")), number(meta.get("test_acc"))])
    return render(TEMPLATE, src=src, problem=problem, rows=rows)


SECTION = Section("training", "Training and accuracy per branch", training_section)
