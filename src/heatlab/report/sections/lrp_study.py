"""Section "LRP during training (paper 004)": Mean Power per layer (Fig. 2) and filtered heatmaps (Fig. 3).

Needs ``<run>/lrp-study/lrp-study.json`` (``heatlab lrp-study --out RUN/lrp-study``; the demo writes it).
"""

from __future__ import annotations

import pandas as pd

from heatlab.report.lrp_figures import heatmap_grid_figure, mp_figure
from heatlab.report.page import ReportContext, Section, esc, fmt
from heatlab.run.lrp_study import read_study_summary
from heatlab.run.rundir import StudyDir


def lrp_study_section(ctx: ReportContext) -> str:
    study = StudyDir(ctx.study_dir)
    s = read_study_summary(study.summary)
    settings = s["settings"]
    mp = mp_figure(pd.read_parquet(study.table), ctx.figure_path("lrp_mp.png"),
                   model=settings["model"])
    grid = heatmap_grid_figure(study.heatmaps, ctx.figure_path("lrp_heatmaps.png"))
    start_note = ("Relevance started at every logit (start='all'), as in the paper's code." if settings.get("start") == "all"
                  else "Relevance started at the predicted logit only; the paper's code started from all logits "
                  "(--start all).")
    trend = "; ".join(f"{esc(layer)} {fmt(t['start'])} → {fmt(t['end'])}" for layer, t in s["mp_trend"].items())
    points = s.get("mp_points")
    where = ("the relevance where paper 004's code records it, named as there (convb_k: the relevance entering block k; "
             + ", ".join(f"{esc(k)} = {'the input heatmap' if v == 'input' else esc(v) + ' output'}" for k, v in points.items())
             + ")") if points else "the relevance at the first four convolutions"
    maxpool = s.get("maxpool", settings.get("maxpool"))
    pool_note = (f" LRP through max-pooling: {esc(maxpool)} ("
                 + ("each window's relevance split in proportion to its inputs, as paper 004's code" if maxpool == "average"
                    else "all of a window's relevance to its maximum, Zennit's default") + ").") if maxpool else ""
    return (
        f"<p>{esc(settings['model'])} trained on <b>{esc(settings['data'])}</b> for {esc(s['iterations'])} iterations "
        f"(accuracy {fmt(s['final_accuracy'])} on {esc(settings['eval_samples'])} test samples). Every "
        f"{esc(settings['every'])} iterations one LRP pass ({esc(settings['composite'])}) recorded {where} "
        f"(start: {esc(settings.get('start', 'target'))}).{pool_note} Its Mean Power (paper 004: the mean of the top 20% of |R| over the mean of the "
        f"rest, per sign, averaged) went: {trend}. The paper reports MP rising for SmallNet at 28 and 140 px (S1, S2), "
        "rising less for the 28 px AlexNet-like net (AL1) and falling for the 140 px one (AL2).</p>"
        + ctx.img(mp, "Mean Power per layer during training",
                  "Paper 004, Fig. 2: Mean Power per layer against iteration, mean ± one standard deviation over the "
                  "evaluation samples; dashed: accuracy on them.")
        + ctx.img(grid, "LRP heatmaps per filter",
                  f"Paper 004, Fig. 3: LRP heatmaps after training with each filter at "
                  f"{esc(', '.join(s['filter_layers']))}. " + start_note)
    )


SECTION = Section("lrp-study", "LRP during training (paper 004)", lrp_study_section, needs=("lrp-study",))
