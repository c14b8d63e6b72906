"""`heatlab report`: pages of runs the pipeline itself produced.

Runs: the session's tiny cell run (every stage, or only some of them) and a tiny wine run (a
table without ground truth). Expected numbers are computed from the pipeline's own tables and
stored heatmaps, never written by hand, so a ranking or an accuracy the page got wrong shows up as
a difference.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from heatlab.errors import HeatlabError
from heatlab.files import write_json
from heatlab.report.figures import branch_points, recall_precision_figure
from heatlab.report.heatmaps import StoredHeatmaps, load_heatmaps
from heatlab.report.html import DEFAULT_SECTIONS, Section, build_report, gallery_section, load_context, rank_methods
from heatlab.run.rundir import RunDir

try:
    from no_truth_tables import write_no_truth
except ImportError:  # run from the repository root as a package
    from tests.no_truth_tables import write_no_truth

EVIL = "<script>alert(1)</script>"
METHODS = ("Saliency", "InputXGradient", "LayerGradCam")
WINE_METHODS = ("Saliency", "IntegratedGradients")


def make_run(tmp: Path, tiny_run: Path, *, methods=METHODS, evaluate: bool = True, ax: bool = True,
             gax: bool = True, no_truth: bool = False, name: str = "run") -> Path:
    """A copy of the session's tiny trained cell run, put through the chosen stages by the pipeline
    (the no-truth table by calling the metrics directly, one per family, on the first method)."""
    from heatlab.run.agreement import write_metric_agreement
    from heatlab.run.ax import ax_run
    from heatlab.run.evaluate import evaluate_run
    from heatlab.run.gax import gax_run

    run = tmp / name
    shutil.copytree(tiny_run, run)
    if evaluate:
        evaluate_run(run, methods=",".join(methods), split="test", metric_set="none")  # no_truth= decides
        if no_truth:
            write_no_truth(run, methods[:2])
            write_metric_agreement(run, resamples=200)
    if ax:
        ax_run(run, methods="Saliency", split="test")
    if gax:
        gax_run(run, split="test", first_n_correct=2, max_steps=3, batch_size=2)
    return run


def make_wine_run(tmp: Path, tiny_wine_run: Path) -> Path:
    """The session's tiny wine run, evaluated, put through AX and GAX by the pipeline."""
    from heatlab.run.ax import ax_run
    from heatlab.run.evaluate import evaluate_run
    from heatlab.run.gax import gax_run

    run = tmp / "wine"
    shutil.copytree(tiny_wine_run, run)
    evaluate_run(run, methods=",".join(WINE_METHODS), split="test")
    ax_run(run, methods="Saliency", split="test")
    gax_run(run, split="test", first_n_correct=3, max_steps=3)
    return run


def _text(html: str) -> str:
    """Visible text: tags removed, whitespace collapsed (entities kept)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _section(html: str, sid: str) -> str:
    return html.split(f'<section id="{sid}">')[1].split("</section>")[0]


def _sections(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', html)


def _rows(fragment: str) -> list[list[str]]:
    """The body rows of the first table in ``fragment``, as lists of cell HTML."""
    body = fragment.split("<tbody>")[1].split("</tbody>")[0]
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]


def _row_cells(fragment: str, first: str) -> list[str]:
    return next(r for r in _rows(fragment) if r[0] == first)


def _images_exist(page: Path, html: str) -> list[str]:
    srcs = re.findall(r'<img src="([^"]+)"', html)
    for src in srcs:
        assert not Path(src).is_absolute() and (page.parent / src).stat().st_size > 1000, src
    return srcs


def add_lrp(run: Path) -> Path:
    """The LRP filter study on the run, a tiny LRP study in ``run/lrp-study`` and a tiny Mixer run, by the pipeline."""
    from heatlab.improve.mixer import MixerConfig
    from heatlab.run.lrp_filters import lrp_filters_run
    from heatlab.run.lrp_study import lrp_study
    from heatlab.run.mixer import mixer_run

    lrp_filters_run(run, filters="c0.2")
    lrp_study("digits", run / "lrp-study", epochs=1, batch_size=128, every=5, eval_samples=8, heatmap_samples=2,
              filters="c0.2")
    mixer_run(run, seeds=2, n_steps=2, train_samples=12, config=MixerConfig(epochs=1, patience=1, batch_size=8))
    return run


@pytest.fixture(scope="module")
def full_report(tmp_path_factory, tiny_run):
    run = add_lrp(make_run(tmp_path_factory.mktemp("full"), tiny_run, no_truth=True))
    calls = []
    page = build_report(run, progress=lambda task, done, total: calls.append((task, done, total)))
    return run, page, page.read_text(encoding="utf-8"), calls


class FigureRecorder:
    """Records every text and each axes' limits of the figures saved while it is active."""

    def __init__(self):
        self.texts: list[str] = []
        self.axes: list[dict] = []

    def __enter__(self):
        from matplotlib.figure import Figure
        from matplotlib.text import Text

        original = Figure.savefig
        recorder = self

        def savefig(fig, *args, **kwargs):
            recorder.texts += [t.get_text() for t in fig.findobj(Text)]
            recorder.axes += [{"xlabel": a.get_xlabel(), "xlim": a.get_xlim(), "ylim": a.get_ylim(),
                               "xdata": a.dataLim.intervalx.copy()} for a in fig.axes]
            return original(fig, *args, **kwargs)

        self._patch = pytest.MonkeyPatch()
        self._patch.setattr(Figure, "savefig", savefig)
        return self

    def __exit__(self, *exc):
        self._patch.undo()


@pytest.fixture(scope="module")
def good_report(tmp_path_factory):
    """A good classifier by the pipeline: breast cancer (2 classes), two branches with one validation each
    (at iteration 12), AX with two methods; the figures' texts and axes are recorded while the page is built."""
    from heatlab.models.training import TrainConfig
    from heatlab.run.ax import ax_run
    from heatlab.run.training import train_run

    run = tmp_path_factory.mktemp("good") / "run"
    train_run("breast_cancer", run, TrainConfig(model="ccffpa", epochs=3, branches=2, branch_epochs=1, batch_size=16,
                                                eval_every=12, seed=3))
    ax_run(run, methods="Saliency,InputXGradient", split="test")
    with FigureRecorder() as figures:
        page = build_report(run)
    return run, page, page.read_text(encoding="utf-8"), figures


@pytest.fixture(scope="module")
def wine_report(tmp_path_factory, tiny_wine_run):
    run = make_wine_run(tmp_path_factory.mktemp("wine"), tiny_wine_run)
    page = build_report(run)
    return run, page, page.read_text(encoding="utf-8")


# --- a cell run with every stage ------------------------------------------------------------------

def test_page_has_every_section_and_its_figures(full_report):
    run, page, html, calls = full_report
    assert page == run / "report" / "index.html"
    # every section but the bar charts that only tables get
    assert _sections(html) == [s.id for s in DEFAULT_SECTIONS if s.id != "features"]
    srcs = _images_exist(page, html)
    for name in ("preview.png", "training.png", "recall_precision.png", "roc.png", "ax_co_box_sum.png", "gax_co.png",
                 "lrp_mp.png", "lrp_heatmaps.png", "mixer_accuracy.png", "mixer_gallery.png"):
        assert f"figures/{name}" in srcs
    # The gallery has its own page, linked from the index, so the index stays short.
    assert not any(s.startswith("figures/gallery-class-") for s in srcs) and 'href="gallery.html"' in html
    gallery = (run / "report" / "gallery.html").read_text(encoding="utf-8")
    assert any(s.startswith("figures/gallery-class-") for s in _images_exist(page, gallery))
    assert 'href="index.html"' in gallery and "://" not in gallery
    assert "://" not in html  # no external resource of any kind
    assert ("report", len(DEFAULT_SECTIONS), len(DEFAULT_SECTIONS)) in calls
    assert 'class="note"' not in html  # nothing was skipped
    assert "Not in this run yet" not in html
    assert (run / "report" / "gax.html").is_file() and 'href="gax.html"' in html


def test_the_summary_names_the_cam_layer_evaluate_used(full_report):
    run, _, html, _ = full_report
    layer = json.loads((run / "evaluate.json").read_text())["cam_layer"]
    assert f"LayerGradCam and GuidedGradCam at layer <b>{layer}</b>" in _section(html, "summary")


def test_report_only_reads_what_the_stages_stored(full_report, monkeypatch):
    """No attribution, no model, no data generation: the page is drawn from the stored files alone."""
    import heatlab.data.cells
    import heatlab.explain.attribution
    import heatlab.run.rundir

    def refuse(*args, **kwargs):
        raise AssertionError("the report must only read what the stages stored")

    monkeypatch.setattr(heatlab.explain.attribution, "attribute", refuse)
    monkeypatch.setattr(heatlab.run.rundir, "load_branch", refuse)
    monkeypatch.setattr(heatlab.run.rundir.RunDir, "load_model", refuse)
    monkeypatch.setattr(heatlab.run.rundir.RunDir, "open_data", refuse)
    monkeypatch.setattr(heatlab.data.cells, "generate", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    run = full_report[0]
    html = build_report(run).read_text(encoding="utf-8")
    assert _sections(html) == _sections(full_report[2])


def test_stored_gallery_heatmaps_hold_the_first_correct_and_wrong_sample_per_class(full_report):
    run, _, _, _ = full_report
    five = pd.read_parquet(RunDir(run).table("five_band"))
    rows = five[five["branch"] == "branch-00"].drop_duplicates(["shard", "index"]).sort_values(["shard", "index"])
    expected = {}
    for label, group in rows.groupby("label"):
        for ok in (True, False):
            hit = group[(group["label"] == group["prediction"]) == ok].head(1)
            expected.setdefault(int(label), []).extend((int(r.shard), int(r.index)) for r in hit.itertuples())
    stored = load_heatmaps(run, "test", "branch-00", "Saliency")
    picked = {c: [(int(stored.shard[j]), int(stored.index[j])) for j in rows] for c, rows in stored.first_per_class().items()}
    assert picked == expected
    assert stored.meta["selection"] == "gallery" and stored.truth_kind == "levels"


def test_gallery_has_one_figure_per_class_with_correct_and_wrong(full_report):
    run, page, html, _ = full_report
    stored = load_heatmaps(run, "test", "branch-00", "Saliency")
    names = RunDir(run).class_names()
    present = sorted(set(stored.labels.tolist()))
    files = sorted(p.name for p in (page.parent / "figures").glob("gallery-class-*.png"))
    assert files == [f"gallery-class-{c:02d}.png" for c in present]
    gallery = _text((page.parent / "gallery.html").read_text(encoding="utf-8"))
    index = _section(html, "gallery")
    for c, rows in stored.first_per_class().items():
        assert f'href="gallery.html#class-{c}"' in index
        for j in rows:
            label, pred = int(stored.labels[j]), int(stored.predictions[j])
            verdict = "correct" if label == pred else "wrong"
            assert f"{verdict}: true {names[label]}, predicted {names[pred]}" in gallery


def _expected_ranking(five: pd.DataFrame, column: str) -> list[str]:
    standard = five[five["variant"] == "standard"]
    means = standard.groupby("method", sort=False)[column].mean()
    return [m for m, _ in sorted(zip(means.index, means.values), key=lambda mv: -mv[1])]


def test_summary_ranks_methods_by_the_tables_means(full_report):
    run, _, html, _ = full_report
    five = pd.read_parquet(RunDir(run).table("five_band"))
    text = _text(_section(html, "summary"))
    for column, what in (("recall_best", "recall"), ("precision_best", "precision")):
        sentence = text.split(f"Ranked by mean best {what} (standard variant, all branches and samples): ")[1].split(". ")[0]
        shown = [part.split()[0] for part in sentence.split("&gt;")]
        assert shown == _expected_ranking(five, column), sentence
    correct = five.drop_duplicates(["branch", "shard", "index"])["correct"].mean()
    assert f"branch-00 {correct:.3f}" in text


def test_training_and_localisation_tables(full_report):
    run, _, html, _ = full_report
    info = RunDir(run).model_info("branch-00")
    training = _text(_section(html, "training"))
    assert f"branch-00 {info['stop_reason']} {info['iterations']} {info['val_acc']:.3f} {info['test_acc']:.3f}" in training
    loc = pd.read_parquet(RunDir(run).table("localisation"))
    section = _section(html, "localisation")
    feature = section.split("<h3>feature mask</h3>")[1].split("<h3>")[0]
    metrics = [c for c in loc.columns if c.endswith("/feature")]
    for method in METHODS:
        cells = [re.sub(r"</?b>", "", c) for c in _row_cells(feature, method)]
        values = loc[loc["method"] == method]
        expected = [f"{f(values[c]):.3f}" for c in metrics for f in (pd.Series.mean, pd.Series.median)]
        assert cells[1:] == expected + [str(values["auc/feature"].notna().sum())]
    section = _text(section)
    assert "Zhang et al. 2018" in section and "Arras et al. 2022" in section and "Fawcett 2006" in section


def test_data_text_is_escaped_by_the_sections(full_report):
    from heatlab.report.sections.data import preview_section
    from heatlab.report.sections.overview import overview_section

    run, _, _, _ = full_report
    ctx = load_context(run)
    ctx.class_names = [EVIL, *ctx.class_names[1:]]
    ctx.config = {**ctx.config, "data_root": EVIL}
    gallery = gallery_section(ctx)
    for html in (gallery, (ctx.out_dir / "gallery.html").read_text(encoding="utf-8"), preview_section(ctx),
                 overview_section(ctx)):
        assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_run_folder_name_is_escaped_on_the_page(tmp_path, tiny_run):
    run = make_run(tmp_path, tiny_run, evaluate=False, gax=False, name="<i>run</i>")
    html = build_report(run).read_text(encoding="utf-8")
    assert "<i>run</i>" not in html and "&lt;i&gt;run&lt;/i&gt;" in html


def test_recall_precision_figure_is_deterministic(full_report, tmp_path):
    five = pd.read_parquet(RunDir(full_report[0]).table("five_band"))
    a = recall_precision_figure(five, tmp_path / "a.png")
    b = recall_precision_figure(five, tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()


def _drawn_texts(fig) -> list:
    """The texts a draw of ``fig`` put on the canvas: titles, labels, drawn tick labels, legends, free texts."""
    from matplotlib.text import Text

    out = [fig._suptitle, *fig.texts, *[t for leg in fig.legends for t in leg.get_texts()]]
    for ax in fig.axes:
        out += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        out += [t for leg in [ax.get_legend()] if leg for t in leg.get_texts()]
        for axis in (ax.xaxis, ax.yaxis):
            out += [label for tick in axis._update_ticks() for label in (tick.label1, tick.label2) if label.get_visible()]
    out = list({id(t): t for t in out}.values())  # the suptitle is also one of fig.texts
    return [t for t in out if isinstance(t, Text) and t.get_visible() and t.get_text().strip()]


def _title_problems(fig) -> list[str]:
    """Titles (axes titles, suptitle) that overlap another text, and texts cut off at the figure's
    edge, measured with the renderer that wrote the PNG (pixels)."""
    renderer = fig.canvas.get_renderer()
    texts = _drawn_texts(fig)
    titles = {id(t) for a in fig.axes for t in (a.title, a._left_title, a._right_title)} | {id(fig._suptitle)}
    box = {id(t): t.get_window_extent(renderer) for t in texts}
    inside = fig.bbox.padded(1)
    problems = [f"cut off: {t.get_text()!r}" for t in texts
                if not (inside.contains(box[id(t)].x0, box[id(t)].y0) and inside.contains(box[id(t)].x1, box[id(t)].y1))]
    for t in texts:
        if id(t) in titles:
            problems += [f"{t.get_text()!r} overlaps {u.get_text()!r}" for u in texts
                         if u is not t and box[id(t)].overlaps(box[id(u)])]
    return problems


def test_no_figure_title_overlaps_or_leaves_its_figure(full_report, good_report):
    for run in (full_report[0], good_report[0]):
        from matplotlib.figure import Figure

        original, problems = Figure.savefig, []

        def savefig(fig, *args, **kwargs):
            out = original(fig, *args, **kwargs)  # draws: the layout below is the one in the PNG
            problems.extend(f"{Path(str(args[0])).name.split('.tmp')[0]}: {p}" for p in _title_problems(fig))
            return out

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Figure, "savefig", savefig)
            build_report(run)
        assert problems == [], "\n".join(problems)


def test_extra_sections_are_added_by_a_builder(full_report):
    run, _, _, _ = full_report
    extra = Section("extra", "Extra <i>", lambda ctx: f"<p>{len(ctx.methods)} methods</p>")
    html = build_report(run, sections=[DEFAULT_SECTIONS[0], extra]).read_text(encoding="utf-8")
    assert '<section id="extra"><h2>Extra &lt;i&gt;</h2>' in html and "<p>3 methods</p>" in html
    assert '<section id="roc">' not in html


# --- runs with only some stages -----------------------------------------------------------------

def test_a_run_with_only_training_and_ax_has_a_page(tmp_path, tiny_run):
    run = make_run(tmp_path, tiny_run, evaluate=False, gax=False)
    page = build_report(run)
    html = page.read_text(encoding="utf-8")
    assert _sections(html) == ["headline", "overview", "training", "ax"]
    assert f"heatlab evaluate {run}" in _text(_section(html, "overview"))
    assert f"heatlab gax {run}" in _text(_section(html, "overview"))
    srcs = _images_exist(page, html)
    assert "figures/training.png" in srcs and "figures/ax_co_box_sum.png" in srcs
    gap = pd.read_parquet(RunDir(run).table("co_gap"))
    auroc = gap[(gap["variant"] == "raw_sum") & (gap["method"] == "Saliency")]["auroc"].mean()
    if not np.isnan(auroc):
        assert f"Saliency {auroc:.3f}" in _text(_section(html, "ax"))


def test_a_run_with_only_gax_has_a_page(tmp_path, tiny_run):
    run = make_run(tmp_path, tiny_run, evaluate=False, ax=False)
    html = build_report(run).read_text(encoding="utf-8")
    assert _sections(html) == ["headline", "overview", "training", "gax"]
    assert "Not in this run yet" in html and 'href="gax.html"' in html


def test_a_run_evaluated_without_ax_has_no_ax_sections(tmp_path, tiny_run):
    run = make_run(tmp_path, tiny_run, methods=("Saliency",), ax=False, gax=False)
    html = build_report(run).read_text(encoding="utf-8")
    assert _sections(html) == ["headline", "overview", "summary", "data", "training", "recall-precision", "roc", "gallery",
                               "localisation"]


# --- a table run without ground truth -----------------------------------------------------------

def test_a_table_run_gets_feature_charts_instead_of_scores(wine_report):
    run, page, html = wine_report
    # evaluate scored the default no-truth set (deletion, insertion: faithfulness, with their curves;
    # sparseness, complexity: complexity) and the report shows those families
    assert _sections(html) == ["headline", "overview", "training", "features", "no-truth", "ax", "gax"]
    page_html = (run / "report" / "no_truth.html").read_text(encoding="utf-8")
    assert _sections(page_html) == ["no-truth-faithfulness", "no-truth-curves", "no-truth-complexity"]
    ev = RunDir(run).stage_summary("evaluate")
    for sentence in ev["skipped"]:  # what evaluate skipped, and why
        assert sentence.replace("'", "&#39;") in html
    srcs = _images_exist(page, html)
    assert "figures/feature_relevance.png" in srcs and "figures/gax_co.png" in srcs


def test_feature_ranking_follows_the_stored_heatmaps(wine_report):
    run, _, html = wine_report
    ev = RunDir(run).stage_summary("evaluate")
    names = ev["feature_names"]
    body = _section(html, "features").split("most relevant features")[1].split("<tbody>")[1]
    rows = re.findall(r"<tr>(.*?)</tr>", body)
    assert len(rows) == len(WINE_METHODS)
    for method, row in zip(WINE_METHODS, rows):
        path = RunDir(run).heatmaps("test", "branch-00", method)
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["heatlab"])
        tensors = load_file(str(path))
        assert meta["selection"] == "all" and meta["input_kind"] == "table" and len(tensors["labels"]) == ev["samples"]
        magnitude = tensors["attributions"].double().abs().mean(0).tolist()
        expected = [names[j] for j in sorted(range(len(names)), key=lambda j: -magnitude[j])[:5]]
        cells = re.findall(r"<td>(.*?)</td>", row)
        assert cells[0] == method
        assert [re.sub(r" <span.*", "", c) for c in cells[1:]] == expected
    accuracy = float((tensors["labels"] == tensors["predictions"]).double().mean())
    assert f"classifier accuracy {accuracy:.3f}" in _text(_section(html, "features"))


def test_table_gax_gets_a_results_page_not_the_image_viewer(wine_report):
    run, _, html = wine_report
    assert 'href="gax.html"' in _section(html, "gax") and "correctly predicted samples" in _section(html, "gax")
    gax = (run / "report" / "gax.html").read_text(encoding="utf-8")
    names = RunDir(run).stage_summary("evaluate")["feature_names"]
    assert all(f"<th>{n}</th>" in gax for n in names) and "<script" not in gax
    assert (run / "report" / "figures" / "gax_features.png").stat().st_size > 1000
    assert 'src="figures/gax_features.png"' in gax


# --- bad inputs ---------------------------------------------------------------------------------

def test_missing_results_and_bad_inputs_raise(tmp_path, tiny_run):
    run = make_run(tmp_path / "b", tiny_run, methods=("Saliency",), ax=False, gax=False)
    with pytest.raises(HeatlabError, match="not evaluated"):
        build_report(run, gallery_branch="branch-07")
    write_json(run / "evaluate.json", {"split": "test", "complete": False})
    with pytest.raises(HeatlabError, match="incomplete"):
        build_report(run)
    with pytest.raises(HeatlabError, match="does not exist"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HeatlabError, match="heatlab train"):
        build_report(tmp_path / "empty")
    trained = tmp_path / "trained"
    shutil.copytree(tiny_run, trained)
    with pytest.raises(HeatlabError, match="heatlab evaluate"):
        build_report(trained)  # trained, nothing to report yet


def test_broken_table_and_heatmaps_are_clear(tmp_path, tiny_run):
    run = make_run(tmp_path, tiny_run, methods=("Saliency",), ax=False, gax=False)
    stored = RunDir(run).heatmaps("test", "branch-00", "Saliency")
    good = stored.read_bytes()
    stored.write_bytes(b"not safetensors")
    with pytest.raises(HeatlabError, match="unreadable.*heatlab evaluate"):  # checked before anything is written
        build_report(run)
    assert not (run / "report").exists()
    stored.write_bytes(good)
    (run / "tables" / "five_band.parquet").write_bytes(b"not parquet")
    with pytest.raises(HeatlabError, match="unreadable"):
        build_report(run)
    pd.DataFrame({"branch": ["branch-00"]}).to_parquet(run / "tables" / "five_band.parquet")
    with pytest.raises(HeatlabError, match="lacks column"):
        build_report(run)


# --- pure pieces --------------------------------------------------------------------------------

def test_rank_methods_skips_nan_and_keeps_order_on_ties():
    df = pd.DataFrame({"method": ["a", "a", "b", "b", "c", "d"], "x": [0.2, np.nan, 0.1, 0.3, 0.2, np.nan]})
    assert rank_methods(df, "x", ["d", "a", "b", "c"]) == [("a", 0.2, 1), ("b", pytest.approx(0.2), 2), ("c", 0.2, 1),
                                                         ("d", pytest.approx(np.nan, nan_ok=True), 0)]


def test_branch_points_are_per_branch_mean_and_std_over_samples():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"branch": np.repeat(["b0", "b1"], 6), "method": "m", "variant": np.tile(["standard", "clamp"], 6),
                       "precision_best": rng.random(12), "recall_best": rng.random(12)})
    pts = branch_points(df, "standard", "best").set_index("branch")
    for b in ("b0", "b1"):
        sel = df[(df.branch == b) & (df.variant == "standard")]
        assert pts.loc[b, "p_mean"] == pytest.approx(np.mean(sel.precision_best))
        assert pts.loc[b, "r_std"] == pytest.approx(np.std(sel.recall_best))
        assert pts.loc[b, "n"] == 3


def test_first_per_class_is_first_correct_then_first_wrong_in_shard_index_order():
    n = 6
    stored = StoredHeatmaps(
        meta={}, attributions=torch.zeros(n, 2), inputs=torch.zeros(n, 2),
        labels=torch.tensor([4, 4, 4, 4, 4, 2]), predictions=torch.tensor([4, 1, 4, 4, 1, 2]),
        shard=torch.tensor([1, 0, 0, 1, 0, 0]), index=torch.tensor([0, 5, 2, 1, 4, 3]),
    )
    # class 4: correct at (0, 2) row 2, wrong at (0, 4) row 4 (before (0, 5)); class 2: correct only
    assert stored.first_per_class() == {2: [5], 4: [2, 4]}


# --- the headline -------------------------------------------------------------------------------

def _headline(html: str) -> dict[str, list[str]]:
    """Headline rows by score text: [family, score, answer, intervals, kind] as visible text."""
    def clean(cell: str) -> str:
        return re.sub(r"\s+([,;:)\]])", r"\1", _text(cell)).strip()

    return {clean(r[1]): [clean(c) for c in r] for r in _rows(_section(html, "headline"))}


def _sample_bootstrap_reference(values: np.ndarray) -> tuple[float, float]:
    """The bootstrap interval over the samples of one branch, clipped to [0, 1] (the headline's rule for one branch)."""
    lo, hi = _bootstrap_reference(values)
    return max(lo, 0.0), min(hi, 1.0)


def _expected_answer(intervals: dict[str, tuple[float, float, float]]) -> str:
    """The tie rule written out: the top mean wins unless another interval overlaps its interval."""
    ranked = sorted(intervals, key=lambda m: -intervals[m][0])
    _, lo, hi = intervals[ranked[0]]
    tied = [m for m in ranked[1:] if intervals[m][1] <= hi and lo <= intervals[m][2]]
    return "tied: " + ", ".join([ranked[0], *tied]) if tied else ranked[0]


def test_headline_names_the_best_stored_mean_or_says_tied(full_report):
    run, _, html, _ = full_report
    assert _sections(html)[0] == "headline"
    rows = _headline(html)
    five = pd.read_parquet(RunDir(run).table("five_band"))
    loc = pd.read_parquet(RunDir(run).table("localisation"))
    checks = {"recall, best over thresholds (standard variant)": (five[five["variant"] == "standard"], "recall_best"),
              "precision, best over thresholds (standard variant)": (five[five["variant"] == "standard"], "precision_best"),
              "AUC against the feature mask": (loc, "auc/feature")}
    answers = []
    for score, (table, column) in checks.items():
        intervals = {}
        for m in METHODS:  # one branch: the mean over its samples and the bootstrap over them
            values = table.loc[table["method"] == m, column].dropna().to_numpy()
            intervals[m] = (values.mean(), *_sample_bootstrap_reference(values))
        answer = _expected_answer(intervals)
        assert rows[score][2] == answer, (score, intervals)
        assert rows[score][2].removeprefix("tied: ").startswith(max(intervals, key=lambda m: intervals[m][0]))
        assert rows[score][4] == f"bootstrap over {len(values)} samples within 1 branch"
        for m, (mean, lo, hi) in intervals.items():
            assert f"{m} {mean:.3f} [{lo:.3f}, {hi:.3f}]" in rows[score][3]
        answers.append(answer)
    # which answers a run gets depends on its data; both branches of the rule are checked on
    # hand-made intervals in test_pick_best_names_a_clear_winner_and_ties_overlaps
    assert len(answers) == len(checks)
    co = rows[next(k for k in rows if k.startswith("AUROC of the CO score"))]
    assert co[0] == "CO/AX detection" and co[2] == "Saliency (only method)" and "bootstrap over" in co[4]
    # mass accuracy outside [0, 1] (the old signed definition) is not ranked, and the page says why;
    # NaN (empty mask, no positive relevance) is not "outside"
    if not loc["relevance_mass_accuracy/feature"].dropna().between(0, 1).all():
        assert not any("relevance mass accuracy" in k for k in rows)
        assert "values outside [0, 1]" in _text(_section(html, "headline"))


def test_headline_over_two_branches_uses_the_stored_aurocs(good_report):
    from scipy import stats

    run, _, html, _ = good_report
    rows = _headline(html)
    assert list(rows) == [k for k in rows if k.startswith("AUROC of the CO score")]  # the only family this run has
    row = next(iter(rows.values()))
    gap = pd.read_parquet(RunDir(run).table("co_gap"))
    gap = gap[(gap["variant"] == "raw_sum") & (gap["grouping"] == "correct_before")]
    intervals = {}
    for m, g in gap.groupby("method", sort=False):
        v = g["auroc"].to_numpy()
        assert len(v) == 2
        half = stats.t.ppf(0.975, 1) * v.std(ddof=1) / np.sqrt(2)
        intervals[m] = (v.mean(), max(v.mean() - half, 0.0), min(v.mean() + half, 1.0))
        assert f"{m} {v.mean():.3f} [{intervals[m][1]:.3f}, {intervals[m][2]:.3f}]" in row[3]
    assert row[2] == _expected_answer(intervals) and row[4] == "t over 2 branches"
    text = _text(_section(html, "headline"))
    assert "Not in this run: five-band" in text and "localisation" in text


def _pairwise_auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive score > a negative one), ties one half, by comparing every pair."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_headline_auroc_is_the_before_ax_auroc_computed_by_hand(full_report, good_report):
    differ = 0
    for run, _, html, _ in (full_report, good_report):
        row = next(v for k, v in _headline(html).items() if k.startswith("AUROC of the CO score"))
        assert "correct before AX" in row[1]
        info = RunDir(run).stage_summary("ax")
        co = pd.read_parquet(RunDir(run).table("co"))
        co = co[(co["split"] == info["split"]) & (co["space"] == info["space"])]
        for m, g in co.groupby("method", sort=False):
            by = {}
            for column in ("correct_before", "correct_after_sum"):  # the headline's grouping, and the circular one
                values = [_pairwise_auroc(b.loc[b[column], "co_raw_sum"].to_numpy(),
                                          b.loc[~b[column], "co_raw_sum"].to_numpy())
                          for _, b in g.groupby("branch", sort=False) if 0 < b[column].sum() < len(b)]
                by[column] = f"{m} {np.mean(values):.3f} [" if values else None
            assert by["correct_before"] is not None and by["correct_before"] in row[3]
            if by["correct_after_sum"] not in (None, by["correct_before"]):
                differ += 1
                assert by["correct_after_sum"] not in row[3]
    assert differ  # the two groupings give different AUROCs here, so the test tells them apart


def test_accuracy_warning_for_a_near_chance_model_only(full_report, good_report):
    from heatlab.score.intervals import near_chance

    for run, html, k in ((full_report[0], full_report[2], 10), (good_report[0], good_report[2], 2)):
        accs = {b: RunDir(run).model_info(b)["test_acc"] for b in RunDir(run).branches()}
        text = _text(_section(html, "headline"))
        for b, a in accs.items():
            assert f"{b} {a:.3f}" in text
        share = max(RunDir(run).model_info(b)["chance_acc"] for b in accs)  # the most frequent test class
        if share > 1 / k + 1e-9:  # unbalanced (breast cancer): chance is that share, not 1/K
            assert f"chance (always the most frequent class) = {share:.3f}" in text
        else:
            assert f"chance 1/{k} = {1 / k:.3f}" in text
        low = any(a < max(share, 1 / k) + 0.1 for a in accs.values())
        assert ('class="note warn"' in _section(html, "headline")) == low
        assert low == any(near_chance(a, k, chance=share) for a in accs.values())
    assert 'class="note warn"' in full_report[2] and "below 1/K + 0.1 = 0.200" in _text(full_report[2])  # 0.15 of 10
    assert 'class="note warn"' not in good_report[2]  # 0.84 of 2


BRANCHISH = re.compile(r"\b(?:b|br|branch[-_ ]?)\d+\b")


def test_branches_have_one_name_on_the_page_and_in_the_figures(full_report, good_report):
    for run, html in ((full_report[0], full_report[2]), (good_report[0], good_report[2])):
        names = set(RunDir(run).branches())
        pages = [html] + [p.read_text(encoding="utf-8") for p in (run / "report").glob("*.html")]
        visible = [_text(re.sub(r"<(script|style)\b.*?</\1>", " ", p, flags=re.S)) for p in pages]
        assert {t for v in visible for t in BRANCHISH.findall(v)} == names
    figure_names = {t for text in good_report[3].texts for t in BRANCHISH.findall(text)}
    assert figure_names == {"branch-00", "branch-01"}


def test_a_single_validation_is_not_zoomed_to_a_sliver(good_report):
    """Both branches validated once (iteration 12): the axis holds 11-13, not matplotlib's 11.4-12.6."""
    val = [a for a in good_report[3].axes if a["xlabel"] == "branch iteration"]
    assert len(val) == 1 and tuple(val[0]["xdata"]) == (12.0, 12.0)
    assert val[0]["xlim"] == (11.0, 13.0)


def test_auroc_below_half_is_explained(full_report, good_report):
    for run, html in ((full_report[0], full_report[2]), (good_report[0], good_report[2])):
        gap = pd.read_parquet(RunDir(run).table("co_gap"))
        means = gap.groupby(["method", "variant", "grouping"])["auroc"].mean()
        low = means[means < 0.5]
        section = _text(_section(html, "ax"))
        assert not low.empty  # both runs have one (x · h for the cells, InputXGradient for breast cancer)
        sentence = section.split("AUROC below 0.5 (")[1].split("). ")[0]
        assert sentence.count(":") == len(low)
        for (m, v, g), a in low.items():
            assert f"{a:.3f}" in sentence and m in sentence
        assert "ranks wrong predictions above correct ones" in section


def test_localisation_marks_no_meaningless_mean_as_best(full_report):
    run, _, html, _ = full_report
    loc = pd.read_parquet(RunDir(run).table("localisation"))
    feature = _section(html, "localisation").split("<h3>feature mask</h3>")[1].split("<h3>")[0]
    metrics = [c for c in loc.columns if c.endswith("/feature")]
    rows = {r[0]: r for r in _rows(feature)}
    for j, c in enumerate(metrics):
        means = loc.groupby("method")[c].mean()
        bold = [m for m in METHODS if rows[m][1 + 2 * j].startswith("<b>")]
        if loc[c].dropna().between(0, 1).all():
            assert bold == [means.idxmax()], c
        else:
            assert bold == [] and c in _text(feature)


# --- intervals, the choosing rule, near chance, flat axes (pure) -----------------------------------

def _bootstrap_reference(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap of the mean of ``values`` written out: draw counts of each sample, average."""
    counts = np.random.default_rng(seed).multinomial(len(values), np.full(len(values), 1 / len(values)), size=resamples)
    return tuple(np.quantile(counts @ values / len(values), [0.025, 0.975]))


def test_mean_interval_is_a_t_over_three_branches_and_a_bootstrap_within_fewer():
    from scipy import stats

    from heatlab.score.intervals import WITHIN_BRANCHES, mean_interval

    rng = np.random.default_rng(1)
    groups = [rng.random(5), rng.random(9), rng.random(7)]
    means = np.array([g.mean() for g in groups])
    iv = mean_interval(groups)
    lo, hi = stats.t.interval(0.95, 2, loc=means.mean(), scale=stats.sem(means))
    assert (iv.estimate, iv.low, iv.high, iv.kind, iv.branches) == (pytest.approx(means.mean()), pytest.approx(lo),
                                                                   pytest.approx(hi), "t over branches", 3)
    # One branch: the bootstrap of the mean over its samples (NaN left out), near the normal interval for many samples.
    one = rng.random(400)
    iv = mean_interval([np.r_[one, np.nan]])
    assert (iv.estimate, iv.kind, iv.branches, iv.samples) == (pytest.approx(one.mean()), WITHIN_BRANCHES, 1, 400)
    assert (iv.low, iv.high) == pytest.approx(_bootstrap_reference(one))
    half = 1.96 * one.std() / np.sqrt(len(one))
    assert (iv.low, iv.high) == pytest.approx((one.mean() - half, one.mean() + half), abs=0.15 * half)
    # Two branches scoring the same samples: the samples are drawn once for both, so the interval is the bootstrap of
    # the per-sample mean over the branches; far narrower than t(0.975, 1) = 12.7 times the two means' standard error.
    a, b = rng.random(60), rng.random(60)
    pair = mean_interval([a, b])
    assert (pair.estimate, pair.kind, pair.branches) == (pytest.approx((a.mean() + b.mean()) / 2), WITHIN_BRANCHES, 2)
    assert (pair.low, pair.high) == pytest.approx(_bootstrap_reference((a + b) / 2))
    t_half = stats.t.ppf(0.975, 1) * np.std([a.mean(), b.mean()], ddof=1) / np.sqrt(2)
    assert pair.high - pair.low < 2 * t_half
    # a sample one branch lacks is left out of the interval (complete samples), not out of that branch's mean
    a_nan = np.r_[a, 0.9]
    holed = mean_interval([a_nan, np.r_[b, np.nan]])
    assert (holed.low, holed.high) == (pair.low, pair.high)
    assert holed.estimate == pytest.approx((a_nan.mean() + b.mean()) / 2)
    # branches of different lengths cannot share samples: the t interval over their means, named as such
    assert mean_interval([a, b[:30]]).kind == "t over branches"
    assert mean_interval([a, b]) == pair  # seeded: the same interval every time
    clipped = mean_interval([np.array([0.0, 1.0, 1.0])], bounds=(0.0, 1.0))
    assert clipped.high == 1.0 and clipped.low >= 0.0
    assert not mean_interval([np.array([0.5])]).defined
    with pytest.raises(HeatlabError, match="no value"):
        mean_interval([np.array([np.nan])])


def test_auroc_interval_bootstraps_one_branch_and_t_over_several():
    from scipy import stats

    from heatlab.score.gap import auroc
    from heatlab.score.intervals import auroc_interval

    rng = np.random.default_rng(2)
    pos, neg = rng.normal(1, 1, 15), rng.normal(0, 1, 9)
    iv = auroc_interval([pos], [neg], resamples=300, seed=4)
    draw = np.random.default_rng(4)  # slow reference: the same draws, one resample at a time
    p_idx, q_idx = draw.integers(0, 15, (300, 15)), draw.integers(0, 9, (300, 9))
    boot = [auroc(pos[a], neg[b]) for a, b in zip(p_idx, q_idx)]
    assert iv.estimate == auroc(pos, neg) and iv.kind == "bootstrap over samples"
    assert (iv.low, iv.high) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))
    two = auroc_interval([pos, pos[:8]], [neg, neg[:5]])
    a = np.array([auroc(pos, neg), auroc(pos[:8], neg[:5])])
    lo, hi = stats.t.interval(0.95, 1, loc=a.mean(), scale=stats.sem(a))
    assert (two.estimate, two.low, two.high) == (pytest.approx(a.mean()), pytest.approx(max(lo, 0)), pytest.approx(min(hi, 1)))
    assert math.isnan(auroc_interval([pos], [neg[:0]]).estimate)


def test_pick_best_names_a_clear_winner_and_ties_overlaps():
    from heatlab.score.intervals import Interval, pick_best

    def iv(est, lo, hi):
        return Interval(est, lo, hi, "t over branches", 3, 30)

    clear = pick_best({"a": iv(0.5, 0.4, 0.6), "b": iv(0.8, 0.7, 0.9), "c": iv(0.2, 0.1, 0.3)})
    assert (clear.best, clear.tied, clear.leader) == ("b", (), "b")
    tied = pick_best({"a": iv(0.5, 0.4, 0.72), "b": iv(0.8, 0.7, 0.9), "c": iv(0.75, 0.6, 0.71), "d": iv(0.1, 0, 0.2)})
    assert (tied.best, tied.tied) == (None, ("b", "c", "a"))
    touching = pick_best({"a": iv(0.5, 0.4, 0.7), "b": iv(0.8, 0.7, 0.9)})
    assert touching.tied == ("b", "a")  # sharing an end point counts as overlapping
    lower = pick_best({"a": iv(0.5, 0.4, 0.6), "b": iv(0.8, 0.7, 0.9)}, higher_is_better=False)
    assert lower.best == "a"
    undefined = pick_best({"a": iv(0.9, math.nan, math.nan), "b": iv(0.1, 0.0, 0.2)})
    assert undefined.best is None and undefined.tied == ("a", "b")  # no interval: it cannot beat anyone
    assert pick_best({"a": iv(0.3, 0.1, 0.5)}).best == "a"
    assert pick_best({"a": iv(math.nan, math.nan, math.nan)}) == pick_best({})


def test_near_chance_is_below_one_over_k_plus_a_tenth():
    from heatlab.score.intervals import near_chance

    assert near_chance(0.15, 10) and not near_chance(0.25, 10)
    assert near_chance(0.59, 2) and not near_chance(0.61, 2)
    assert near_chance(0.70, 2, chance=0.65) and not near_chance(0.70, 2)  # unbalanced: the largest class's share
    assert near_chance(0.55, 2, chance=0.3) == near_chance(0.55, 2)  # never below 1/K
    assert near_chance(0.333, 3) and near_chance(0.43, 3) and not near_chance(0.44, 3)
    with pytest.raises(HeatlabError, match="at least 2 classes"):
        near_chance(0.5, 1)


def test_hold_flat_axes_fixes_a_single_value_and_leaves_spread_alone():
    from heatlab.report.figures import hold_flat_axes, new_figure

    ax = new_figure(3, 2).add_subplot(1, 1, 1)
    ax.plot([4], [2.5], marker="o")
    hold_flat_axes(ax, integer="x")
    assert ax.get_xlim() == (3.0, 5.0) and ax.get_ylim() == (1.25, 3.75)
    spread = new_figure(3, 2).add_subplot(1, 1, 1)
    spread.plot([1, 5], [0.0, 0.0])
    spread.set_ylim(-1, 1)  # set by the caller: kept
    before = spread.get_xlim()
    hold_flat_axes(spread, integer="x")
    assert spread.get_xlim() == before and spread.get_ylim() == (-1.0, 1.0)
    zero = new_figure(3, 2).add_subplot(1, 1, 1)
    zero.plot([0], [0.0])
    hold_flat_axes(zero, integer="x")
    assert zero.get_xlim() == (0.0, 1.0) and zero.get_ylim() == (-0.5, 0.5)
