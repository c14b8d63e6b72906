"""Section "Training and accuracy per branch": the training curves and each branch's stop reason and
accuracies. Needs the training tables and model.json files every trained run has."""

from __future__ import annotations

from heatlab.errors import HeatlabError
from heatlab.report.page import ReportContext, Section, esc, fmt, note, table_html
from heatlab.report.training_figures import training_figure


def training_section(ctx: ReportContext) -> str:
    out = []
    try:
        path = training_figure(ctx.run_dir, ctx.figure_path("training.png"))
        out.append(ctx.img(path, "training curves", "Training loss of the base model and validation accuracy "
                                                    "of each branch during regular-evaluation training."))
    except HeatlabError as exc:
        out.append(note(f"No training curves: {exc}"))
    rows = []
    for branch in ctx.branches:
        meta = ctx.models.get(branch, {})
        rows.append([esc(branch), esc(meta.get("stop_reason", "–")), esc(meta.get("iterations", "–")),
                     fmt(meta.get("val_acc")), fmt(meta.get("test_acc"))])
    out.append(table_html(["branch", "stop reason", "iterations", "val_acc", "test_acc"], rows))
    return "\n".join(out)


SECTION = Section("training", "Training and accuracy per branch", training_section)
