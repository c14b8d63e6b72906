"""`heatlab lrp-study`: Mean Power rows that equal a fresh LRP pass, stored heatmaps, figures, determinism."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from heatlab.errors import HeatlabError
from heatlab.explain import attribute
from heatlab.explain.methods.lrp import RelevanceRecorder
from heatlab.models import zoo
from heatlab.models.training import predict
from heatlab.run.lrp_study import _first, lrp_study
from heatlab.data import registry
from heatlab.score.mean_power import mean_power

KW = dict(epochs=1, batch_size=64, every=10, eval_samples=24, heatmap_samples=2, filters="c0.2,p0.5", seed=1)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    return out, lrp_study("digits", out, **KW)


def test_last_mean_power_rows_equal_a_fresh_lrp_pass_of_the_saved_model(study):
    out, s = study
    table = pd.read_parquet(out / "tables" / "lrp_study.parquet")
    evals = sorted(table["iteration"].unique())
    assert evals[0] == 0 and evals[-1] == s.iterations and len(table) == 4 * len(evals)
    model = zoo.create("smallnet", num_classes=10, in_channels=1)
    zoo.load_weights(model, out / "model" / "weights.safetensors")
    model.eval()
    x, y = _first(registry.open_data("digits", "test"), KW["eval_samples"])
    pred = predict(model, (x, y), 64)[0]
    # the original's names: convb_k is the relevance entering block k, convb_1 the input heatmap
    assert s.mp_points == {"convb_1": "input", "convb_2": "block1", "convb_3": "block2", "convb_4": "block3"}
    assert s.mp_layers == list(s.mp_points) and s.maxpool == s.settings["maxpool"] == "average"
    assert s.filter_layers == ["block6", "block5", "block4", "block3", "block2"]
    rec = RelevanceRecorder(["block1", "block2", "block3"])
    heat = attribute(model, x, "LRP", target=pred, record=rec)
    fresh = {"input": heat, **rec.relevance}
    last = table[table["iteration"] == s.iterations].set_index("layer")
    for label, at in s.mp_points.items():
        assert last.loc[label, "recorded_at"] == at
        assert last.loc[label, "mp_mean"] == pytest.approx(float(mean_power(fresh[at]).mp.double().mean()), rel=1e-4)
    assert last["accuracy"].iloc[0] == pytest.approx(float((pred == y).double().mean()))
    maps = load_file(str(out / "lrp_study" / "heatmaps.safetensors"))
    assert maps["heatmaps"].shape == (3, 2, 1, 28, 28)  # none, c0.2, p0.5
    want = attribute(model, x[:2], "LRP", target=pred[:2])
    peak = want.flatten(1).abs().amax(1)
    torch.testing.assert_close(maps["scale"][0], peak)
    torch.testing.assert_close(maps["heatmaps"][0].float(), (want / peak.view(-1, 1, 1, 1)).half().float())


def test_same_seed_same_table_and_a_finished_study_is_not_rerun(study, tmp_path):
    out, s = study
    again = lrp_study("digits", out, **KW)  # finished with the same settings: returned as stored
    assert again == s
    other = lrp_study("digits", tmp_path / "t", **KW)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "tables" / "lrp_study.parquet"),
                                  pd.read_parquet(tmp_path / "t" / "tables" / "lrp_study.parquet"))
    assert other.mp_trend == s.mp_trend


def test_figures_are_drawn_from_the_stored_study(study, tmp_path):
    from heatlab.report.lrp_figures import heatmap_grid_figure, mp_figure

    out, _ = study
    a = mp_figure(pd.read_parquet(out / "tables" / "lrp_study.parquet"), tmp_path / "mp.png")
    b = heatmap_grid_figure(out / "lrp_study" / "heatmaps.safetensors", tmp_path / "grid.png")
    assert a.stat().st_size > 10_000 and b.stat().st_size > 10_000


def test_bad_input(tmp_path):
    with pytest.raises(HeatlabError, match="Unknown LRP composite"):
        lrp_study("digits", tmp_path / "x", composite="nope")
    with pytest.raises(HeatlabError, match="every must be a whole number"):
        lrp_study("digits", tmp_path / "x", every=0)
    with pytest.raises(HeatlabError, match="cannot take inputs of shape \\(1, 28, 28\\)"):
        lrp_study("digits", tmp_path / "x", model="cellcnn")
    with pytest.raises(HeatlabError, match="image data"):
        lrp_study("wine", tmp_path / "x")
    with pytest.raises(HeatlabError, match="^Unknown max-pooling rule maxpool='max'"):
        lrp_study("digits", tmp_path / "x", maxpool="max")
    with pytest.raises(HeatlabError, match="^filter_layers='block9' is not a layer of SmallNet; its layers are block1, "
                                           "block2, block3, block4, block5, block6, head1, head2, head3"):
        lrp_study("digits", tmp_path / "x", filter_layers="block6,block9")
    assert not (tmp_path / "x").exists()


def test_a_killed_study_resumes_from_its_last_epoch_to_the_same_files(tmp_path):
    kw = {**KW, "epochs": 3, "every": 7}
    whole = lrp_study("digits", tmp_path / "whole", **kw)

    class Kill(Exception):
        pass

    def kill_in_third_epoch(task, done, total):
        if done == 2 * total // 3 + 3:
            raise Kill

    with pytest.raises(Kill):
        lrp_study("digits", tmp_path / "cut", progress=kill_in_third_epoch, **kw)
    cut = tmp_path / "cut"
    assert (cut / "lrp_study" / "checkpoint.safetensors").is_file() and not (cut / "lrp-study.json").exists()
    seen = []
    resumed = lrp_study("digits", cut, progress=lambda task, done, total: task == "lrp-study" and seen.append(done), **kw)
    assert seen[0] == 2 * whole.iterations // 3 + 1  # two whole epochs were not trained again
    assert resumed == whole
    pd.testing.assert_frame_equal(pd.read_parquet(cut / "tables" / "lrp_study.parquet"),
                                  pd.read_parquet(tmp_path / "whole" / "tables" / "lrp_study.parquet"))
    for name in ("model/weights.safetensors", "lrp_study/heatmaps.safetensors"):
        assert (cut / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert not (cut / "lrp_study" / "checkpoint.safetensors").exists()
