"""`heatlab report`: the page of runs the pipeline itself produced (cells with every stage, wine without truth).

Expected numbers are computed from the pipeline's own tables, never written by hand, so a ranking
or an accuracy that the page got wrong shows up as a difference.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heatlab.data.cells import CLASS_NAMES
from heatlab.errors import HeatlabError
from heatlab.files import write_json
from heatlab.report.figures import branch_points, recall_precision_figure
from heatlab.report.gallery import GallerySample, pick_samples
from heatlab.report.html import DEFAULT_SECTIONS, Section, build_report, gallery_section, load_context, rank_methods

EVIL = "<script>alert(1)</script>"
METHODS = ("Saliency", "InputXGradient", "LayerGradCam")


def make_run(tmp: Path, tiny_run: Path, *, methods=METHODS, ax: bool = True) -> Path:
    """A copy of the session's tiny trained cell run, evaluated (and put through AX and GAX) by the pipeline."""
    from heatlab.run.ax import ax_run
    from heatlab.run.evaluate import evaluate_run
    from heatlab.run.gax import gax_run

    run = tmp / "run"
    shutil.copytree(tiny_run, run)
    evaluate_run(run, methods=",".join(methods), split="test")
    if ax:
        ax_run(run, methods="Saliency", split="test")
        gax_run(run, split="test", first_n_correct=2, max_steps=3, batch_size=2)
    return run


def _text(html: str) -> str:
    """Visible text: tags removed, whitespace collapsed (entities kept)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture(scope="module")
def full_report(tmp_path_factory, tiny_run):
    run = make_run(tmp_path_factory.mktemp("full"), tiny_run)
    calls = []
    page = build_report(run, progress=lambda task, done, total: calls.append((task, done, total)))
    return run, page, page.read_text(encoding="utf-8"), calls


def test_page_has_every_section_and_its_figures(full_report):
    run, page, html, calls = full_report
    assert page == run / "report" / "index.html"
    for section in DEFAULT_SECTIONS:  # every section but the bar charts that only tables get
        assert (f'<section id="{section.id}">' in html) == (section.id != "features"), section.id
    srcs = re.findall(r'<img src="([^"]+)"', html)
    for name in ("preview.png", "training.png", "recall_precision.png", "roc.png"):
        assert f"figures/{name}" in srcs
    assert any(s.startswith("figures/gallery-class-") for s in srcs)
    for src in srcs:
        assert not Path(src).is_absolute() and (page.parent / src).stat().st_size > 1000
    assert "://" not in html  # no external resource of any kind
    assert ("report", len(DEFAULT_SECTIONS), len(DEFAULT_SECTIONS)) in calls
    core = html.split('<section id="ax">')[0]  # AX and GAX sections come last and need their own stages
    assert 'class="note"' not in core  # nothing was skipped


def _expected_ranking(five: pd.DataFrame, column: str) -> list[str]:
    standard = five[five["variant"] == "standard"]
    means = standard.groupby("method", sort=False)[column].mean()
    return [m for m, _ in sorted(zip(means.index, means.values), key=lambda mv: -mv[1])]


def test_gallery_has_one_figure_per_class_with_correct_and_wrong(full_report):
    run, page, html, _ = full_report
    five = pd.read_parquet(run / "tables" / "five_band.parquet")
    present = sorted(set(five["label"].tolist()))
    files = sorted(p.name for p in (page.parent / "figures").glob("gallery-class-*.png"))
    assert files == [f"gallery-class-{c:02d}.png" for c in present]
    rows = five[(five["branch"] == "branch-00")].drop_duplicates(["shard", "index"]).sort_values(["shard", "index"])
    wrong = rows[rows["label"] != rows["prediction"]]
    if len(wrong):
        first = wrong.iloc[0]
        assert f"wrong: true {CLASS_NAMES[first.label]}, predicted {CLASS_NAMES[first.prediction]}" in html


def test_summary_ranks_methods_by_the_tables_means(full_report):
    run, _, html, _ = full_report
    five = pd.read_parquet(run / "tables" / "five_band.parquet")
    text = _text(html.split('<section id="data">')[0])
    for column, what in (("recall_best", "recall"), ("precision_best", "precision")):
        sentence = text.split(f"Ranked by mean best {what} (standard variant, all branches and samples): ")[1].split(". ")[0]
        shown = [part.split()[0] for part in sentence.split("&gt;")]
        assert shown == _expected_ranking(five, column), sentence
    correct = five.drop_duplicates(["branch", "shard", "index"])["correct"].mean()
    assert f"branch-00 {correct:.3f}" in text


def test_training_and_localisation_tables(full_report):
    run, _, html, _ = full_report
    info = pd.read_json(run / "model" / "branch-00" / "model.json", typ="series")
    training = _text(html.split('<section id="training">')[1].split("</section>")[0])
    assert f"branch-00 {info['stop_reason']} {info['iterations']} {info['val_acc']:.3f} {info['test_acc']:.3f}" in training
    loc = pd.read_parquet(run / "tables" / "localisation.parquet")
    section = _text(html.split('<section id="localisation">')[1].split("</section>")[0])
    values = loc.loc[loc["method"] == "Saliency", "auc/feature"]
    assert f"{values.mean():.3f} ({values.notna().sum()})" in section
    assert "Zhang et al. 2018" in section and "Arras et al. 2022" in section and "Fawcett 2006" in section


def test_data_text_is_escaped_by_the_sections(full_report):
    run, _, _, _ = full_report
    ctx = load_context(run)
    ctx.class_names = [EVIL, *CLASS_NAMES[1:]]
    html = gallery_section(ctx)
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_run_without_ground_truth_has_no_score_sections(tmp_path):
    from heatlab.models.training import TrainConfig
    from heatlab.run.ax import ax_run
    from heatlab.run.evaluate import evaluate_run
    from heatlab.run.training import train_run

    run = tmp_path / "wine"
    train_run("wine", run, TrainConfig(model="drybeanfpa", epochs=2, branches=1, branch_epochs=1, batch_size=16))
    evaluate_run(run, methods="Saliency,IntegratedGradients")
    ax_run(run, methods="Saliency")
    html = build_report(run).read_text(encoding="utf-8")
    for present in ("overview", "training", "features", "ax"):
        assert f'<section id="{present}">' in html
    for absent in ("summary", "recall-precision", "roc", "gallery", "localisation", "data"):
        assert f'<section id="{absent}">' not in html
    assert "need ground truth" in html  # what evaluate skipped, and why
    assert (run / "report" / "figures" / "feature_relevance.png").stat().st_size > 1000


def test_missing_results_and_bad_inputs_raise(tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with pytest.raises(HeatlabError, match="heatlab evaluate"):
        build_report(run)  # trained, nothing to report yet
    run = make_run(tmp_path / "b", tiny_run, methods=("Saliency",), ax=False)
    with pytest.raises(HeatlabError, match="not evaluated"):
        build_report(run, gallery_branch="branch-07")
    write_json(run / "evaluate.json", {"split": "test", "complete": False})
    with pytest.raises(HeatlabError, match="incomplete"):
        build_report(run)
    with pytest.raises(HeatlabError, match="does not exist"):
        build_report(tmp_path / "nope")


def test_broken_table_is_a_clear_error(tmp_path, tiny_run):
    run = make_run(tmp_path, tiny_run, methods=("Saliency",), ax=False)
    (run / "tables" / "five_band.parquet").write_bytes(b"not parquet")
    with pytest.raises(HeatlabError, match="unreadable"):
        build_report(run)
    pd.DataFrame({"branch": ["branch-00"]}).to_parquet(run / "tables" / "five_band.parquet")
    with pytest.raises(HeatlabError, match="lacks column"):
        build_report(run)


def test_extra_sections_are_added_by_a_builder(full_report):
    run, _, _, _ = full_report
    extra = Section("extra", "Extra <i>", lambda ctx: f"<p>{len(ctx.methods)} methods</p>")
    html = build_report(run, sections=[DEFAULT_SECTIONS[0], extra]).read_text(encoding="utf-8")
    assert '<section id="extra"><h2>Extra &lt;i&gt;</h2>' in html and "<p>3 methods</p>" in html
    assert '<section id="roc">' not in html


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


def test_recall_precision_figure_is_deterministic(full_report, tmp_path):
    five = pd.read_parquet(full_report[0] / "tables" / "five_band.parquet")
    a = recall_precision_figure(five, tmp_path / "a.png")
    b = recall_precision_figure(five, tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()


def test_pick_samples_first_correct_then_first_wrong_per_class():
    rows = pd.DataFrame({
        "branch": "branch-00", "method": ["m2", "m2", "m1", "m1", "m1", "m1"],
        "shard": [1, 0, 0, 1, 0, 0], "index": [0, 5, 2, 0, 5, 3],
        "label": [4, 4, 4, 4, 4, 2], "prediction": [4, 1, 4, 4, 1, 2],
    })
    picked = pick_samples(rows, "branch-00")
    assert picked == {2: [GallerySample(0, 3, 2, 2)], 4: [GallerySample(0, 2, 4, 4), GallerySample(0, 5, 4, 1)]}
    with pytest.raises(HeatlabError, match="no rows"):
        pick_samples(rows, "branch-09")
