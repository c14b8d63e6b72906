"""What a user meets choosing no-truth metrics on their own data (a table, a folder of images): a
family or ``all`` with a stated baseline, and the words ``--metrics`` and ``--help`` use."""

from __future__ import annotations

import pytest

from heatlab.errors import HeatlabError
from heatlab.score import perturb
from heatlab.score.metrics import metric_registry
from heatlab.score.no_truth import BASELINE_METRICS, select_metrics


@pytest.mark.parametrize("baseline", [b for b in perturb.BASELINES if b != "blur"])
def test_every_stated_baseline_runs_with_all_metrics_on_a_table(baseline):
    selection = select_metrics("all", metric_registry(), input_kind="table", truth_kind=None, input_shape=(13,),
                               perturb_baseline=baseline)
    options = selection.options()
    takers = [n for n in options if n in BASELINE_METRICS]
    assert "completeness" in options and len(takers) > 3
    kept = [n for n in takers if options[n].get("perturb_baseline") != baseline]
    # completeness takes black, white and mean only: with another it keeps its own and says so
    assert kept == ([] if baseline in ("black", "white", "mean") else ["completeness"])
    assert any("completeness kept its own baseline" in s for s in selection.skipped) == bool(kept)


def test_blur_runs_with_the_axiomatic_family_on_images():
    selection = select_metrics("axiomatic", metric_registry(), input_kind="image", truth_kind=None,
                               input_shape=(3, 32, 32), perturb_baseline="blur")
    assert selection.options()["non_sensitivity"]["perturb_baseline"] == "blur"
    assert "perturb_baseline" not in selection.options()["completeness"]


def test_a_named_metric_that_does_not_take_the_baseline_is_refused():
    with pytest.raises(HeatlabError, match="for completeness; pass one of black, white, mean"):
        select_metrics("completeness,deletion", metric_registry(), input_kind="table", truth_kind=None,
                       input_shape=(13,), perturb_baseline="uniform")


@pytest.mark.parametrize("text", ["", " , ", []])
def test_an_empty_selection_says_it_names_no_metric(text):
    with pytest.raises(HeatlabError, match=r"names no metric; choose from the families") as info:
        select_metrics(text, metric_registry(), input_kind="table", truth_kind=None, input_shape=(13,))
    assert "(none)" not in str(info.value)


def test_the_families_listed_are_the_ones_a_name_selects():
    with pytest.raises(HeatlabError) as info:
        select_metrics("nosuch", metric_registry(), input_kind="table", truth_kind=None, input_shape=(13,))
    families = str(info.value).split("the families ")[1].split(", the metrics")[0].split(", ")
    assert "faithfulness" in families and "complexity" not in families  # 'complexity' selects the metric alone
    selection = select_metrics("complexity", metric_registry(), input_kind="table", truth_kind=None, input_shape=(13,))
    assert selection.names == ["complexity"]


def test_step_metrics_on_images_take_a_bounded_number_of_forward_passes():
    """Quantus's features_in_step=1 is one pass per value (3,072 on a 32×32 RGB image, and 100 times that for
    monotonicity correlation); fitted to images they take IMAGE_STEPS steps, on tables one feature a step."""
    import torch
    from torch import nn

    from heatlab.score.no_truth import IMAGE_STEPS, STEP_METRICS, no_truth_scores

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 30 * 30, 2)).eval()
    rows = []
    model.register_forward_hook(lambda m, i, o: rows.append(len(i[0])))
    x = torch.rand(2, 3, 32, 32)
    y = torch.tensor([0, 1])
    a = torch.rand_like(x)
    selection = select_metrics(",".join(STEP_METRICS), metric_registry(), input_kind="image", truth_kind=None,
                               input_shape=(3, 32, 32), perturb_baseline="black")
    for m in selection.metrics:
        assert m.fn.options["features_in_step"] == 3 * 32 * 32 // IMAGE_STEPS, m.name
        rows.clear()
        values = no_truth_scores(model, x, y, a, [m])[m.name]
        assert values.shape == (2,) and torch.isfinite(values).all()
        assert sum(rows) <= len(x) * (IMAGE_STEPS + 2), (m.name, sum(rows))  # the steps and the unperturbed input
    table = select_metrics(",".join(STEP_METRICS), metric_registry(), input_kind="table", truth_kind=None,
                           input_shape=(13,))
    assert all("features_in_step" not in m.fn.options for m in table.metrics)


def test_a_patch_size_or_baseline_that_no_chosen_metric_takes_is_said_to_be_unused():
    selection = select_metrics("sparseness", metric_registry(), input_kind="image", truth_kind=None,
                               input_shape=(3, 32, 32), patch_size=4, perturb_baseline="mean")
    assert selection.names == ["sparseness"]
    assert any(s.startswith("The patch size 4 was not used") for s in selection.skipped), selection.skipped
    assert any(s.startswith("The baseline 'mean' was not used") for s in selection.skipped), selection.skipped
    used = select_metrics("fast,selectivity", metric_registry(), input_kind="image", truth_kind=None,
                          input_shape=(3, 32, 32), patch_size=4, perturb_baseline="mean")
    assert not any("was not used" in s for s in used.skipped)


def test_each_robustness_metric_re_explains_robustness_samples_times_not_quantus_200():
    import torch
    from torch import nn

    from heatlab.score.no_truth import ROBUSTNESS_SAMPLES, no_truth_scores

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x, y = torch.rand(4, 5), torch.tensor([0, 1, 2, 0])
    calls = []

    def explain(m, xx, yy):  # gradient × input, counted
        calls.append(len(xx))
        xx = xx.detach().requires_grad_(True)
        return (torch.autograd.grad(m(xx).gather(1, yy[:, None]).sum(), xx)[0] * xx).detach()

    a = explain(model, x, y)
    selection = select_metrics("robustness", metric_registry(), input_kind="table", truth_kind=None, input_shape=(5,))
    assert len(selection.metrics) == 6
    for m in selection.metrics:
        calls.clear()
        values = no_truth_scores(model, x, y, a, [m], explain=explain)[m.name]
        assert values.shape == (4,)
        assert sum(calls) == ROBUSTNESS_SAMPLES * len(x), (m.name, sum(calls))  # one explanation per perturbed input


def test_the_report_says_why_a_relative_stability_score_is_undefined():
    """relative_*_stability are NaN where the prediction changed under a perturbation (Quantus's
    return_nan_when_prediction_changes), not only for a zero or constant heatmap."""
    from heatlab.report.templates import render

    said = str(render("no_truth_undefined.html", undefined={"relative_input_stability": {"values": 12, "nan": 6, "inf": 0}}))
    assert "6 of the 12 values of relative_input_stability" in said and "predicted class changed" in said
    other = str(render("no_truth_undefined.html", undefined={"monotonicity_correlation": {"values": 9, "nan": 1, "inf": 0}}))
    assert "predicted class" not in other and "model outputs that do not move" in other
    assert str(render("no_truth_undefined.html", undefined={})).strip() == ""


def test_input_invariance_runs_on_heatlabs_own_models_behind_flatten_or_normalize():
    """heatlab's mlp starts with Flatten, its image models with Normalize: the first layer with a bias is behind
    them, so input_invariance was left out on every model heatlab trains. The shifted model must give the
    shifted input the original outputs (exact for a Linear first layer)."""
    import torch
    from torch import nn

    from heatlab.models.mlp import build_mlp
    from heatlab.models.normalize import Normalize
    from heatlab.score.axiomatic import shift_lack, shifted_model

    torch.manual_seed(0)
    mlp = build_mlp(num_classes=3, in_channels=1, input_shape=[13]).double().eval()
    x = torch.rand(5, 13, dtype=torch.float64)
    normed = nn.Sequential(Normalize((0.5, 0.4, 0.3), (0.2, 0.3, 0.25)), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).double()
    xi = torch.rand(5, 3, 4, 4, dtype=torch.float64)
    for model, inputs in ((mlp, x), (normed, xi)):
        assert shift_lack(model) is None
        shifted = shifted_model(model, inputs, -1.0)
        torch.testing.assert_close(shifted(inputs - 1.0), model(inputs), rtol=1e-10, atol=1e-10)
    selection = select_metrics("axiomatic", metric_registry(), input_kind="table", truth_kind=None,
                               input_shape=(13,), model=mlp)
    assert "input_invariance" in selection.names and not selection.skipped


def test_evaluate_says_when_no_method_beats_the_random_control(capsys):
    from heatlab.cli import _print_no_truth
    from heatlab.run.results import NoTruthResult

    row = lambda hib, best, floor: {"best": "Saliency", "best_mean": best, "higher_is_better": hib,  # noqa: E731
                                    "random_mean": floor}
    summary = NoTruthResult(split="test", methods=["Saliency", "Random"], control="Random", branches=["b"], samples=4,
                            best={"max_sensitivity": row(False, 1.27, 0.72), "sparseness": row(True, 0.59, 0.33),
                                  "emprt": row(True, 0.01, 0.02), "deletion": row(False, 0.4, 0.6)},
                            table="t.parquet")
    _print_no_truth(summary)
    lines = {ln.split(" (")[0].strip(): ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")}
    assert "no method beats Random" in lines["max_sensitivity"] and "no method beats Random" in lines["emprt"]
    assert "beats" not in lines["sparseness"] and "beats" not in lines["deletion"]
