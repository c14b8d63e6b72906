"""Section "Heatmap gallery" (paper 002, Fig. 5 and 6). Needs the image heatmaps evaluate stored
(``<run>/heatmaps/<split>/<branch>/<method>.safetensors``); with level truth the rows also show the
truth and the five bands, with a mask the mask, without truth the image and the heatmaps only.

The figures (one per class, each about 570 px tall) live on their own page, ``report/gallery.html``,
so that the index page stays short; the section on the index says what the gallery shows and links
each class.
"""

from __future__ import annotations

import functools

from heatlab.errors import HeatlabError
from heatlab.files import write_text
from heatlab.report.gallery import build_gallery
from heatlab.report.page import ReportContext, Section, class_name_of, note
from heatlab.report.templates import render


TEMPLATE = """\
{% from "macros.html" import figure %}
<p>Branch <b>{{ branch }}</b>; per class the first correctly and (if any) the first wrongly predicted sample of the <b>{{ split }}</b> split, attributed to the predicted class by heatlab evaluate. Columns: image, {{ truth }}the channels of the attribution (divided by its largest magnitude; blue negative, red positive), the channel-adjusted map h{{ bands }} (paper 002, Fig. 5 and 6).</p>
{% for label, name, src, verdicts in classes %}
<h3 id="class-{{ label }}">Class {{ label }}: {{ name }}</h3>
{% call figure(src, "gallery of class " ~ name) %}{% for verdict, actual, predicted in verdicts %}{{ verdict }}: true {{ actual }}, predicted {{ predicted }}{% if not loop.last %}; {% endif %}{% else %}no samples{% endfor %}{% endcall %}
{% endfor %}
"""

#: The gallery's own page, next to index.html.
GALLERY_PAGE = "gallery.html"

INDEX = """\
<p>The <a href="{{ page }}">heatmap gallery</a> (its own page) shows, for branch <b>{{ branch }}</b> and each of
{{ classes|length }} classes, the first correctly and the first wrongly predicted sample of the <b>{{ split }}</b>
split with the heatmaps of {{ methods|join(", ") }} (paper 002, Fig. 5 and 6).
Classes: {% for label, name, src, verdicts in classes %}<a href="{{ page }}#class-{{ label }}">{{ name }}</a>
({{ verdicts|map("first")|join(", ") or "no samples" }}){% if not loop.last %}, {% endif %}{% endfor %}.</p>
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
    body = render(TEMPLATE, branch=ctx.gallery_branch, split=ctx.split, truth=truth, bands=bands, classes=classes)
    page = ctx.page("gallery", GALLERY_PAGE, "Gallery (own page)")
    write_text(page, str(render("gallery.html", run_name=ctx.run_dir.name, run_path=ctx.run_dir.resolve(),
                                classes=classes, body=body)))
    return render(INDEX, page=ctx.src(page), branch=ctx.gallery_branch, split=ctx.split, classes=classes,
                  methods=ctx.heatmaps)


SECTION = Section("gallery", "Heatmap gallery", gallery_section, needs=("image_heatmaps",))
