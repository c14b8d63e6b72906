"""`heatlab lrp-filters`: LRP heatmaps per relevance filter, scored like evaluate, with a verdict."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from heatlab.errors import HeatlabError
from heatlab.explain import attribute
from heatlab.models.training import predict
from heatlab.run.evaluate import score_attributions
from heatlab.run.lrp_filters import lrp_filters_run
from heatlab.run.rundir import RunDir


@pytest.fixture(scope="module")
def studied(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("lrpf") / "run"
    shutil.copytree(tiny_run, run)
    return run, lrp_filters_run(run, filters="c0.2,p0.5", batch_size=8)


def test_rows_are_the_scores_of_lrp_with_the_filter_at_the_default_layers(studied):
    run, summary = studied
    assert summary["filters"] == ["none", "c0.2", "p0.5"]
    assert summary["layers"] == ["features.4", "features.3", "features.2", "features.1"]
    assert summary["maxpool"] == "winner"  # CellCNN is not one of paper 004's nets: Zennit's default
    rd = RunDir(run)
    model = rd.load_model("branch-00")
    shard = rd.open_data("test").load_shard(1)
    preds = predict(model, (shard["images"], shard["labels"]), 8)[0]
    table = pd.read_parquet(run / "tables" / "lrp_filters.parquet")
    for filt in ("none", "c0.2"):
        filters = None if filt == "none" else {layer: filt for layer in summary["layers"]}
        attr = attribute(model, shard["images"], "LRP", target=preds, filters=filters)
        five, _, _ = score_attributions(attr, shard["labels"], shard["truth"], "levels", predictions=preds, shard=1)
        want = five[five["variant"] == "standard"].sort_values("index")
        got = table.query(f"filter == '{filt}' and shard == 1 and variant == 'standard'").sort_values("index")
        np.testing.assert_allclose(got["recall_best"].to_numpy(), want["recall_best"].to_numpy(), atol=1e-6)
        loc = pd.read_parquet(run / "tables" / "lrp_filters_localisation.parquet")
        mae = loc.query(f"filter == '{filt}' and shard == 1").sort_values("index")["mae"].to_numpy()
        # eq. (5) of paper 004 against the truth, by hand: mean over pixels of |h/max|h| summed - truth|
        h = attr.sum(1) / attr.abs().amax((1, 2, 3), keepdim=True).squeeze(1).clamp_min(1e-30)
        h = h / h.abs().amax((1, 2), keepdim=True).clamp_min(1e-30)
        np.testing.assert_allclose(mae, (h - shard["truth"].float()).abs().mean((1, 2)).numpy(), atol=1e-5)
    # the verdict is what the table's means say
    std = table[table["variant"] == "standard"].groupby("filter")[["precision_best", "recall_best"]].mean()
    better = [f for f in ("c0.2", "p0.5") if (std.loc[f] > std.loc["none"]).all()]
    assert summary["better_than_none"]["branch-00"] == better
    loc = pd.read_parquet(run / "tables" / "lrp_filters_localisation.parquet")
    assert summary["means"]["branch-00/none"]["mae (lower is better)"] == pytest.approx(
        loc[loc["filter"] == "none"]["mae"].mean(), abs=1e-5)


def test_report_section_states_the_verdict(studied, tmp_path):
    from heatlab.report.html import build_report

    run = tmp_path / "run"
    shutil.copytree(studied[0], run)
    build_report(run)
    page = (run / "report" / "index.html").read_text()
    assert 'id="lrp-filters"' in page and "beat no filter" in page and "c0.2" in page


def test_bad_input(tiny_run, tiny_wine_run):
    with pytest.raises(HeatlabError, match="must be a number in \\[0, 1\\]"):
        lrp_filters_run(tiny_run, filters="c1.5")
    with pytest.raises(HeatlabError, match="Unknown LRP composite"):
        lrp_filters_run(tiny_run, composite="zplus")
    with pytest.raises(HeatlabError, match="^Unknown max-pooling rule maxpool='max'"):
        lrp_filters_run(tiny_run, maxpool="max")
    with pytest.raises(HeatlabError, match="ground truth"):
        lrp_filters_run(tiny_wine_run)
    assert not (tiny_run / "tables" / "lrp_filters.parquet").exists()
