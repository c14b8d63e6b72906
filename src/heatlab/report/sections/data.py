"""Section "Dataset preview": the first stored input of each class, with its ground truth.

The preview neither generates nor re-reads data: it draws the inputs (and truth) that
``heatlab evaluate`` stored with the gallery heatmaps of the evaluated split, so it works for every
image dataset (cells, image folders) alike. Table runs have no picture to show (their features are
charted in "Relevance per feature"), and runs without stored heatmaps leave the section out.
"""

from __future__ import annotations

from heatlab.errors import HeatlabError
from heatlab.report.gallery import inputs_figure
from heatlab.report.heatmaps import load_heatmaps
from heatlab.report.page import ReportContext, Section, note
from heatlab.report.templates import render


TRUTH = {"levels": " Ground truth below: white = irrelevant (0), light red = localisation (0.4), dark red = "
                    "discriminative feature (0.9).",
          "mask": " Ground-truth mask below (dark red inside)."}

TEMPLATE = """\
{% from "macros.html" import figure %}
{% call figure(src, "dataset preview") %}The first sample of each class (columns) in the <b>{{ split }}</b> split, as the model received it, from the inputs stored with the heatmaps.{{ truth }} Data: {{ data }}.{% endcall %}
"""


def preview_section(ctx: ReportContext) -> str:
    try:
        stored = load_heatmaps(ctx.run_dir, ctx.split, ctx.gallery_branch, ctx.heatmaps[0])
        path = inputs_figure(stored, ctx.class_names, ctx.figure_path("preview.png"))
    except HeatlabError as exc:
        return note(f"No dataset preview: {exc}")
    return render(TEMPLATE, src=ctx.src(path), split=ctx.split, truth=TRUTH.get(stored.truth_kind or "", ""),
                  data=ctx.config.get("data_root", "–"))


SECTION = Section("data", "Dataset preview", preview_section, needs=("image_heatmaps",))
