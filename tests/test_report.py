"""`heatlab report`: the page of a small fake run whose tables are written by hand (no pipeline).

The fake tables are built so every summary number is known: per method the per-sample scores
alternate value ± 0.05 around a chosen mean, and the clamp rows hold other values, so a ranking
that mixed the variants would come out in a different order.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heatlab.data.cells import CLASS_NAMES, MIN_SIZE
from heatlab.errors import HeatlabError
from heatlab.files import write_json
from heatlab.report.figures import branch_points, recall_precision_figure
from heatlab.report.gallery import GallerySample, pick_samples
from heatlab.report.html import DEFAULT_SECTIONS, Section, build_report, rank_methods

EVIL = "<script>alert(1)</script>"
METHODS = ("Saliency", "InputXGradient", "LayerGradCam")
# (standard, clamp) mean of recall_best / precision_best per method.
RECALL = {"Saliency": (0.2, 0.9), "InputXGradient": (0.5, 0.1), "LayerGradCam": (0.35, 0.3)}
PRECISION = {"Saliency": (0.6, 0.1), "InputXGradient": (0.1, 0.9), "LayerGradCam": (0.4, 0.2)}
AUC = {"Saliency": 0.7, "InputXGradient": 0.55, "LayerGradCam": 0.9}
BRANCHES = (0, 1)
N_THRESHOLDS = {"standard": 56, "clamp": 41}


def _samples(data_root: Path | None, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the test shard (or a fixed pattern without data) and predictions, every 3rd wrong."""
    if data_root is not None:
        from heatlab.data.shards import open_split

        labels = open_split(data_root, "test").load_shard(0)["labels"].numpy()
    else:
        labels = np.arange(n) % 10
    wrong = np.arange(len(labels)) % 3 == 1
    return labels, np.where(wrong, (labels + 1) % 10, labels)


def _tables(methods, labels, preds) -> dict[str, pd.DataFrame]:
    n = len(labels)
    wiggle = np.where(np.arange(n) % 2 == 0, 0.05, -0.05)  # mean zero for an even n
    five, roc, loc = [], [], []
    for b in BRANCHES:
        for method, key in zip(methods, METHODS):
            ids = {"branch": f"branch-{b:02d}", "method": method, "shard": 0, "index": np.arange(n),
                   "label": labels, "prediction": preds, "correct": labels == preds}
            for v, variant in enumerate(("standard", "clamp")):
                r, p = RECALL[key][v] + wiggle, PRECISION[key][v] - wiggle
                five.append(pd.DataFrame({
                    **{k: ids[k] for k in ("branch", "method")}, "variant": variant,
                    **{k: ids[k] for k in ("shard", "index", "label", "prediction", "correct")},
                    "accuracy_avg": 0.5, "accuracy_best": 0.6, "precision_avg": p / 2, "precision_best": p,
                    "recall_avg": r / 2, "recall_best": r, "fpr_avg": 0.1, "fpr_best": 0.2,
                }))
                t = np.arange(N_THRESHOLDS[variant])
                roc.append(pd.DataFrame({
                    "branch": ids["branch"], "method": method, "variant": variant, "threshold": t,
                    "t1": -0.5 + 0.005 * t, "t2": -0.3 + 0.005 * t, "t3": 0.3 - 0.005 * t, "t4": 0.5 - 0.005 * t,
                    "fpr": 0.01 * t / len(t) * (1 + b), "recall": RECALL[key][v] * (0.5 + t / len(t)) / 1.5,
                    "precision": 0.3, "accuracy": 0.8, "n": n,
                }))
            auc = AUC[key] + wiggle
            auc[:2] = np.nan  # empty masks: left out (the remaining wiggles still average to zero)
            loc.append(pd.DataFrame({
                **ids, "pointing_game/feature": 1.0, "pointing_game/cell": 0.5,
                "relevance_mass/feature": 0.2, "relevance_mass/cell": 0.4, "relevance_rank/feature": 0.3,
                "relevance_rank/cell": 0.6, "auc/feature": auc, "auc/cell": 0.8,
            }))
    return {"five_band": pd.concat(five, ignore_index=True), "roc": pd.concat(roc, ignore_index=True),
            "localisation": pd.concat(loc, ignore_index=True)}


def make_fake_run(tmp: Path, *, with_data: bool = True, methods=METHODS, class_names=None) -> Path:
    """A run folder with hand-written tables, two tiny branch models and (optionally) a small dataset (the generator's minimum size)."""
    from heatlab.models import zoo

    run, data = tmp / "run", tmp / "data"
    if with_data:
        from heatlab.data.shards import write_cells

        write_cells(data, size=max(32, MIN_SIZE), shard_size=10, shards={"train": 1, "val": 1, "test": 1})
    names = list(class_names or [EVIL, *CLASS_NAMES[1:]])
    for b in BRANCHES:
        model = zoo.create(zoo.DEFAULT_MODEL, num_classes=10, in_channels=3, seed=b)
        folder = run / "model" / f"branch-{b:02d}"
        folder.mkdir(parents=True)
        zoo.save_weights(model, folder / "weights.safetensors")
        write_json(folder / "model.json", {
            "spec": dict(model.heatlab_spec), "stage": f"branch-{b:02d}", "branch": b, "seed": 0,
            "stop_reason": "target" if b == 0 else "patience", "iterations": 40 + b, "best_shard_acc": 0.9,
            "val_acc": 0.91 + b / 100, "test_acc": 0.88 + b / 100, "class_names": names,
        })
    write_json(run / "config.json", {"data_root": str(data), "seed": 0, "training": {"target_acc": 0.96}})
    labels, preds = _samples(data if with_data else None)
    tables = _tables(methods, labels, preds)
    (run / "tables").mkdir()
    for name, df in tables.items():
        df.to_parquet(run / "tables" / f"{name}.parquet", index=False)
    iters = np.arange(1, 9)
    pd.DataFrame({"phase": ["base"] * 8 + ["branch-00"] * 8 + ["branch-01"] * 8, "iteration": np.tile(iters, 3),
                  "epoch": 0, "loss": np.tile(2.0 / iters, 3)}).to_parquet(run / "tables" / "training.parquet")
    pd.DataFrame({"branch": [0, 0, 1, 1], "iteration": [4, 8, 4, 8], "epoch": 0, "shard": 0,
                  "accuracy": [0.5, 0.7, 0.6, 0.8], "decision": ["improved"] * 4, "saved": True}).to_parquet(
        run / "tables" / "validation.parquet")
    write_json(run / "evaluate.json", {"split": "test", "methods": list(methods),
                                       "branches": [f"branch-{b:02d}" for b in BRANCHES], "complete": True})
    return run


def _text(html: str) -> str:
    """Visible text: tags removed, whitespace collapsed (entities kept)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    run = make_fake_run(tmp_path_factory.mktemp("full"))
    calls = []
    page = build_report(run, progress=lambda task, done, total: calls.append((task, done, total)))
    return run, page, page.read_text(encoding="utf-8"), calls


def test_page_has_every_section_and_its_figures(full_report):
    run, page, html, calls = full_report
    assert page == run / "report" / "index.html"
    for section in DEFAULT_SECTIONS:
        assert f'<section id="{section.id}">' in html
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


def test_gallery_has_one_figure_per_class_with_correct_and_wrong(full_report):
    run, page, html, _ = full_report
    labels, preds = _samples(Path(run.parent / "data"))
    present = sorted(set(labels.tolist()))
    files = sorted(p.name for p in (page.parent / "figures").glob("gallery-class-*.png"))
    assert files == [f"gallery-class-{c:02d}.png" for c in present]
    wrong = [(int(l), int(p)) for l, p in zip(labels, preds) if l != p]
    l, p = wrong[0]
    names = ["&lt;script&gt;alert(1)&lt;/script&gt;", *CLASS_NAMES[1:]]
    assert f"wrong: true {names[l]}, predicted {names[p]}" in html


def test_data_text_is_escaped(full_report):
    _, _, html, _ = full_report
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_summary_ranks_methods_by_hand_computed_means(full_report):
    _, _, html, _ = full_report
    text = _text(html.split('<section id="data">')[0])
    assert "InputXGradient 0.500 &gt; LayerGradCam 0.350 &gt; Saliency 0.200" in text  # recall, standard only
    assert "Saliency 0.600 &gt; LayerGradCam 0.400 &gt; InputXGradient 0.100" in text  # precision
    assert "LayerGradCam 0.900 &gt; Saliency 0.700 &gt; InputXGradient 0.550" in text  # AUC/feature, NaN skipped
    # 10 test samples, predictions wrong at indices 1, 4, 7 -> accuracy 0.7 for both branches.
    assert ("branch-00 0.700 (10 samples; test_acc 0.880 at training), "
            "branch-01 0.700 (10 samples; test_acc 0.890 at training)") in text


def test_training_and_localisation_tables(full_report):
    _, _, html, _ = full_report
    training = _text(html.split('<section id="training">')[1].split("</section>")[0])
    assert "branch-00 target 40 0.910 0.880" in training and "branch-01 patience 41 0.920 0.890" in training
    loc = _text(html.split('<section id="localisation">')[1].split("</section>")[0])
    assert "LayerGradCam 1.000 (20)" in loc  # pointing_game/feature over 2 branches × 10 samples
    assert "0.900 (16)" in loc  # auc/feature: two NaN per (branch, method) left out
    assert "Zhang et al. 2018" in loc and "Arras et al. 2022" in loc and "Fawcett 2006" in loc


def test_report_without_data_skips_gallery_and_escapes_method_names(tmp_path):
    odd = ("Saliency<b>", "A&B", 'Q"uote')
    run = make_fake_run(tmp_path, with_data=False, methods=odd)
    html = build_report(run).read_text(encoding="utf-8")
    assert html.split('<section id="ax">')[0].count('class="note"') == 2  # preview and gallery
    assert "No gallery" in html and "No dataset preview" in html
    for raw, escaped in (("Saliency<b>", "Saliency&lt;b&gt;"), ("A&B", "A&amp;B"), ('Q"uote', "Q&quot;uote")):
        assert escaped in html
    assert "Saliency<b>" not in html and "A&B" not in html
    assert (run / "report" / "figures" / "roc.png").is_file()
    assert not list((run / "report" / "figures").glob("gallery-*"))


def test_missing_tables_say_to_evaluate_first(tmp_path):
    run = make_fake_run(tmp_path, with_data=False)
    (run / "tables" / "roc.parquet").unlink()
    with pytest.raises(HeatlabError, match=r"roc\.parquet.*heatlab evaluate"):
        build_report(run)
    assert not (run / "report" / "index.html").exists()


def test_missing_model_and_bad_inputs_raise(tmp_path):
    run = make_fake_run(tmp_path, with_data=False)
    with pytest.raises(HeatlabError, match="not evaluated"):
        build_report(run, gallery_branch="branch-07")
    write_json(run / "evaluate.json", {"split": "test", "complete": False})
    with pytest.raises(HeatlabError, match="incomplete"):
        build_report(run)
    (run / "evaluate.json").unlink()
    for b in BRANCHES:
        (run / "model" / f"branch-{b:02d}" / "model.json").unlink()
    with pytest.raises(HeatlabError, match="heatlab train"):
        build_report(run)
    with pytest.raises(HeatlabError, match="does not exist"):
        build_report(tmp_path / "nope")


def test_broken_table_is_a_clear_error(tmp_path):
    run = make_fake_run(tmp_path, with_data=False)
    (run / "tables" / "five_band.parquet").write_bytes(b"not parquet")
    with pytest.raises(HeatlabError, match="unreadable"):
        build_report(run)
    pd.DataFrame({"branch": ["branch-00"]}).to_parquet(run / "tables" / "five_band.parquet")
    with pytest.raises(HeatlabError, match="lacks column"):
        build_report(run)


def test_extra_sections_are_added_by_a_builder(tmp_path):
    run = make_fake_run(tmp_path, with_data=False)
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


def test_recall_precision_figure_is_deterministic(tmp_path):
    tables = _tables(METHODS, np.arange(10) % 10, np.arange(10) % 10)
    a = recall_precision_figure(tables["five_band"], tmp_path / "a.png")
    b = recall_precision_figure(tables["five_band"], tmp_path / "b.png")
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
