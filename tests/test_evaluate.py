"""`heatlab evaluate`: tables that agree with the metrics computed directly, resumable, clear errors."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from heatlab.data.shards import open_split
from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.explain.postprocess import channel_adjust
from heatlab.explain.methods.selection import parse_methods
from heatlab.run.evaluate import evaluate_run
from heatlab.run.training import load_branch
from heatlab.score.five_band import five_band

METHODS = "Saliency,GradientShap"


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("ev") / "run"
    shutil.copytree(tiny_run, run)
    evaluate_run(run, methods=METHODS, batch_size=7)
    return run


def _tables(run):
    return {k: pd.read_parquet(run / "tables" / f"{k}.parquet") for k in ("five_band", "roc", "localisation")}


def test_tables_have_one_row_per_sample_and_threshold(evaluated):
    t = _tables(evaluated)
    n = len(open_split(pd.read_json(evaluated / "config.json", typ="series")["data_root"], "test"))
    assert len(t["five_band"]) == 1 * 2 * 3 * n  # branch × method × variant (standard, clamp twice) × sample
    assert len(t["localisation"]) == 1 * 2 * n
    assert len(t["roc"]) == 1 * 2 * (56 + 41 + 41)
    assert set(t["five_band"]["method"]) == {"Saliency", "GradientShap"}
    assert (t["roc"]["n"] == n).all()


def _shard_and_attribution(run, k: int = 1):
    """Test shard ``k``, its predictions by branch-00, and GradientShap computed directly for them."""
    config = pd.read_json(run / "config.json", typ="series")
    shard = open_split(config["data_root"], "test").load_shard(k)
    model = load_branch(run, 0)
    with torch.no_grad():
        pred = model(shard["images"]).argmax(1)
    return shard, pred, attribute(model, shard["images"], "GradientShap", target=pred, seed=int(config["seed"]))


def test_rows_equal_the_metrics_computed_directly(evaluated):
    """Recompute branch-00 / GradientShap on test shard 1 by hand and compare with the table rows."""
    shard, pred, attr = _shard_and_attribution(evaluated)
    res = five_band(channel_adjust(attr, clamp=(-0.1, 0.1)), shard["truth"], variant="clamp")
    rows = _tables(evaluated)["five_band"].query("method == 'GradientShap' and variant == 'clamp' and shard == 1")
    rows = rows.sort_values("index")
    np.testing.assert_array_equal(rows["prediction"].to_numpy(), pred.numpy())
    np.testing.assert_allclose(rows["recall_best"].to_numpy(), res.best["recall"].numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(rows["precision_avg"].to_numpy(), res.avg["precision"].numpy(), rtol=0, atol=1e-12)
    # the original code's order: the raw attribution clipped before normalising
    res = five_band(channel_adjust(attr, clamp=(-0.1, 0.1), clamp_order="original"), shard["truth"], variant="clamp")
    rows = _tables(evaluated)["five_band"].query("method == 'GradientShap' and variant == 'clamp_original' and shard == 1")
    np.testing.assert_allclose(rows.sort_values("index")["recall_best"].to_numpy(), res.best["recall"].numpy(),
                               rtol=0, atol=1e-12)
    # the preset in force (paper002) is recorded in config.json and evaluate.json
    config = pd.read_json(evaluated / "config.json", typ="series")
    assert config["attribution"]["evaluate"]["preset"] == "paper002"
    assert config["attribution"]["evaluate"]["options"]["GradientShap"] == {"baseline_dist": "normal"}


def test_roc_is_the_mean_over_all_samples_of_the_split(evaluated):
    t = _tables(evaluated)
    five = t["five_band"].query("method == 'Saliency' and variant == 'standard'")
    roc = t["roc"].query("method == 'Saliency' and variant == 'standard'").sort_values("threshold")
    # the mean over thresholds of the per-threshold means equals the mean of per-sample averages
    assert roc["recall"].mean() == pytest.approx(five["recall_avg"].mean(), abs=1e-12)
    assert roc["fpr"].mean() == pytest.approx(five["fpr_avg"].mean(), abs=1e-12)


def test_killed_run_restarted_gives_identical_tables(evaluated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated, run)
    before = _tables(run)
    parts = run / "tables" / "parts" / "evaluate-test" / "branch-00"
    # as if killed: one unit lost its marker, another never started, the joined tables were not written
    (parts / "Saliency" / "shard-00001.done.json").unlink()
    shutil.rmtree(parts / "GradientShap")
    for k in before:
        (run / "tables" / f"{k}.parquet").unlink()
    evaluate_run(run, methods=METHODS, batch_size=3)  # another batch size must not change a number
    after = _tables(run)
    for k in before:
        pd.testing.assert_frame_equal(before[k], after[k], check_exact=False, atol=1e-6)
    assert not list(run.rglob("*.tmp"))


def test_a_subset_of_methods_adds_to_the_tables_and_replace_starts_over(evaluated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated, run)
    before = _tables(run)
    seen = []
    evaluate_run(run, methods="InputXGradient", batch_size=7, progress=lambda task, done, total: task == "evaluate" and seen.append((done, total)))
    assert seen[0] == (4, 6) and seen[-1] == (6, 6)  # the 4 earlier units are read, not redone
    after = _tables(run)
    for k, table in after.items():
        assert set(table["method"]) == {"Saliency", "InputXGradient", "GradientShap"}
        old = table[table["method"] != "InputXGradient"].reset_index(drop=True)
        pd.testing.assert_frame_equal(old, before[k].reset_index(drop=True), check_exact=True)
    assert (run / "heatmaps" / "test" / "branch-00" / "InputXGradient.safetensors").is_file()
    # Another preset is other numbers: the earlier methods are not mixed in.
    evaluate_run(run, methods="Saliency", batch_size=7, preset="uniform")
    assert set(_tables(run)["five_band"]["method"]) == {"Saliency"}
    evaluate_run(run, methods="Saliency,InputXGradient", batch_size=7)
    evaluate_run(run, methods="InputXGradient", batch_size=7, replace=True)
    assert set(_tables(run)["five_band"]["method"]) == {"InputXGradient"}


def test_bad_input_gives_one_clear_sentence(tiny_run, tmp_path):
    with pytest.raises(HeatlabError, match="Unknown method"):
        parse_methods("Saliency,Magic")
    with pytest.raises(HeatlabError, match="no config.json"):
        evaluate_run(tmp_path, methods="Saliency")
    with pytest.raises(HeatlabError, match="(?i)split .nope. is not"):
        evaluate_run(tiny_run, methods="Saliency", split="nope")
    assert parse_methods("all")[0] == "Saliency" and len(parse_methods("all")) == 11


def test_stored_mass_accuracy_is_positive_part_in_unit_interval(evaluated):
    """Stored relevance mass/rank accuracy use positive relevance (CLEVR-XAI): recompute by hand."""
    shard, pred, attr = _shard_and_attribution(evaluated)
    h = channel_adjust(attr).double().numpy()
    cell = shard["truth"].numpy() > 0.2
    want = []
    for x, m in zip(h, cell):
        pos = np.maximum(x, 0)
        want.append(pos[m].sum() / pos.sum() if m.any() and pos.sum() > 0 else np.nan)
    loc = _tables(evaluated)["localisation"]
    rows = loc.query("method == 'GradientShap' and shard == 1 and branch == @loc.branch.min()").sort_values("index")
    got = rows["relevance_mass_accuracy/cell"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    values = loc[[c for c in loc.columns if c.startswith("relevance_")]].to_numpy(dtype=float)
    assert np.all((values[~np.isnan(values)] >= 0) & (values[~np.isnan(values)] <= 1))
