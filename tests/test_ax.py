"""`heatlab ax`: tables that agree with the CO scores computed directly, resumable, reported, clear errors."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import typer
from typer.testing import CliRunner

from heatlab.data.shards import open_split
from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.files import read_json
from heatlab.report.ax_figures import ax_section
from heatlab.report.html import ReportContext
from heatlab.models.input_space import input_space
from heatlab.models.training import predict
from heatlab.run.ax import GROUPINGS, ID_COLUMNS, RECORD_COLUMNS, VARIANTS, ax_run
from heatlab.run.training import load_branch
from heatlab.score.co import co_score, prepare_heatmaps
from heatlab.score.gap import gap_analysis

METHODS = "Saliency,InputXGradient"


@pytest.fixture(scope="module")
def axed(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("ax") / "run"
    shutil.copytree(tiny_run, run)
    summary = ax_run(run, methods=METHODS, batch_size=7)
    return run, summary


def _tables(run):
    return {k: pd.read_parquet(run / "tables" / f"{k}.parquet") for k in ("co", "co_gap")}


def _split(run, name):
    return open_split(read_json(run / "config.json")["data_root"], name)


def test_tables_have_the_expected_rows_and_columns(axed):
    run, summary = axed
    t = _tables(run)
    n_test, n_val = len(_split(run, "test")), len(_split(run, "val"))
    assert list(t["co"].columns) == ID_COLUMNS + RECORD_COLUMNS
    assert summary.space == "input" and summary.normalized  # the tiny run's model carries the data's mean/std
    main = t["co"][t["co"]["space"] == "input"]
    assert len(main) == 1 * 2 * (n_test + n_val)  # branch × method × samples of test and val
    assert main.groupby("split").size().to_dict() == {"test": 2 * n_test, "val": 2 * n_val}
    assert list(main["method"].unique()) == ["Saliency", "InputXGradient"]  # registry order
    # Table 2's comparison line: Saliency on the test split in the pixel space, nothing else.
    other = t["co"][t["co"]["space"] == "pixel"]
    assert len(other) == n_test and set(other["method"]) == {"Saliency"} and set(other["split"]) == {"test"}
    assert len(t["co_gap"]) == 1 * 2 * len(VARIANTS) * len(GROUPINGS)
    assert set(t["co_gap"]["threshold_split"]) == {"val"} and set(t["co_gap"]["split"]) == {"test"}
    assert summary.largest_gap["method"] in ("Saliency", "InputXGradient")
    assert read_json(run / "ax.json")["complete"] is True


def test_rows_equal_the_co_scores_computed_directly(axed):
    """Recompute branch-00 on test shard 1 by hand, in the input space with a model that has no
    Normalize fed the standardised tensor, and in the pixel space, and compare with the table rows."""
    run, _ = axed
    shard = _split(run, "test").load_shard(1)
    model = load_branch(run, 0)
    mean, std = model.normalize.mean, model.normalize.std
    bare = load_branch(run, 0)
    bare.normalize = None  # the same weights, taking standardised input
    z = (shard["images"] - mean) / std
    # predictions as the stage makes them (batches of 7): this tiny model has near-ties between classes
    pred = predict(model, (shard["images"], shard["labels"]), 7)[0]
    co = _tables(run)["co"]
    for method, space, net, x in (("InputXGradient", "input", bare, z), ("Saliency", "input", bare, z),
                                  ("Saliency", "pixel", model, shard["images"])):
        options = {"abs": False} if method == "Saliency" else {}  # the paper000 preset: signed Saliency
        h = prepare_heatmaps(attribute(net, x, method, target=pred, **options))
        rows = co.query(f"method == '{method}' and split == 'test' and shard == 1 and space == '{space}'")
        np.testing.assert_array_equal(rows["index"].to_numpy(), np.arange(len(pred)))
        np.testing.assert_array_equal(rows["prediction"].to_numpy(), pred.numpy())
        np.testing.assert_array_equal(rows["correct_before"].to_numpy(), (pred == shard["labels"]).numpy())
        for output, ax in (("raw", "sum"), ("softmax", "mult")):
            want = co_score(net, x, h, shard["labels"], ax=ax, output=output).numpy()
            np.testing.assert_allclose(rows[f"co_{output}_{ax}"].to_numpy(), want, rtol=1e-4, atol=1e-6)


def test_input_space_switches_the_normalize_off_and_back_on(axed):
    run, _ = axed
    model = load_branch(run, 0)
    norm = model.normalize
    x = _split(run, "test").load_shard(0)["images"][:4]
    with torch.no_grad():
        want = model(x)
        with input_space(model) as (net, to_input):
            assert net.normalize is None
            torch.testing.assert_close(net(to_input(x)), want)
        assert model.normalize is norm
        with pytest.raises(RuntimeError):
            with input_space(model):
                raise RuntimeError("boom")
        assert model.normalize is norm  # restored after an error too
        with input_space(model, "pixel") as (net, to_input):
            assert net.normalize is norm and to_input(x) is x


def test_correct_after_grouping_is_the_gap_analysis_of_the_after_columns(axed):
    run, _ = axed
    t = _tables(run)
    co = t["co"].query("method == 'InputXGradient' and space == 'input'")
    test, val = co[co["split"] == "test"], co[co["split"] == "val"]
    for variant, column in (("raw_sum", "correct_after_sum"), ("softmax_mult", "correct_after_mult")):
        want = gap_analysis(test[f"co_{variant}"], test[column], holdout_co=val[f"co_{variant}"],
                            holdout_correct=val[column]).as_row()
        got = t["co_gap"].query(f"method == 'InputXGradient' and variant == '{variant}' and grouping == 'correct_after'")
        assert len(got) == 1
        for key, value in want.items():
            assert (math.isnan(got.iloc[0][key]) and math.isnan(value)) if isinstance(value, float) and math.isnan(value) \
                else got.iloc[0][key] == value, key


def test_gap_rows_are_the_gap_analysis_of_test_with_the_threshold_from_val(axed):
    run, _ = axed
    t = _tables(run)
    co = t["co"].query("method == 'Saliency' and space == 'input'")
    test, val = co[co["split"] == "test"], co[co["split"] == "val"]
    want = gap_analysis(test["co_softmax_sum"], test["correct_before"],
                        holdout_co=val["co_softmax_sum"], holdout_correct=val["correct_before"]).as_row()
    got = t["co_gap"].query("method == 'Saliency' and variant == 'softmax_sum' and grouping == 'correct_before'").iloc[0]
    for key, value in want.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == value, key


def test_killed_run_restarted_gives_identical_tables(axed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(axed[0], run)
    before = _tables(run)
    parts = run / "tables" / "parts"
    # as if killed: a unit lost its marker, a method never started, the joined tables were not written
    (parts / "ax-test" / "branch-00" / "Saliency" / "shard-00001.done.json").unlink()
    shutil.rmtree(parts / "ax-val" / "branch-00" / "InputXGradient")
    for k in before:
        (run / "tables" / f"{k}.parquet").unlink()
    seen = []
    ax_run(run, methods=METHODS, batch_size=7, progress=lambda task, done, total: seen.append(done))
    assert seen == [4, 5, 6]  # 6 units (2 methods × 3 shards of test and val): only the 2 unfinished redone
    after = _tables(run)
    for k in before:
        pd.testing.assert_frame_equal(before[k], after[k], check_exact=True)
    assert not list(run.rglob("*.tmp"))


def test_a_subset_of_methods_adds_to_the_tables_and_replace_starts_over(axed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(axed[0], run)
    before = _tables(run)
    seen = []
    summary = ax_run(run, methods="InputXGradient", batch_size=7, progress=lambda task, done, total: seen.append(done))
    assert seen == [6] and summary.methods == ["Saliency", "InputXGradient"]  # nothing redone, nothing lost
    for k, table in _tables(run).items():
        pd.testing.assert_frame_equal(table, before[k], check_exact=True)
    # Another space is another table: the earlier methods are not mixed in.
    assert ax_run(run, methods="InputXGradient", batch_size=7, space="pixel").methods == ["InputXGradient"]
    ax_run(run, methods="Saliency", batch_size=7, space="pixel")
    assert set(_tables(run)["co"]["method"]) == {"Saliency", "InputXGradient"}
    assert ax_run(run, methods="Saliency", batch_size=7, space="pixel", replace=True).methods == ["Saliency"]
    assert set(_tables(run)["co_gap"]["method"]) == {"Saliency"}


def test_bad_input_gives_one_clear_sentence(tiny_run, tmp_path):
    with pytest.raises(HeatlabError, match="Unknown method"):
        ax_run(tiny_run, methods="Saliency,Magic")
    with pytest.raises(HeatlabError, match="Batch size"):
        ax_run(tiny_run, methods="Saliency", batch_size=0)
    with pytest.raises(HeatlabError, match="no config.json"):
        ax_run(tmp_path, methods="Saliency")
    with pytest.raises(HeatlabError, match="(?i)split .nope. is not"):
        ax_run(tiny_run, methods="Saliency", split="nope")
    with pytest.raises(HeatlabError, match="holdout_split='none'"):
        ax_run(tiny_run, methods="Saliency", holdout_split="nope")
    with pytest.raises(HeatlabError, match="Unknown AX space 'pixels'"):
        ax_run(tiny_run, methods="Saliency", space="pixels")
    with pytest.raises(HeatlabError, match="Unknown preset 'paper'"):
        ax_run(tiny_run, methods="Saliency", preset="paper")
    assert not (tiny_run / "tables" / "co.parquet").exists()


def test_input_space_asked_for_a_model_without_normalize_says_how_to_add_it(tiny_run, tmp_path, monkeypatch):
    from heatlab.run.rundir import RunDir

    load = RunDir.load_model

    def without_normalize(self, branch, **kw):
        model = load(self, branch, **kw)
        model.normalize = None  # as a model trained with --normalize none
        return model

    monkeypatch.setattr(RunDir, "load_model", without_normalize)
    with pytest.raises(HeatlabError, match=r"heatlab train --normalize data.*space='pixel'"):
        ax_run(tiny_run, methods="Saliency", space="input")
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    summary = ax_run(run, methods="Saliency", batch_size=10)  # the default falls back to the pixel space, and says so
    assert summary.space == "pixel" and not summary.normalized and "pixel space" in summary.space_note
    assert set(_tables(run)["co"]["space"]) == {"pixel"}


def test_without_holdout_the_threshold_is_chosen_in_sample(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    summary = ax_run(run, methods="Saliency", holdout_split="none", batch_size=10)
    t = _tables(run)
    assert summary.holdout_split is None and set(t["co"]["split"]) == {"test"}
    assert set(t["co_gap"]["threshold_split"]) == {"test"} and set(t["co_gap"]["threshold_source"]) == {"in-sample"}


def _context(run):
    empty = pd.DataFrame()
    out = run / "report"
    return ReportContext(run_dir=run, out_dir=out, fig_dir=out / "figures", config={}, evaluation={},
                         five_band=empty, roc=empty, localisation=empty, branches=["branch-00"], models={},
                         class_names=[], methods=[], split="test", gallery_branch="branch-00")


def test_section_shows_figures_and_numbers_and_escapes_text(axed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(axed[0], run)
    html = ax_section(_context(run))
    for name in ("ax_co_box_sum.png", "ax_co_box_mult.png", "ax_co_hist.png", "ax_accuracy.png",
                 "ax_co_box_sum_after.png", "ax_co_box_mult_after.png", "ax_co_hist_after.png"):
        assert f'src="figures/{name}"' in html
        assert (run / "report" / "figures" / name).stat().st_size > 10_000
    assert "AUROC" in html and "InputXGradient" in html and "before AX" in html
    # the space, the preset, both groupings and Table 2's comparison line are stated
    assert "<b>input</b> space" in html and "paper000" in html and "abs=False" in html
    assert "after AX (v2)" in html and "before AX (v1)" in html
    assert "<i>Saliency, pixel space</i>" in html
    # a hostile method name from the tables is shown as text, never as markup
    for name in ("co", "co_gap"):
        path = run / "tables" / f"{name}.parquet"
        df = pd.read_parquet(path)
        df["method"] = df["method"].replace("Saliency", "<script>x</script>")
        df.to_parquet(path, index=False)
    html = ax_section(_context(run))
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html


def test_section_uses_before_ax_for_the_error_numbers_and_calls_after_ax_a_reproduction(axed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(axed[0], run)
    html = ax_section(_context(run))
    gap = _tables(run)["co_gap"]
    raw = gap[gap["variant"] == "raw_sum"]
    error, journal = html.split("<h3>The gap in numbers")[1].split("<h3>The journal version")
    # the error-detector table: one row per (method, branch) of the before-AX grouping, with the flag threshold
    for r in raw[raw["grouping"] == "correct_before"].itertuples():
        cells = [r.method, r.branch, f"{r.auroc:.3f}", f"{r.median_correct:.3f}", f"{r.median_wrong:.3f}"]
        assert "<td>" + "</td><td>".join(cells) + "</td>" in error
        assert f"<td>{r.threshold:.3f}</td>" in error
    assert error.count("<tr>") == 1 + len(raw[raw["grouping"] == "correct_before"])
    assert "flag threshold" in error and "flag threshold</th>" not in journal
    for r in raw[raw["grouping"] == "correct_after"].itertuples():
        assert f"<td>{r.method}</td><td>{r.branch}</td><td>{r.auroc:.3f}</td>" in journal
    assert "not an error test" in journal and "not an error test" in html.split("<h3>")[0]
    # this run's inflation, before -> after, from the table's means
    means = raw.groupby(["method", "grouping"])["auroc"].mean()
    for m in raw["method"].unique():
        assert f"{m} {means[m, 'correct_before']:.3f} → {means[m, 'correct_after']:.3f}" in html


def test_section_without_ax_tables_is_a_note(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    html = ax_section(_context(run))
    assert html.startswith('<p class="note">') and "heatlab ax" in html


def test_cli_command_prints_the_largest_gap_and_fails_cleanly(axed, tmp_path):
    from heatlab.cli_ax import register

    app = typer.Typer()
    app.command("noop")(lambda: None)  # a second command keeps "ax" a subcommand
    register(app)
    runner = CliRunner()
    run = tmp_path / "run"
    shutil.copytree(axed[0], run)
    result = runner.invoke(app, ["ax", str(run), "--methods", METHODS, "--batch-size", "7"])
    assert result.exit_code == 0, result.output
    assert "largest gap:" in result.output and "co.parquet" in result.output
    assert (run / "report" / "figures" / "ax_co_box_sum.png").exists()
    assert "input space: h is added to the tensor after the model's own Normalize" in result.output
    result = runner.invoke(app, ["ax", str(run), "--methods", "Magic"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    result = runner.invoke(app, ["ax", str(run), "--ax-space", "pixels"])
    assert result.exit_code != 0 and "Unknown AX space 'pixels'" in result.output and "Traceback" not in result.output
