"""The one registry pattern (heatlab.registry): immutable registries, ``register`` returning a new one,
toy metrics reaching evaluate's table and the report with one line each, and the ``heatlab.<kind>``
entry points adding a model, a method, a metric and a dataset."""

from __future__ import annotations

import re
import shutil
import sys
import textwrap

import pandas as pd
import pytest
import torch

from heatlab.errors import HeatlabError
from heatlab.registry import Registry
from heatlab.score.metrics import METRICS, Metric


# ----------------------------------------------------------------------------- the toy metrics
def toy_outside(h, truth):
    """Share of |h| outside the cell: lower is better (1 − relevance mass of |h| inside it)."""
    mass = h.abs().flatten(1).sum(1, dtype=torch.float64)
    inside = (h.abs() * (truth > 0.2)).flatten(1).sum(1, dtype=torch.float64)
    return 1 - inside / mass


def toy_logit(h, truth=None, *, model=None, x=None, y=None, a=None, explain=None, seed=0):
    """The logit of the explained class, plus how far ``explain`` is from ``a`` (0 for a deterministic method)."""
    with torch.no_grad():
        logit = model(x).gather(1, y[:, None])[:, 0].double()
    return logit + (explain(model, x, y) - a).abs().flatten(1).amax(1).double()


@pytest.fixture(scope="module")
def toy_evaluated(tiny_run, tmp_path_factory):
    from heatlab.report.html import build_report
    from heatlab.run.evaluate import evaluate_run

    run = tmp_path_factory.mktemp("toy") / "run"
    shutil.copytree(tiny_run, run)
    metrics = METRICS.register(
        Metric("toy_outside/cell", False, "mask", toy_outside, "toy", "Toy et al. 2026, mask"),
        Metric("toy_logit", True, "model", toy_logit, "toy", "Toy et al. 2026, model"),
    )
    evaluate_run(run, methods="Saliency", batch_size=10, metrics=metrics)
    return run, build_report(run).read_text(encoding="utf-8")


def test_toy_metrics_of_each_kind_are_columns_of_evaluates_table(toy_evaluated):
    from heatlab.run.rundir import RunDir

    run, _ = toy_evaluated
    loc = pd.read_parquet(run / "tables" / "localisation.parquet")
    assert {"toy_outside/cell", "toy_logit", "auc/cell"} <= set(loc.columns)
    rd = RunDir(run)
    data = rd.open_data("test")
    branch = rd.require_branches()[0]
    model = rd.load_model(branch).eval()
    for k in range(data.num_shards):
        shard = data.load_shard(k)
        rows = loc[(loc["shard"] == k) & (loc["branch"] == branch)].sort_values("index")
        with torch.no_grad():
            logits = model(shard["images"])
        want = logits.gather(1, torch.tensor(rows["prediction"].to_numpy())[:, None])[:, 0].double().numpy()
        # the model metric saw the branch model, the shard and the predictions; explain reran Saliency exactly
        assert rows["toy_logit"].to_numpy() == pytest.approx(want, rel=1e-5, abs=1e-6)
    # the mask metric saw the channel-adjusted heatmap and the truth: with h >= 0 (Saliency) it is 1 − mass in the cell
    assert ((loc["toy_outside/cell"] >= 0) & (loc["toy_outside/cell"] <= 1)).all()
    summary = rd.stage_summary("evaluate")
    assert summary["metrics"]["toy_outside/cell"]["higher_is_better"] is False
    assert summary["metrics"]["toy_logit"]["needs"] == ["model"]


def test_the_report_shows_the_toy_metrics_direction_and_citation(toy_evaluated):
    _, html = toy_evaluated
    assert "Lower is better: toy_outside/cell" in html
    assert re.search(r"Higher is better: [^<.]*toy_logit", html)
    assert "Toy et al. 2026, mask" in html and "Toy et al. 2026, model" in html
    assert "Higher is better for every column" not in html


def test_the_toy_registration_does_not_leak(toy_evaluated):
    assert "toy_outside/cell" not in METRICS and "toy_logit" not in METRICS
    from heatlab.score.metrics import metric_registry

    assert "toy_logit" not in metric_registry()


def test_a_registry_is_immutable_and_names_are_unique():
    base = Registry("metrics", Metric, METRICS.values())
    extra = Metric("x", True, (), toy_outside)
    grown = base.register(extra)
    assert "x" in grown and "x" not in base and list(grown)[-1] == "x"
    with pytest.raises(HeatlabError, match="metric named 'x' is already registered"):
        grown.register(extra)
    with pytest.raises(HeatlabError, match="holds Metric entries, got str"):
        base.register("x")
    with pytest.raises(AttributeError, match="immutable"):
        base.kind = "models"


# ------------------------------------------------------------------------------- entry points
PLUGIN = '''
import torch
from torch import nn

from heatlab.data.registry import DatasetEntry
from heatlab.explain.methods import saliency
from heatlab.score.metrics import Metric
from dataclasses import replace


def build(*, num_classes, in_channels=3, width=4):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


def signed_sum(h, truth=None):
    return h.flatten(1).sum(1, dtype=torch.float64)


def tiny(*, seed=0):
    from heatlab.data.tabular import wine
    return wine(seed=seed)


METRIC = Metric("plugin_sum", True, (), signed_sum, "plugin", "Plugin 2026")
METHOD = replace(saliency.SPEC, name="PluginSaliency", default=False)
DATASET = DatasetEntry("plugin_wine", __name__, "tiny", False, False, "scikit-learn's wine table, from a plugin")
'''
ENTRY_POINTS = """
[heatlab.models]
plugin_net = heatlab_toy_plugin:build

[heatlab.methods]
PluginSaliency = heatlab_toy_plugin:METHOD

[heatlab.metrics]
plugin_sum = heatlab_toy_plugin:METRIC

[heatlab.datasets]
plugin_wine = heatlab_toy_plugin:DATASET
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed distribution (a dist-info folder on sys.path) declaring one entry of each kind."""
    (tmp_path / "heatlab_toy_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "heatlab_toy_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: heatlab-toy-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("heatlab_toy_plugin", None)


def test_entry_points_add_a_model_a_method_a_metric_and_a_dataset(plugin):
    from heatlab.data.registry import dataset_registry, open_dataset
    from heatlab.explain.attribution import attribute
    from heatlab.explain.methods import method_registry
    from heatlab.models import zoo
    from heatlab.score.metrics import metric_registry

    assert "plugin_sum" in metric_registry() and "plugin_sum" not in METRICS
    assert "PluginSaliency" in method_registry()
    assert "plugin_wine" in dataset_registry()
    assert "plugin_net" in zoo.model_registry()
    model = zoo.create("plugin_net", num_classes=3, in_channels=1)
    train = open_dataset("plugin_wine", "train")
    x = train.load_shard(0)["images"][:4].float()
    model(x)  # materialise the lazy layer
    a = attribute(model, x, "PluginSaliency", target=torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(a, attribute(model, x, "Saliency", target=torch.zeros(4, dtype=torch.long)))


def test_a_broken_entry_point_is_one_sentence(tmp_path, monkeypatch):
    info = tmp_path / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[heatlab.metrics]\nnope = no_such_module_xyz:METRIC\n"
                                           "[heatlab.datasets]\nwrong = heatlab.score.metrics:METRICS\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from heatlab.data.registry import dataset_registry
    from heatlab.score.metrics import metric_registry

    with pytest.raises(HeatlabError, match=r"The heatlab.metrics entry point 'nope' \(no_such_module_xyz:METRIC\) "
                                           r"failed to load \(ModuleNotFoundError"):
        metric_registry()
    with pytest.raises(HeatlabError, match=r"gives a Registry, not a DatasetEntry; point it at a DatasetEntry"):
        dataset_registry()
