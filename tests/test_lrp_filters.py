"""`heatlab lrp-filters`: LRP heatmaps per relevance filter, scored like evaluate, with a verdict."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from heatlab.errors import HeatlabError
from heatlab.explain import attribute
from heatlab.explain.postprocess import channel_adjust
from heatlab.models.training import predict
from heatlab.run.evaluate import score_attributions
from heatlab.run.lrp_filters import lrp_filters_run
from heatlab.run.rundir import RunDir
from heatlab.score.metrics import METRICS


@pytest.fixture(scope="module")
def studied(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("lrpf") / "run"
    shutil.copytree(tiny_run, run)
    return run, lrp_filters_run(run, filters="c0.2,p0.5", batch_size=8)


def test_rows_are_the_scores_of_lrp_with_the_filter_at_the_default_layers(studied):
    run, summary = studied
    assert summary.filters == ["none", "c0.2", "p0.5"]
    assert summary.layers == ["features.4", "features.3", "features.2", "features.1"]
    assert summary.maxpool == "winner"  # CellCNN is not one of paper 004's nets: Zennit's default
    rd = RunDir(run)
    model = rd.load_model("branch-00")
    shard = rd.open_data("test").load_shard(1)
    preds = predict(model, (shard["images"], shard["labels"]), 8)[0]
    table = pd.read_parquet(run / "tables" / "lrp_filters.parquet")
    for filt in ("none", "c0.2"):
        filters = None if filt == "none" else {layer: filt for layer in summary.layers}
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
    loc = pd.read_parquet(run / "tables" / "lrp_filters_localisation.parquet")
    assert summary.means["branch-00/none"]["mae (lower is better)"] == pytest.approx(
        loc[loc["filter"] == "none"]["mae"].mean(), abs=1e-5)


def test_effects_are_the_paired_differences_of_the_stored_rows(studied):
    run, summary = studied
    effects = pd.read_parquet(RunDir(run).table("lrp_filters_effects"))
    five = pd.read_parquet(RunDir(run).table("lrp_filters"))
    five = five[five["variant"] == "standard"]
    loc = pd.read_parquet(RunDir(run).table("lrp_filters_localisation"))
    tables = {"precision_best": five, "recall_best": five, "fpr_avg": five, "mae": loc, "auc/feature": loc}
    assert set(tables) <= set(effects["metric"]) and set(effects["filter"]) == {"c0.2", "p0.5"}
    for r in effects.itertuples():
        t = tables.get(r.metric, loc)
        keys = ["branch", "shard", "index"]
        pair = t[t["filter"] == r.filter].merge(t[t["filter"] == "none"], on=keys, suffixes=("", "_none"))
        d = (pair[r.metric] - pair[f"{r.metric}_none"]).dropna()
        assert r.difference == pytest.approx(d.mean(), abs=1e-12)
        assert (r.cells, r.branches, r.n) == (len(d), 1, len(d))  # one branch: n is the distinct cells
        assert r.low <= r.difference <= r.high and r.interval == "bootstrap over samples"
        up = r.low > 0 if r.higher_is_better else r.high < 0
        down = r.high < 0 if r.higher_is_better else r.low > 0
        assert r.verdict == ("better" if up else "worse" if down else "tied")
        stored = summary.effects[r.filter][r.metric]
        assert (stored["difference"], stored["verdict"]) == (round(r.difference, 5), r.verdict)
        assert r.metric in summary.verdicts[r.filter][r.verdict]
    assert dict(effects.groupby("metric")["higher_is_better"].first()) == {
        **{m: True for m in ("precision_best", "recall_best", "auc/feature")}, "fpr_avg": False, "mae": False,
        **({"auc/cell": True} if "auc/cell" in set(effects["metric"]) else {})}
    assert summary.design == {"cells": 20, "branches": 1, "n": 20, "interval": "bootstrap over samples", "level": 0.95}


def test_effects_pair_rows_by_branch_and_cell_and_read_each_metrics_direction():
    from heatlab.run.lrp_filters import effects

    rng = np.random.default_rng(0)
    cells = [(s, i) for s in (0, 1) for i in range(4)]  # 8 cells shared by both branches
    rows = []
    for branch in ("branch-00", "branch-01"):
        for shard, index in cells:
            p, fpr, mae = rng.random(3)
            rows.append({"branch": branch, "filter": "none", "variant": "standard", "shard": shard, "index": index,
                         "precision_best": p, "recall_best": 0.5, "fpr_avg": fpr, "mae": mae})
            rows.append({"branch": branch, "filter": "p0.5", "variant": "standard", "shard": shard, "index": index,
                         "precision_best": p + 0.1, "recall_best": 0.5, "fpr_avg": fpr - 0.02, "mae": mae + 0.03})
    table = pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # row order carries no pairing
    five = table.drop(columns="mae")
    loc = table.drop(columns=["variant", "precision_best", "recall_best", "fpr_avg"])
    got = effects({"five_band": five, "localisation": loc}, ["none", "p0.5"], ["branch-00", "branch-01"]).set_index("metric")
    want = {"precision_best": (0.1, "better"), "recall_best": (0.0, "tied"), "fpr_avg": (-0.02, "better"),
            "mae": (0.03, "worse")}
    for metric, (diff, verdict) in want.items():
        assert got.loc[metric, "difference"] == pytest.approx(diff, abs=1e-12)
        assert (got.loc[metric, "low"], got.loc[metric, "high"]) == pytest.approx((diff, diff), abs=1e-12)
        assert got.loc[metric, "verdict"] == verdict
    assert (got["cells"].unique().tolist(), got["branches"].unique().tolist(), got["n"].unique().tolist()) == ([8], [2], [16])


def test_cli_states_n_and_the_verdicts_from_the_intervals(studied, tmp_path):
    from typer.testing import CliRunner

    from heatlab.cli import app

    run = tmp_path / "run"
    shutil.copytree(studied[0], run)  # the units are done, so the command only joins them again
    result = CliRunner().invoke(app, ["lrp-filters", str(run), "--filters", "c0.2,p0.5", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "over 20 samples x 1 branches (n = 20, 20 distinct samples)" in text and "bootstrap over samples" in text
    effects = pd.read_parquet(RunDir(run).table("lrp_filters_effects"))
    for f, g in effects.groupby("filter"):
        better = ", ".join(f"{r.metric} {r.difference:+.3f} [{r.low:+.3f}, {r.high:+.3f}]"
                           for r in g.itertuples() if r.verdict == "better") or "-"
        assert f"{f} vs none: better {better};" in text
    assert "better than no filter" not in text


def test_report_section_states_the_verdict_from_the_intervals(studied, tmp_path):
    from heatlab.report.html import build_report

    run = tmp_path / "run"
    shutil.copytree(studied[0], run)
    build_report(run)
    page = (run / "report" / "index.html").read_text()
    section = page[page.index('id="lrp-filters"'):]
    assert "beat no filter" not in section and "20 samples × 1 branches (n = 20 pairs" in section
    effects = pd.read_parquet(RunDir(run).table("lrp_filters_effects"))
    r = effects[(effects["filter"] == "p0.5") & (effects["metric"] == "recall_best")].iloc[0]
    sign = lambda x: ("+" if x > 0 else "") + f"{x:.3f}"  # noqa: E731
    assert f"{sign(r.difference)} [{sign(r.low)}, {sign(r.high)}]" in section
    if r.verdict != "tied":
        assert f"{r.verdict} on" in section


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


def test_filter_layers_choose_where_the_filters_act(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from heatlab.cli import app

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    result = CliRunner().invoke(app, ["lrp-filters", str(run), "--filters", "c0.2", "--filter-layers", "features.3",
                                      "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert RunDir(run).stage_summary("lrp-filters")["layers"] == ["features.3"]
    rd = RunDir(run)
    model = rd.load_model("branch-00")
    shard = rd.open_data("test").load_shard(1)
    preds = predict(model, (shard["images"], shard["labels"]), 8)[0]
    loc = pd.read_parquet(run / "tables" / "lrp_filters_localisation.parquet")
    got = loc.query("filter == 'c0.2' and shard == 1 and branch == 'branch-00'").sort_values("index")["mae"].to_numpy()

    def mae(filters):  # per sample of the shard, in index order
        attr = attribute(model, shard["images"], "LRP", target=preds, filters=filters)
        return METRICS["mae"].fn(channel_adjust(attr), shard["truth"].float()).numpy()

    np.testing.assert_allclose(got, mae({"features.3": "c0.2"}), atol=1e-6)  # the filter acts at the layer chosen
    default = mae({layer: "c0.2" for layer in ("features.4", "features.3", "features.2", "features.1")})
    assert not np.allclose(got, default, atol=1e-4)  # ... not at the model's four


def test_a_bad_filter_layer_is_one_sentence_naming_the_flag(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from heatlab.cli import app

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = sorted(p for p in run.rglob("*"))
    result = CliRunner().invoke(app, ["lrp-filters", str(run), "--filter-layers", "features.3,nosuch"])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --filter-layers nosuch is not a layer of CellCNN"), lines
    assert sorted(p for p in run.rglob("*")) == before
    with pytest.raises(HeatlabError, match="^filter_layers='nosuch' is not a layer of CellCNN"):
        lrp_filters_run(tiny_run, filter_layers=["nosuch"])
