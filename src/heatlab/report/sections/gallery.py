"""Section "Heatmap gallery" (paper 002, Fig. 5 and 6). Needs the image heatmaps evaluate stored
(``<run>/heatmaps/<split>/<branch>/<method>.safetensors``); with level truth the rows also show the
truth and the five bands, with a mask the mask, without truth the image and the heatmaps only."""

from __future__ import annotations

import functools

from heatlab.errors import HeatlabError
from heatlab.report.gallery import build_gallery
from heatlab.report.page import ReportContext, Section, class_name_of, note
from heatlab.report.templates import render


TEMPLATE = """\
{% from "macros.html" import figure %}
<p>Branch <b>{{ branch }}</b>; per class the first correctly and (if any) the first wrongly predicted sample of the <b>{{ split }}</b> split, attributed to the predicted class by heatlab evaluate. Columns: image, {{ truth }}the channels of the attribution (divided by its largest magnitude; blue negative, red positive), the channel-adjusted map h{{ bands }} (paper 002, Fig. 5 and 6).</p>
{% for label, name, src, verdicts in classes %}
<h3>Class {{ label }}: {{ name }}</h3>
{% call figure(src, "gallery of class " ~ name) %}{% for verdict, actual, predicted in verdicts %}{{ verdict }}: true {{ actual }}, predicted {{ predicted }}{% if not loop.last %}; {% endif %}{% else %}no samples{% endfor %}{% endcall %}
{% endfor %}
"""


def gallery_section(ctx: ReportContext) -> str:
    try:
        written = build_gallery(
            ctx.run_dir, branch=ctx.gallery_branch, methods=ctx.heatmaps, split=ctx.split,
            class_names=ctx.class_names, out_dir=ctx.fig_dir, progress=ctx.progress,
        )
    except HeatlabError as exc:
        return note(f"No gallery: {exc}")
    truth = {"levels": "ground truth, ", "mask": "ground-truth mask, "}.get(ctx.evaluation.get("truth_kind") or "", "")
    bands = (", and its five bands at the first and the last standard soft threshold"
             if ctx.evaluation.get("truth_kind") == "levels" else "")
    name = functools.partial(class_name_of, ctx.class_names)
    classes = [(label, name(label), ctx.src(path),
                [("correct" if s.correct else "wrong", name(s.label), name(s.prediction)) for s in samples])
               for label, path, samples in written]
    return render(TEMPLATE, branch=ctx.gallery_branch, split=ctx.split, truth=truth, bands=bands, classes=classes)


SECTION = Section("gallery", "Heatmap gallery", gallery_section, needs=("image_heatmaps",))
