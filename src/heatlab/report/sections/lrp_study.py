"""Section "LRP during training (paper 004)": Mean Power per layer (Fig. 2) and filtered heatmaps (Fig. 3).

Needs ``<run>/lrp-study/lrp-study.json`` (``heatlab lrp-study --out RUN/lrp-study``; the demo writes it).
"""

from __future__ import annotations

from heatlab.report.lrp_figures import heatmap_grid_figure, mp_figure
from heatlab.report.page import ReportContext, Section, random_weights_note
from heatlab.report.templates import number, render
from heatlab.run.lrp_study import read_study_summary
from heatlab.run.rundir import StudyDir
from heatlab.tables import TABLES

TEMPLATE = """\
{% from "macros.html" import figure %}
{{ warning }}
<p>{{ settings["model"] }} trained on <b>{{ settings["data"] }}</b> for {{ s["iterations"] }} iterations (accuracy \
{{ s["final_accuracy"]|num }} on {{ settings["eval_samples"] }} test samples). Every {{ settings["every"] }} iterations \
one LRP pass ({{ settings["composite"] }}) recorded {{ where }} (start: {{ settings.get("start", "target") }}).\
{% if maxpool %} LRP through max-pooling: {{ maxpool }} (\
{{ "each window's relevance split in proportion to its inputs, as paper 004's code" if maxpool == "average" \
else "all of a window's relevance to its maximum, Zennit's default" }}).{% endif %} Its Mean Power (paper 004: the mean \
of the top 20% of |R| over the mean of the rest, per sign, averaged) went: {{ trend }}. The paper reports MP rising for \
SmallNet at 28 and 140 px (S1, S2), rising less for the 28 px AlexNet-like net (AL1) and falling for the 140 px one \
(AL2).</p>
<div class="pair">{% call figure(mp, "Mean Power per layer during training") %}Paper 004, Fig. 2: Mean Power per layer against iteration, \
mean ± one standard deviation over the evaluation samples; dashed: accuracy on them.{% endcall %}
{% call figure(grid, "LRP heatmaps per filter", "fit") %}Paper 004, Fig. 3: LRP heatmaps after training with each filter at \
{{ s["filter_layers"]|join(", ") }}. \
{% if settings.get("start") == "all" %}Relevance started at every logit (start='all'), as in the paper's code.\
{% else %}Relevance started at the predicted logit only; the paper's code started from all logits (--start all).\
{% endif %}{% endcall %}</div>
"""


def lrp_study_section(ctx: ReportContext) -> str:
    study = StudyDir(ctx.study_dir)
    s = read_study_summary(study.summary)
    settings = s["settings"]
    mp = mp_figure(TABLES["lrp_study"].read(study.table), ctx.figure_path("lrp_mp.png"),
                   model=settings["model"])
    grid = heatmap_grid_figure(study.heatmaps, ctx.figure_path("lrp_heatmaps.png"))
    trend = "; ".join(f"{layer} {number(t['start'])} → {number(t['end'])}" for layer, t in s["mp_trend"].items())
    points = s.get("mp_points")
    where = ("the relevance where paper 004's code records it, named as there (convb_k: the relevance entering block k; "
             + ", ".join(f"{k} = {'the input heatmap' if v == 'input' else f'{v} output'}" for k, v in points.items())
             + ")") if points else "the relevance at the first four convolutions"
    return render(TEMPLATE, s=s, settings=settings, where=where, trend=trend,
                  warning=random_weights_note(s.get("random_weights", False), f"{settings['model']} trained for 0 epochs"),
                  maxpool=s.get("maxpool", settings.get("maxpool")), mp=ctx.src(mp), grid=ctx.src(grid))


SECTION = Section("lrp-study", "LRP during training (paper 004)", lrp_study_section, needs=("lrp-study",))
