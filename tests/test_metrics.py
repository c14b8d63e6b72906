"""The metric registry (heatlab.score.metrics): the eight localisation entries, registration,
truth kinds, perfect heatmaps."""

import dataclasses
import importlib
import math
import pickle

import pytest
import torch

import heatlab.score
from heatlab.errors import HeatlabError
from heatlab.score import metrics
from heatlab.score.localisation import localisation_metrics
from heatlab.score.metrics import METRICS, FromAttributions, Metric, available_metrics, per_sample_scores, register

LOCALISATION = [
    f"{k}/{m}"
    for m in ("feature", "cell")
    for k in ("pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy", "auc")
]
RANKED = ("pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy", "auc")


def _cells(n=6, size=12, seed=3):
    g = torch.Generator().manual_seed(seed)
    truth = torch.zeros(n, size, size)
    truth[: n - 1, 2:9, 3:10] = 0.4
    truth[: n - 1, 4, 3:10] = 0.9  # the last sample is 'empty'
    return torch.randn(n, size, size, generator=g), truth


def test_eight_localisation_entries_match_localisation_metrics():
    assert available_metrics()[:8] == LOCALISATION
    assert available_metrics("mask")[:8] == LOCALISATION
    for name in LOCALISATION:
        m = METRICS[name]
        assert m.higher_is_better and m.needs == ("mask",) and m.family == "localisation" and m.source
    assert "CLEVR-XAI" in METRICS["relevance_mass_accuracy/cell"].source
    h, truth = _cells()
    want, got = localisation_metrics(h, truth), per_sample_scores(h, truth, "levels")
    for k in want:
        assert got[k].dtype == torch.float64
        torch.testing.assert_close(got[k], want[k], equal_nan=True, rtol=0, atol=0)
    assert all(math.isnan(got[k][-1]) for k in LOCALISATION)


def test_binary_mask_uses_one_mask_for_feature_and_cell():
    h, truth = _cells()
    mask = (truth == 0.9).float()
    got = per_sample_scores(h, mask, "mask")
    want = localisation_metrics(h, mask * 0.9)
    for k in want:
        torch.testing.assert_close(got[k], want[k], equal_nan=True, rtol=0, atol=0)
    for k in RANKED:
        torch.testing.assert_close(got[f"{k}/feature"], got[f"{k}/cell"], equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(per_sample_scores(h, mask.bool(), "mask")["auc/cell"], got["auc/cell"], equal_nan=True)


@pytest.mark.parametrize("kind", ["levels", "mask"])
def test_perfect_heatmap_scores_exactly_one(kind):
    _, truth = _cells(n=5)
    truth = truth[:4]  # no empty sample
    if kind == "mask":
        truth = (truth > 0.65).float()
    feature = (truth >= 0.65).float()
    out = per_sample_scores(feature, truth, kind)
    for k in RANKED:
        assert torch.equal(out[f"{k}/feature"], torch.ones(4, dtype=torch.float64)), k
    cell = (truth > 0).float()
    out = per_sample_scores(cell, truth, kind)
    for k in RANKED:
        assert torch.equal(out[f"{k}/cell"], torch.ones(4, dtype=torch.float64)), k


def test_registered_metric_appears_in_per_sample_scores():
    def mean_inside(h, truth):
        inside = (truth > 0).to(h.dtype)
        return (h * inside).sum((1, 2), dtype=torch.float64) / inside.sum((1, 2), dtype=torch.float64)

    def feature_share(h, truth):
        return (truth >= 0.65).sum((1, 2), dtype=torch.float64) / (truth > 0).sum((1, 2), dtype=torch.float64)

    h, truth = _cells(n=40, size=64)  # several chunks: the function sees chunks of whole samples
    mine = METRICS.register(Metric("mean_inside", True, "mask", mean_inside, "test", "nobody"),
                            Metric("feature_share", False, "levels", feature_share))
    with pytest.raises(HeatlabError, match="already registered"):
        mine.register(Metric("mean_inside", True, "mask", mean_inside))
    out = per_sample_scores(h, truth, "levels", metrics=mine)
    assert list(out) == [*LOCALISATION, "mean_inside", "feature_share"]
    torch.testing.assert_close(out["mean_inside"], mean_inside(h, truth), equal_nan=True)
    assert out["feature_share"].shape == (40,)
    only_mask = per_sample_scores(h, (truth > 0).float(), "mask", metrics=mine)
    assert "mean_inside" in only_mask and "feature_share" not in only_mask
    assert available_metrics("mask", mine)[-1] == "mean_inside"
    # register() returned a new registry: the built-in one, and what every other caller sees, is unchanged
    assert "mean_inside" not in METRICS and "feature_share" not in METRICS
    assert list(per_sample_scores(h, truth, "levels")) == LOCALISATION
    with pytest.raises(AttributeError, match="immutable"):
        METRICS.kind = "other"


def test_localisation_entries_share_one_sort_per_chunk():
    from heatlab.score.localisation import rows_of, shared_rows

    h, _ = _cells()
    assert rows_of(h) is not rows_of(h)
    with shared_rows():
        rows = rows_of(h)
        assert rows_of(h) is rows and rows_of(h.clone()) is not rows


def test_bad_input_and_bad_metrics_raise():
    h, truth = _cells(n=2)
    with pytest.raises(HeatlabError, match="0, 0.4 and 0.9"):
        per_sample_scores(h, torch.full_like(h, 0.5), "levels")
    with pytest.raises(HeatlabError, match="0/1 or bool"):
        per_sample_scores(h, truth, "mask")
    with pytest.raises(HeatlabError, match="truth_kind='levels'"):
        per_sample_scores(h, truth, "bands")
    with pytest.raises(HeatlabError, match="differ"):
        per_sample_scores(h, truth[:, :3], "levels")
    bad = h.clone()
    bad[0, 0, 0] = math.nan
    with pytest.raises(HeatlabError, match="NaN"):
        per_sample_scores(bad, truth, "levels")
    with pytest.raises(HeatlabError, match="needs"):
        Metric("x", True, "bands", lambda h, t: h)
    with pytest.raises(HeatlabError, match="takes a Metric"):
        register("auc")
    empty = per_sample_scores(h[:0], truth[:0], "levels")
    assert all(v.shape == (0,) and v.dtype == torch.float64 for v in empty.values())


def test_score_five_band_is_the_module():
    module = importlib.import_module("heatlab.score.five_band")
    assert heatlab.score.five_band is module
    from heatlab.score import five_band

    assert five_band is module and callable(five_band.five_band)


# ------------------------------------------------------------------ metrics that need the model
def test_a_model_metric_gets_the_model_inputs_and_explain_once_per_batch():
    calls = []

    def logit_gain(h, truth=None, *, model=None, x=None, y=None, a=None, explain=None, seed=0):
        calls.append(len(h))
        again = explain(model, x, y)
        torch.testing.assert_close(again, a)
        return model(x + a).gather(1, y[:, None])[:, 0].double() - model(x).gather(1, y[:, None])[:, 0].double()

    model = torch.nn.Linear(4, 3, bias=False)
    x, y = torch.randn(40, 4, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 3
    a = model.weight[y].detach()  # the gradient of logit y of a linear model: its row y
    h = a.abs()[:, None, :]  # N×1×4 "heatmaps"
    explain = lambda m, xs, ys: m.weight[ys].detach()  # noqa: E731
    mine = METRICS.register(Metric("logit_gain", True, "model", logit_gain, "test", "nobody"))
    out = per_sample_scores(h, None, None, metrics=mine, model=model, x=x, y=y, a=a, explain=explain)
    assert list(out) == ["logit_gain"] and calls == [40]  # no truth: only the model metric applies
    # a linear model gains exactly |w_y|^2 on its own class
    torch.testing.assert_close(out["logit_gain"], (a * a).sum(1).double(), rtol=1e-5, atol=1e-6)
    assert "logit_gain" not in per_sample_scores(h, None, None, metrics=mine)  # without a model it is left out


def test_from_attributions_adapts_the_no_ground_truth_signature():
    seen = {}

    def sparseness(model, x, y, a, *, explain_func=None, seed=0, power=1):
        seen.update(model=model, explain_func=explain_func, seed=seed)
        return a.flatten(1).abs().pow(power).sum(1).double()

    fn = FromAttributions(sparseness, {"power": 2})
    a = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    got = fn(a[:, None], None, model="m", x=a, y=torch.zeros(2, dtype=torch.long), a=a, explain="e", seed=7)
    assert torch.equal(got, torch.tensor([5.0, 9.0], dtype=torch.float64))
    assert seen == {"model": "m", "explain_func": "e", "seed": 7}
    shipped = FromAttributions(localisation_metrics, {"power": 2})  # a module-level fn pickles, as Ray needs
    assert pickle.loads(pickle.dumps(Metric("s", False, "model", shipped))).fn == shipped


def test_five_band_co_and_mean_power_are_entries_with_direction_and_source():
    from heatlab.score.five_band import five_band
    from heatlab.score.mean_power import mean_power

    assert METRICS["fpr_avg"].higher_is_better is False and METRICS["fpr_avg"].direction == "lower is better"
    assert METRICS["recall_best"].table == "five_band" and "paper 002" in METRICS["recall_best"].source
    assert METRICS["co_raw_sum"].needs == ("model",) and METRICS["co_raw_sum"].table == "co"
    assert METRICS["mean_power"].higher_is_better is None and METRICS["mean_power"].needs == ()
    h, truth = _cells()
    h = h / h.abs().amax((1, 2), keepdim=True)
    torch.testing.assert_close(METRICS["recall_best"].fn(h, truth), five_band(h, truth).best["recall"].double())
    torch.testing.assert_close(METRICS["mean_power"].fn(h), mean_power(h).mp.double())
    # evaluate's per-sample table holds only the scores-table entries; the others come from their stages
    assert "recall_best" not in per_sample_scores(h, truth, "levels")


def test_a_metric_returning_the_wrong_shape_is_one_sentence():
    mine = METRICS.register(Metric("bad", True, (), lambda h, truth: h.sum()))
    h, truth = _cells(n=3)
    with pytest.raises(HeatlabError, match=r"Metric 'bad' returned \(\) for 3 samples"):
        per_sample_scores(h, truth, "levels", metrics=mine)


@dataclasses.dataclass(frozen=True)
class _Info:  # the fields of a family module's MetricInfo
    name: str
    fn: object
    higher_is_better: bool
    family: str
    needs: tuple = ()
    source: str = ""


def _l1(model, x, y, a):  # a metric of a alone takes neither explain_func nor seed
    return a.flatten(1).abs().sum(1).double()


def test_from_info_registers_a_no_truth_metric_in_one_call():
    entry = Metric.from_info(_Info("l1", _l1, False, "complexity", (), "nobody"))
    assert entry.needs == ("inputs",) and entry.higher_is_better is False and entry.source == "nobody"
    mine = METRICS.register(entry)
    h, truth = _cells(n=3)
    a = torch.tensor([[[1.0, -2.0]], [[0.0, 0.0]], [[3.0, 0.5]]])
    out = per_sample_scores(h, truth, "levels", metrics=mine, a=a, x=a, y=torch.zeros(3, dtype=torch.long))
    assert torch.equal(out["l1"], torch.tensor([3.0, 0.0, 3.5], dtype=torch.float64))
    assert "l1" not in per_sample_scores(h, truth, "levels", metrics=mine)  # without the attributions: left out
    assert Metric.from_info(_Info("m", _l1, True, "x", ("model", "explain"))).needs == ("inputs", "model", "explain")
