"""Section "Heatmap gallery" (paper 002, Fig. 5 and 6). Needs the image heatmaps evaluate stored
(``<run>/heatmaps/<split>/<branch>/<method>.safetensors``); with level truth the rows also show the
truth and the five bands, with a mask the mask, without truth the image and the heatmaps only."""

from __future__ import annotations

from heatlab.errors import HeatlabError
from heatlab.report.gallery import build_gallery
from heatlab.report.page import ReportContext, Section, class_name_of, esc, note


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
    out = [f"<p>Branch <b>{esc(ctx.gallery_branch)}</b>; per class the first correctly and (if any) the first "
           f"wrongly predicted sample of the <b>{esc(ctx.split)}</b> split, attributed to the predicted class by "
           f"heatlab evaluate. Columns: image, {truth}the channels of the attribution (divided by its largest "
           f"magnitude; blue negative, red positive), the channel-adjusted map h{bands} (paper 002, Fig. 5 and 6).</p>"]
    for label, path, samples in written:
        name = class_name_of(ctx.class_names, label)
        verdicts = "; ".join(
            f"{'correct' if s.correct else 'wrong'}: true {esc(class_name_of(ctx.class_names, s.label))}, "
            f"predicted {esc(class_name_of(ctx.class_names, s.prediction))}" for s in samples
        )
        out.append(f"<h3>Class {label}: {esc(name)}</h3>")
        out.append(ctx.img(path, f"gallery of class {name}", verdicts or "no samples"))
    return "\n".join(out)


SECTION = Section("gallery", "Heatmap gallery", gallery_section, needs=("image_heatmaps",))
