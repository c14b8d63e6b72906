"""`heatlab report RUN`: one self-contained HTML page about an evaluated run.

The page is a list of :class:`Section` objects, each a title plus a builder that turns a
:class:`ReportContext` (the run's tables, model records and output folders) into an HTML
fragment; :func:`build_report` runs them in order, writes their figures under
``<run>/report/figures/`` and writes ``<run>/report/index.html`` last. To add a section, pass
``sections=[*DEFAULT_SECTIONS, Section("my-id", "My title", my_builder)]``.

Every text that comes from data (class, method, branch names, paths, messages) is escaped; images
are referenced by relative paths; the page loads nothing from the network.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from heatlab.errors import HeatlabError
from heatlab.files import ensure_dir, read_json, write_text
from heatlab.progress import Progress, report
from heatlab.report.gallery import branch_label

TABLES = ("five_band", "roc", "localisation")
ID_COLUMNS = ("branch", "method", "shard", "index", "label", "prediction", "correct")
REQUIRED_COLUMNS = {
    "five_band": (*ID_COLUMNS, "variant", "precision_avg", "precision_best", "recall_avg", "recall_best"),
    "roc": ("branch", "method", "variant", "threshold", "fpr", "recall"),
    "localisation": ID_COLUMNS,
}
METRIC_SOURCES = {
    "pointing_game": "Zhang et al. 2018, “Top-down neural attention by excitation backprop”, IJCV",
    "relevance_mass": "Arras et al. 2022, “CLEVR-XAI: a benchmark dataset for the ground truth evaluation of "
                      "neural network explanations”, Information Fusion",
    "relevance_rank": "Arras et al. 2022 (relevance rank accuracy, same paper)",
    "auc": "Fawcett 2006, “An introduction to ROC analysis”, Pattern Recognition Letters",
}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#fff;line-height:1.45}
header{background:#24292f;color:#fff;padding:14px 28px}header h1{margin:0;font-size:1.35em}
header p{margin:4px 0 0;color:#c9d1d9;font-size:.9em;word-break:break-all}
nav{padding:8px 28px;background:#f6f8fa;border-bottom:1px solid #d0d7de;font-size:.9em}
nav a{margin-right:14px;color:#0969da;text-decoration:none}
main{padding:0 28px 40px;max-width:1200px}
section{border-bottom:1px solid #eaeef2;padding:10px 0 18px}
h2{font-size:1.2em;margin:18px 0 8px}
figure{margin:10px 0}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{font-size:.88em;color:#57606a;max-width:900px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.88em;margin:8px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right}td{white-space:nowrap}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
.note{color:#9a6700;background:#fff8c5;border:1px solid #eac54f;padding:6px 10px;border-radius:4px}
.rank{margin:6px 0}.muted{color:#57606a;font-size:.88em}
"""


def esc(value: object) -> str:
    """HTML-escape any value's text (quotes included)."""
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """A number with 3 decimals; NaN or None as an en dash; anything else as escaped text."""
    if value is None or isinstance(value, bool):
        return "–" if value is None else esc(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return esc(value)
    return "–" if math.isnan(x) else f"{x:.3f}"


@dataclass
class ReportContext:
    """What a section builder may use. Tables are the DataFrames of ``<run>/tables``."""

    run_dir: Path
    out_dir: Path
    fig_dir: Path
    config: dict
    evaluation: dict
    five_band: pd.DataFrame
    roc: pd.DataFrame
    localisation: pd.DataFrame
    branches: list[str]
    models: dict[str, dict]
    class_names: list[str]
    methods: list[str]
    split: str
    gallery_branch: str
    progress: Progress | None = None

    def figure_path(self, name: str) -> Path:
        """Where a section writes figure ``name`` (a fixed file name chosen by the code)."""
        return self.fig_dir / name

    def img(self, path: Path, alt: str, caption: str) -> str:
        """A ``<figure>`` for ``path`` (inside the report folder) with an escaped alt and a caption (HTML)."""
        src = path.relative_to(self.out_dir).as_posix()
        return f'<figure><img src="{esc(src)}" alt="{esc(alt)}"><figcaption>{caption}</figcaption></figure>'


@dataclass(frozen=True)
class Section:
    """One part of the page: an anchor id, a title, and a builder returning an HTML fragment."""

    id: str
    title: str
    build: Callable[[ReportContext], str]
    #: context tables the section draws from; it is left out of the page when one is empty
    needs: tuple[str, ...] = ()


def note(message: str) -> str:
    """An escaped notice shown in place of a part that could not be drawn."""
    return f'<p class="note">{esc(message)}</p>'


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table from already-escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


# --- numbers used by the summary -------------------------------------------------------------

def rank_methods(df: pd.DataFrame, column: str, methods: Sequence[str]) -> list[tuple[str, float, int]]:
    """(method, mean of ``column`` over non-NaN rows, count) sorted by mean, highest first.

    Ties keep the order of ``methods``; methods without any non-NaN value come last.
    """
    stats = []
    for method in methods:
        values = df.loc[df["method"] == method, column].dropna()
        stats.append((method, float(values.mean()) if len(values) else math.nan, len(values)))
    # sorted() is stable, so equal means keep the order of ``methods``.
    return sorted(stats, key=lambda s: (math.isnan(s[1]), -s[1] if not math.isnan(s[1]) else 0.0))


def branch_accuracy(five_band: pd.DataFrame) -> list[tuple[str, float, int]]:
    """(branch, fraction of correctly predicted samples, samples) from the evaluated rows."""
    out = []
    for branch, rows in five_band.groupby("branch", sort=False):
        samples = rows.drop_duplicates(["shard", "index"])
        out.append((str(branch), float(samples["correct"].astype(bool).mean()), len(samples)))
    return out


def _ranking_sentence(what: str, ranked: list[tuple[str, float, int]]) -> str:
    parts = [f"<b>{esc(m)}</b> {fmt(v)}" for m, v, _ in ranked]
    return f'<p class="rank">{what}: ' + " &gt; ".join(parts) + ".</p>"


# --- sections ----------------------------------------------------------------------------------

def overview_section(ctx: ReportContext) -> str:
    """What the run holds: data, what evaluate computed or skipped, and which stages ran."""
    ev = ctx.evaluation
    data = ctx.config.get("data_root", "–")
    kind = {"image": "images", "table": "a table"}.get(ev.get("input_kind"), "–")
    out = [f"<p>Data: <b>{esc(data)}</b> ({esc(kind)}); {len(ctx.branches)} branch model(s).</p>"]
    if ev:
        tables = ", ".join(esc(t) for t in ev.get("tables", [])) or "none"
        out.append(f"<p>heatlab evaluate explained the <b>{esc(ev.get('split'))}</b> split with "
                   f"{len(ev.get('methods', []))} method(s); score tables: {tables}.</p>")
        out += [note(str(sentence)) for sentence in ev.get("skipped", [])]
    else:
        out.append(note(f"heatlab evaluate has not run on this run; run `heatlab evaluate {ctx.run_dir}` for heatmap scores."))
    return "\n".join(out)


def summary_section(ctx: ReportContext) -> str:
    fb = ctx.five_band
    standard = fb[fb["variant"] == "standard"]
    n_samples = len(fb.drop_duplicates(["branch", "shard", "index"]))
    out = [
        f"<p>{len(ctx.methods)} attribution method(s) were scored on the <b>{esc(ctx.split)}</b> split for "
        f"{len(fb['branch'].unique())} branch model(s), {n_samples} (branch, sample) pairs in all. "
        "Scores compare each heatmap, after channel adjustment and five-band stratification, with the "
        "ground truth; for every score below, higher is better.</p>"
    ]
    recall = rank_methods(standard, "recall_best", ctx.methods)
    precision = rank_methods(standard, "precision_best", ctx.methods)
    auc = rank_methods(ctx.localisation, "auc/feature", ctx.methods) if "auc/feature" in ctx.localisation else []
    out.append(_ranking_sentence("Ranked by mean best recall (standard variant, all branches and samples)", recall))
    if recall:
        out.append(f"<p>{esc(recall[0][0])} finds the largest share of the truth's localisation and feature pixels "
                   f"with the right band; {esc(recall[-1][0])} the smallest.</p>")
    out.append(_ranking_sentence("Ranked by mean best precision (standard variant, all branches and samples)", precision))
    if precision:
        out.append(f"<p>The pixels {esc(precision[0][0])} marks are most often in the truth's band; "
                   f"those of {esc(precision[-1][0])} least often.</p>")
    if auc:
        out.append(_ranking_sentence("Ranked by mean AUC of the adjusted heatmap against the feature mask "
                                     "(localisation table, samples with an empty mask left out)", auc))
    acc = branch_accuracy(fb)
    acc_text = ", ".join(
        f"{esc(b)} {fmt(a)} ({n} samples; test_acc {fmt(ctx.models.get(b, {}).get('test_acc'))} at training)"
        for b, a, n in acc
    )
    out.append(f"<p>Classifier accuracy on the {esc(ctx.split)} split, per branch: {acc_text}.</p>")
    return "\n".join(out)


def preview_section(ctx: ReportContext) -> str:
    from heatlab.report.preview import preview_figure

    from heatlab.data.registry import is_cell_folder

    root = ctx.config.get("data_root")
    if not root:
        return note("No dataset preview: config.json names no data_root.")
    if not is_cell_folder(root):
        return ""  # the preview grid draws the cells' classes and backgrounds
    try:
        path = preview_figure(root, ctx.figure_path("preview.png"))
    except HeatlabError as exc:
        return note(f"No dataset preview: {exc}")
    return ctx.img(path, "dataset preview",
                   f"Cells of each class (columns) on each background (rows), ground truth below: white = "
                   f"irrelevant (0), light red = localisation (0.4), dark red = discriminative feature (0.9). "
                   f"Data: {esc(root)}.")


def training_section(ctx: ReportContext) -> str:
    from heatlab.report.training_figures import training_figure

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


def recall_precision_section(ctx: ReportContext) -> str:
    from heatlab.report.figures import recall_precision_figure

    path = recall_precision_figure(ctx.five_band, ctx.figure_path("recall_precision.png"), methods=ctx.methods)
    return ctx.img(path, "recall against precision per method",
                   "Paper 002, Fig. 3: recall (y axis) against precision (x axis). Each point is one branch model "
                   "with one method: the mean over the split's samples of the per-sample precision and recall, "
                   "taken as the average (A, C) or the best (B, D) over the soft five-band thresholds; bars are "
                   "± one standard deviation over samples. (A, B) standard channel adjustment, (C, D) the clamp "
                   "variant. Points towards the top right are better; an inset zooms in when the points crowd.")


def roc_section(ctx: ReportContext) -> str:
    from heatlab.report.figures import roc_figure

    path = roc_figure(ctx.roc, ctx.figure_path("roc.png"), methods=ctx.methods)
    return ctx.img(path, "ROC per method",
                   "Paper 002, Fig. 4, with the axes of the definition: false positive rate on the x axis, recall "
                   "on the y axis (the original code had them swapped). Each curve joins the means over samples at "
                   "each soft threshold for one (method, branch); the marker is the first threshold. Dashed: "
                   "chance diagonal. Curves need not reach (0, 0) or (1, 1) because the five bands move together.")


def gallery_section(ctx: ReportContext) -> str:
    from heatlab.report.gallery import build_gallery, class_name_of

    try:
        written = build_gallery(
            ctx.run_dir, ctx.five_band, branch=ctx.gallery_branch, methods=ctx.methods, split=ctx.split,
            class_names=ctx.class_names, out_dir=ctx.fig_dir, progress=ctx.progress,
        )
    except HeatlabError as exc:
        return note(f"No gallery: {exc}")
    out = [f"<p>Branch <b>{esc(ctx.gallery_branch)}</b>; per class the first correctly and (if any) the first "
           "wrongly predicted sample of the split, attributed to the predicted class. Columns: image, ground truth, "
           "the R, G, B channels of the attribution (divided by its largest magnitude; blue negative, red positive), "
           "the channel-adjusted map h, and its five bands at the first and the last standard soft threshold "
           "(paper 002, Fig. 5 and 6).</p>"]
    for label, path, samples in written:
        name = class_name_of(ctx.class_names, label)
        verdicts = "; ".join(
            f"{'correct' if s.correct else 'wrong'}: true {esc(class_name_of(ctx.class_names, s.label))}, "
            f"predicted {esc(class_name_of(ctx.class_names, s.prediction))}" for s in samples
        )
        out.append(f"<h3>Class {label}: {esc(name)}</h3>")
        out.append(ctx.img(path, f"gallery of class {name}", verdicts or "no samples"))
    return "\n".join(out)


def localisation_section(ctx: ReportContext) -> str:
    loc = ctx.localisation
    metrics = [c for c in loc.columns if c not in ID_COLUMNS]
    if not metrics:
        return note("The localisation table has no metric columns; run `heatlab evaluate RUN` again.")
    means = {m: {c: loc.loc[loc["method"] == m, c].mean() for c in metrics} for m in ctx.methods}
    best = {c: max((means[m][c] for m in ctx.methods if not math.isnan(means[m][c])), default=math.nan)
            for c in metrics}
    rows = []
    for m in ctx.methods:
        cells = [esc(m)]
        for c in metrics:
            n = int(loc.loc[loc["method"] == m, c].notna().sum())
            text = f"{fmt(means[m][c])} <span class=\"muted\">({n})</span>"
            cells.append(f"<b>{text}</b>" if means[m][c] == best[c] else text)
        rows.append(cells)
    sources = "; ".join(f"{esc(k)}: {esc(v)}" for k, v in METRIC_SOURCES.items())
    return (
        "<p>Mean over all branches and samples of each localisation metric of the channel-adjusted (standard) "
        "heatmap, with the number of samples that have a value in brackets (a metric is undefined where its mask "
        "is empty, e.g. for the empty class). “/feature” uses the discriminative-feature mask (truth 0.9), "
        "“/cell” the whole cell (truth &gt; 0). Higher is better for every column; the best mean is bold.</p>"
        + table_html(["method", *(esc(c).replace("/", "/<wbr>") for c in metrics)], rows)
        + f'<p class="muted">Definitions: {sources}.</p>'
    )


def ax_section(ctx: ReportContext) -> str:
    """The AX/CO-gap section (imported on use: its module builds on this one)."""
    from heatlab.report.ax_figures import ax_section as build

    return build(ctx)


def gax_section(ctx: ReportContext) -> str:
    """The GAX section with its link to the slider viewer (imported on use, as above)."""
    from heatlab.report.gax_viewer import gax_section as build

    return build(ctx)


def feature_relevance_section(ctx: ReportContext) -> str:
    """Tables: bar charts of the stored relevance per feature (heatmaps of a table are not images)."""
    from heatlab.report.figures import feature_relevance_figure

    ev = ctx.evaluation
    if ev.get("input_kind") != "table":
        return ""
    path = feature_relevance_figure(ctx.run_dir, ev, ctx.gallery_branch, ctx.figure_path("feature_relevance.png"))
    return ctx.img(path, "relevance per feature",
                   f"Relevance per feature on the {esc(ev.get('split'))} split ({esc(ctx.gallery_branch)}), one panel per "
                   "method: mean over samples of the attribution divided by its largest magnitude per sample "
                   "(bars: signed mean, outline: mean magnitude).")


DEFAULT_SECTIONS: tuple[Section, ...] = (
    Section("overview", "This run", overview_section),
    Section("summary", "Summary", summary_section, needs=("five_band",)),
    Section("data", "Dataset preview", preview_section),
    Section("training", "Training and accuracy per branch", training_section),
    Section("features", "Relevance per feature", feature_relevance_section),
    Section("recall-precision", "Recall against precision", recall_precision_section, needs=("five_band",)),
    Section("roc", "ROC per method", roc_section, needs=("roc",)),
    Section("gallery", "Heatmap gallery", gallery_section, needs=("five_band",)),
    Section("localisation", "Localisation metrics", localisation_section, needs=("localisation",)),
    Section("ax", "Augmentative eXplanation (CO score)", ax_section),
    Section("gax", "Generative AX (GAX)", gax_section),
)


# --- loading -----------------------------------------------------------------------------------

def _read_table(path: Path, name: str, run: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception:  # pyarrow raises several types for a broken file
        raise HeatlabError(f"Table '{path}' is unreadable; run `heatlab evaluate {run}` again.") from None
    missing = [c for c in REQUIRED_COLUMNS[name] if c not in df.columns]
    if missing:
        raise HeatlabError(f"Table '{path}' lacks column(s) {', '.join(missing)}; run `heatlab evaluate {run}` again.")
    if df.empty:
        raise HeatlabError(f"Table '{path}' has no rows; run `heatlab evaluate {run}` again.")
    return df


def load_context(run_dir: str | os.PathLike, *, gallery_branch: str | None = None,
                 progress: Progress | None = None) -> ReportContext:
    """Read and check everything the report needs from ``run_dir`` (raises HeatlabError with the fix)."""
    from heatlab.run.training import branch_info, list_branches

    run = Path(run_dir)
    if not run.is_dir():
        raise HeatlabError(f"Run folder '{run}' does not exist; pass the folder `heatlab train` wrote.")
    tables_dir = run / "tables"
    evaluation = read_json(run / "evaluate.json") if (run / "evaluate.json").is_file() else {}
    if evaluation and not evaluation.get("complete", False):
        raise HeatlabError(f"The evaluation of '{run}' is incomplete; run `heatlab evaluate {run}` again to finish it.")
    # Only the tables the last evaluation wrote count (a run without ground truth writes none).
    present = [n for n in TABLES if (tables_dir / f"{n}.parquet").is_file() and n in evaluation.get("tables", TABLES)]
    tables = {n: _read_table(tables_dir / f"{n}.parquet", n, run) if n in present else pd.DataFrame() for n in TABLES}
    for df in tables.values():  # older tables hold branch indices; name them as the folders do
        if not df.empty:
            df["branch"] = [branch_label(b) for b in df["branch"]]
            df["method"] = df["method"].astype(str)
    has_results = evaluation or (run / "ax.json").is_file() or (run / "gax" / "gax.json").is_file()
    if not has_results:
        raise HeatlabError(f"Run '{run}' has no results to report yet; run `heatlab evaluate {run}` (or `heatlab ax {run}`) first.")
    if not (run / "model").is_dir():
        raise HeatlabError(f"Run '{run}' has no trained model (no model folder); run `heatlab train` for it first.")
    indices = list_branches(run)
    if not indices:
        raise HeatlabError(f"Run '{run}' has no trained branch model; run `heatlab train` for it first.")
    branches = [branch_label(b) for b in indices]
    models = {branch_label(b): branch_info(run, b) for b in indices}
    config = read_json(run / "config.json") if (run / "config.json").is_file() else {}
    fb = tables["five_band"]
    listed = [str(m) for m in evaluation.get("methods", [])]
    seen = list(dict.fromkeys(str(m) for m in fb["method"])) if not fb.empty else listed
    methods = [m for m in listed if m in seen] + [m for m in seen if m not in listed]
    evaluated = list(dict.fromkeys(str(b) for b in fb["branch"])) if not fb.empty else branches
    ordered = [b for b in branches if b in evaluated] + [b for b in evaluated if b not in branches]
    if gallery_branch is None:
        gallery_branch = ordered[0]
    elif gallery_branch not in evaluated:
        raise HeatlabError(f"Branch '{gallery_branch}' was not evaluated; choose one of {', '.join(evaluated)}.")
    out_dir = ensure_dir(run / "report")
    return ReportContext(
        run_dir=run, out_dir=out_dir, fig_dir=ensure_dir(out_dir / "figures"), config=config,
        evaluation=evaluation, five_band=fb, roc=tables["roc"], localisation=tables["localisation"],
        branches=branches, models=models, class_names=_class_names(models, config), methods=methods,
        split=str(evaluation.get("split", "test")), gallery_branch=gallery_branch, progress=progress,
    )


def _class_names(models: dict[str, dict], config: dict) -> list[str]:
    """Class names from the first model.json that has them, else from the dataset manifest."""
    for meta in models.values():
        if isinstance(meta.get("class_names"), list) and meta["class_names"]:
            return [str(n) for n in meta["class_names"]]
    manifest = Path(str(config.get("data_root", ""))) / "manifest.json"
    if config.get("data_root") and manifest.is_file():
        names = read_json(manifest).get("settings", {}).get("class_names")
        if isinstance(names, list):
            return [str(n) for n in names]
    return []


# --- page --------------------------------------------------------------------------------------

def render_page(ctx: ReportContext, fragments: Sequence[tuple[Section, str]]) -> str:
    """The whole HTML document from (section, fragment) pairs."""
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s, _ in fragments)
    body = "\n".join(
        f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>\n{frag}\n</section>' for s, frag in fragments
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>heatlab report: {esc(ctx.run_dir.name)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>heatlab report</h1><p>Run {esc(ctx.run_dir.resolve())}</p></header>"
        f"<nav>{nav}</nav><main>\n{body}\n</main></body></html>\n"
    )


def build_report(
    run_dir: str | os.PathLike,
    *,
    gallery_branch: str | None = None,
    progress: Progress | None = None,
    sections: Sequence[Section] = DEFAULT_SECTIONS,
) -> Path:
    """Write ``<run>/report/index.html`` (and its figures) for an evaluated run; returns the page path.

    ``gallery_branch`` picks the branch whose samples the gallery shows (default: the first);
    ``progress(task, done, total)`` is called after every section.
    """
    ctx = load_context(run_dir, gallery_branch=gallery_branch, progress=progress)
    fragments = []
    for i, section in enumerate(sections):
        if all(not getattr(ctx, need).empty for need in section.needs):
            fragment = section.build(ctx)
            if fragment:
                fragments.append((section, fragment))
        report(progress, "report", i + 1, len(sections))
    page = ctx.out_dir / "index.html"
    write_text(page, render_page(ctx, fragments))
    return page
