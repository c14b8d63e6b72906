"""The default no-truth set on every dataset (issue 22 items 3 and 6): on data with truth too, scored by
evaluate's own units on the attributions they computed (nothing explained twice, the same values as the
no-truth stage alone), with the deletion/insertion curves stored; input invariance refused at selection
for a model that cannot absorb its shift; avg-/max-sensitivity undefined (NaN) for an all-zero heatmap."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.run import no_truth as stage_module
from heatlab.run.evaluate import evaluate_run
from heatlab.run.no_truth import no_truth_run
from heatlab.run.rundir import RunDir
from heatlab.score import faithfulness as fa, robustness as rb
from heatlab.score.metrics import metric_registry
from heatlab.score.no_truth import FAST, WITH_TRUTH, select_metrics

CURVE_COLUMNS = ["branch", "method", "metric", "sample", "step", "fraction", "value"]


@pytest.fixture()
def cells(tiny_run, tmp_path):
    run = tmp_path / "cells"
    shutil.copytree(tiny_run, run)
    return run


def _counting(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = stage_module.explain_with

    def counted(model, x, y, *, method, **kw):
        calls.append(method)
        return real(model, x, y, method=method, **kw)

    monkeypatch.setattr(stage_module, "explain_with", counted)
    return calls


def test_default_on_data_with_truth_is_scored_by_evaluate_without_explaining_again(cells, tmp_path, monkeypatch):
    alone = tmp_path / "alone"
    shutil.copytree(cells, alone)
    calls = _counting(monkeypatch)
    summary = evaluate_run(cells, methods="Saliency,InputXGradient", metric_set="fast")
    assert summary.no_truth is not None
    table = pd.read_parquet(RunDir(cells).no_truth_table)
    assert list(table["metric"].unique()) == list(FAST)
    assert list(table["method"].unique()) == ["Saliency", "InputXGradient", "Random"]
    branches, shards = RunDir(cells).require_branches(), RunDir(cells).open_data("test").num_shards
    assert calls == ["Random"] * len(branches) * shards  # the real methods' attributions came from evaluate
    # the slow reference: the no-truth stage alone, which explains every unit itself
    no_truth_run(alone, methods="Saliency,InputXGradient", metrics="fast")
    pd.testing.assert_frame_equal(table, pd.read_parquet(RunDir(alone).no_truth_table), rtol=1e-6)
    pd.testing.assert_frame_equal(pd.read_parquet(RunDir(cells).no_truth_curves),
                                  pd.read_parquet(RunDir(alone).no_truth_curves), rtol=1e-6)


def test_curves_table_holds_the_curves_the_areas_come_from(cells):
    evaluate_run(cells, methods="Saliency", metric_set="deletion,insertion,sparseness")
    run = RunDir(cells)
    curves, table = pd.read_parquet(run.no_truth_curves), pd.read_parquet(run.no_truth_table)
    assert list(curves.columns) == CURVE_COLUMNS
    assert set(curves["metric"]) == {"deletion", "insertion"}  # sparseness has no curve
    assert curves["step"].dtype == np.int64 and curves["sample"].dtype == np.int64
    n_steps, side = 100, 64  # the metrics' own 100 steps on 64×64 images
    assert curves["step"].max() == n_steps
    one = curves[(curves.metric == "deletion") & (curves.method == "Saliency") & (curves["sample"] == 3)]
    expected = [round(side * side * k / n_steps) / (side * side) for k in range(n_steps + 1)]
    np.testing.assert_allclose(one["fraction"], expected)
    keys = ["branch", "method", "metric", "sample"]
    area = curves.groupby(keys, sort=False)["value"].apply(lambda v: np.trapezoid(v.to_numpy(), dx=1 / n_steps))
    values = table[table.metric.isin(["deletion", "insertion"])].set_index(keys)["value"]
    np.testing.assert_allclose(area.loc[values.index].to_numpy(), values.to_numpy(), rtol=1e-12)
    # deletion starts from the input: step 0 is the target probability of the unperturbed image
    model = run.load_model(run.require_branches()[0]).eval()
    shard = run.open_data("test").load_shard(0)
    with torch.no_grad():
        p = model(shard["images"]).softmax(-1)
    first = curves[(curves.metric == "deletion") & (curves.step == 0) & (curves.branch == run.require_branches()[0])
                   & (curves.method == "Saliency")].sort_values("sample").head(len(p))
    np.testing.assert_allclose(first["value"], p.max(1).values.double().numpy(), rtol=1e-5)


def test_curve_functions_give_the_area_and_fractions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(5, 3)).eval()
    x, a = torch.rand(4, 5), torch.rand(4, 5)
    y = torch.tensor([0, 1, 2, 0])
    c = fa.deletion_curve(model, x, y, a, n_steps=3)
    assert c.shape == (4, 4)
    np.testing.assert_allclose(fa.rise_fractions(x, 3), [0, 2 / 5, 3 / 5, 1])  # round(5k/3)/5
    np.testing.assert_allclose(fa.deletion(model, x, y, a, n_steps=3), fa.rise_auc(c))
    np.testing.assert_allclose(fa.rise_auc(c), (c[:, 0] / 2 + c[:, 1] + c[:, 2] + c[:, 3] / 2) / 3)


def _select(text, model):
    return select_metrics(text, metric_registry(), input_kind="image", truth_kind=None, input_shape=(3, 8, 8),
                          model=model)


def test_input_invariance_is_refused_at_selection_for_a_model_without_a_biased_first_layer():
    no_bias = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(HeatlabError) as e:
        _select("input_invariance", no_bias)
    message = str(e.value)
    assert "input_invariance" in message and "Conv2d without bias" in message and message.count(". ") == 0
    loaded = []
    family = _select("axiomatic", lambda: loaded.append(1) or nn.Sequential(nn.ReLU(), nn.Linear(3, 2)))
    assert "input_invariance" not in family.names and "completeness" in family.names and loaded == [1]
    assert any("input_invariance" in s and "ReLU" in s for s in family.skipped)
    ok = _select("input_invariance", nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    assert ok.names == ["input_invariance"]
    never = _select("default", lambda: pytest.fail("the model is loaded only when input_invariance is chosen"))
    assert never.names == list(FAST)


@pytest.mark.parametrize("fn", [rb.avg_sensitivity, rb.max_sensitivity])
def test_sensitivity_of_an_all_zero_heatmap_is_undefined(fn):
    """‖a − a'‖/‖a‖ with a = 0: no relative change exists (Quantus divides by zero, inf); the other samples
    keep their analytic value: the explanation of x + δ is the constant 2 for every draw."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
    x = torch.zeros(2, 4)
    a = torch.stack([torch.zeros(4), torch.ones(4)])
    explain = lambda m, xx, yy: torch.full_like(xx, 2.0)  # noqa: E731
    s = fn(model, x, torch.zeros(2, dtype=torch.long), a, explain_func=explain, nr_samples=3)
    assert torch.isnan(s[0]) and not torch.isinf(s).any()
    assert s[1].item() == pytest.approx(1.0)  # ‖1 − 2‖ / ‖1‖ over 4 values


def test_demo_plan_asks_for_the_randomisation_check_by_name():
    from heatlab.run.demo import demo_plan

    metrics = [m.strip() for m in demo_plan().no_truth_metrics.split(",")]
    names = select_metrics(metrics, metric_registry(), input_kind="image", truth_kind=None, input_shape=(3, 8, 8)).names
    assert "emprt" in names and set(FAST) <= set(names)


def test_default_scores_the_forward_free_metrics_beside_the_truth_and_the_fast_set_without_it(cells):
    """On data with truth ``default`` adds sparseness and complexity (no forward pass) to the truth scores;
    on data without truth it is the whole fast set (deletion and insertion included)."""
    summary = evaluate_run(cells, methods="Saliency")
    assert summary.no_truth is not None
    assert list(pd.read_parquet(RunDir(cells).no_truth_table)["metric"].unique()) == list(WITH_TRUTH)
    assert pd.read_parquet(RunDir(cells).no_truth_curves).empty  # no curve metric ran
    registry = metric_registry()
    for truth, expected in (("levels", WITH_TRUTH), (None, FAST)):
        chosen = select_metrics("default", registry, input_kind="image", truth_kind=truth, input_shape=(3, 64, 64))
        assert tuple(chosen.names) == expected
