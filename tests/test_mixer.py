"""Paper 003's Mixer: IG settings, the frozen classifier, the label leak, and the `mixer` stage."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from heatlab.cli import app
from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.improve.mixer import (
    MASK_INIT_BIAS, MaskedClassifier, Mixer, MixerConfig, all_mixer_attributions, leak_scores, masked_predictions, masks,
    mixer_attributions, parse_settings, random_wrong_labels, resolve_architecture, train_mixer,
)
from heatlab.run.mixer import mixer_run
from heatlab.score.intervals import bootstrap_over_seeds_and_samples

runner = CliRunner()


def _conv_classifier(seed: int = 0, sharp: float = 1.0) -> nn.Module:
    """A small conv net; ``sharp`` scales the logits (so the softmax is far from uniform)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(24, 4)).eval()
    with torch.no_grad():
        model[-1].weight.mul_(sharp)
    return model


def _block_task(n: int, seed: int):
    """x uniform in [0,1]^20, labels drawn independently of x, C(x)_k = sum of feature block k (5 features).

    The label is recoverable from the true-class IG (x ⊙ W_y: non-zero only on block y) and from
    nothing else, so only the true-class setting can beat chance.
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(4, 20)
    for k in range(4):
        w[k, 5 * k : 5 * k + 5] = 1.0
    c = nn.Linear(20, 4)
    c.weight.data, c.bias.data = w, torch.zeros(4)
    return c, torch.rand(n, 20, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_probability_weighted_ig_is_the_weighted_sum_of_per_class_ig():
    model = _conv_classifier()
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    w = torch.softmax(torch.randn(5, 4, generator=torch.Generator().manual_seed(2)), 1)
    one_pass = attribute(model, x, "IntegratedGradients", output_weights=w, n_steps=16, batch_size=2)
    per_class = sum(w[:, k].view(-1, 1, 1, 1) * attribute(model, x, "IntegratedGradients", target=k, n_steps=16)
                    for k in range(4))
    torch.testing.assert_close(one_pass, per_class, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("setting", ["true-class", "predicted", "expected"])
def test_attributions_used_are_complete(setting):
    """IG completeness on the attributions the Mixer reads: sum A = g(x) − g(0) for the setting's output g."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 64, 4)).eval()
    with torch.no_grad():
        model[-1].weight.mul_(30.0)  # confident predictions: a wrong class weighting would show
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    a = mixer_attributions(model, x, labels, setting, n_steps=256)
    with torch.no_grad():
        fx, f0 = model(x), model(torch.zeros_like(x))
    if setting == "expected":
        p = torch.softmax(fx, 1)
        assert float(p.max(1).values.min()) > 0.5  # far from uniform: a wrong weighting would show
        want = ((fx - f0) * p).sum(1)
    else:
        t = labels if setting == "true-class" else fx.argmax(1)
        want = (fx - f0).gather(1, t[:, None])[:, 0]
    # Gauss-Legendre steps across ReLU kinks: exact only in the limit, so 1% of the largest difference.
    torch.testing.assert_close(a.flatten(1).sum(1), want, rtol=0, atol=0.01 * float(want.abs().max()))


def test_predicted_setting_computed_with_the_others_equals_its_own_pass():
    """The shared pass reuses true-class IG where C is right; it must equal IG for the predicted class."""
    model = _conv_classifier(sharp=30.0)
    x = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    labels = torch.arange(12) % 4
    together = all_mixer_attributions(model, x, labels, ["true-class", "predicted", "expected"], n_steps=8)
    with torch.no_grad():
        preds = model(x).argmax(1)
    assert 0 < int((preds == labels).sum()) < 12  # both paths are taken
    torch.testing.assert_close(together["predicted"], attribute(model, x, "IntegratedGradients", target=preds, n_steps=8))
    torch.testing.assert_close(together["true-class"], mixer_attributions(model, x, labels, "true-class", n_steps=8))


def test_classifier_is_bit_identical_after_mixer_training():
    model = _conv_classifier()
    model.train()  # the caller's mode must come back too
    model[0].weight.requires_grad_(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(40, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.randint(0, 4, (40,), generator=torch.Generator().manual_seed(5))
    a = mixer_attributions(model, x, y, "true-class", n_steps=8)
    train_mixer(model, x, a, y, MixerConfig(epochs=3, patience=3, batch_size=8, lr=0.01))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running stats included
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_a_mask_of_ones_reproduces_the_classifiers_predictions_exactly():
    model = _conv_classifier()
    x = torch.rand(30, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    a = torch.randn_like(x)
    mixer = Mixer((3, 8, 8)).eval()
    nn.init.zeros_(mixer.head[-1].weight)
    nn.init.constant_(mixer.head[-1].bias, 100.0)  # sigmoid(100) is exactly 1.0 in float32
    net = MaskedClassifier(model, mixer)
    assert torch.equal(masks(net, x, a), torch.ones(30, 1, 8, 8))
    with torch.no_grad():
        assert torch.equal(masked_predictions(net, x, a), model(x).argmax(1))


def test_new_mixer_starts_close_to_the_identity_mask():
    m = Mixer((3, 8, 8), per_channel=True).eval()
    out = m(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    assert out.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out, torch.full_like(out, torch.sigmoid(torch.tensor(MASK_INIT_BIAS)).item()),
                               atol=0.02, rtol=0)
    assert Mixer((20,)).eval()(torch.rand(2, 20), torch.rand(2, 20)).shape == (2, 20)


def test_only_the_true_class_attribution_recovers_a_label_the_input_does_not_hold():
    """The leak the report must show: labels independent of x; true-class IG carries them, predicted IG not."""
    c, x, y = _block_task(900, seed=7)
    c_test, x_test, y_test = _block_task(400, seed=8)
    config = MixerConfig(epochs=12, patience=4, batch_size=64, lr=0.003)
    acc = {}
    for setting in ("true-class", "predicted"):
        net = MaskedClassifier(c, train_mixer(c, x, mixer_attributions(c, x, y, setting, n_steps=4), y, config).mixer)
        a_test = mixer_attributions(c, x_test, y_test, setting, n_steps=4)
        acc[setting] = float((masked_predictions(net, x_test, a_test) == y_test).double().mean())
    with torch.no_grad():
        plain = float((c(x_test).argmax(1) == y_test).double().mean())
    assert plain < 0.35
    assert acc["true-class"] > 0.95
    assert acc["predicted"] < 0.35


def test_settings_and_config_refuse_bad_values():
    assert parse_settings("expected, true-class") == ["true-class", "expected"]
    assert parse_settings(None) == ["true-class", "predicted", "expected", "none"]
    for bad in ("bogus", ""):
        with pytest.raises(HeatlabError, match="setting"):
            parse_settings(bad)
    for kw in ({"batch_size": 1}, {"lr": 5.0}, {"lr": 0}, {"holdout": 1.0}, {"architecture": "rnn"}, {"epochs": 0}):
        with pytest.raises(HeatlabError):
            MixerConfig(**kw)
    with pytest.raises(HeatlabError, match="architecture='fc'"):
        Mixer((13,), architecture="conv")


def _layers(seq: nn.Sequential) -> list[tuple]:
    """(type, sizes) per module: Linear (in, out), BatchNorm1d (features), others ()."""
    sizes = {nn.Linear: lambda m: (m.in_features, m.out_features), nn.BatchNorm1d: lambda m: (m.num_features,)}
    return [(type(m).__name__, sizes.get(type(m), lambda m: ())(m)) for m in seq]


def test_fc_mixer_is_table_1_layer_for_layer():
    """Paper 003, Table 1 (Fashion-MNIST): Fx, FA = FC512-BN-ReLU-FC256; Mixer = FC512-BN-ReLU-FC784 (+ sigmoid)."""
    m = Mixer((1, 28, 28), architecture="fc")
    encoder = [("Flatten", ()), ("Linear", (784, 512)), ("BatchNorm1d", (512,)), ("ReLU", ()), ("Linear", (512, 256))]
    assert _layers(m.fx) == encoder and _layers(m.fa) == encoder
    assert _layers(m.mix) == [("Linear", (512, 512)), ("BatchNorm1d", (512,)), ("ReLU", ()), ("Linear", (512, 784))]
    with torch.no_grad():
        out = m.eval()(torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 1, 28, 28) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_auto_architecture_is_fc_for_28px_single_channel_images_and_tables():
    for shape in ((1, 28, 28), (1, 8, 8), (13,)):
        assert resolve_architecture(shape, "auto") == "fc", shape
    for shape in ((3, 28, 28), (1, 64, 64), (3, 64, 64)):
        assert resolve_architecture(shape, "auto") == "conv", shape
    assert Mixer((1, 28, 28)).architecture == "fc" and Mixer((1, 28, 28), architecture="conv").architecture == "conv"


def test_random_wrong_labels_are_wrong_seeded_and_cover_every_other_class():
    y = torch.arange(4000) % 10
    w = random_wrong_labels(y, 10, seed=3)
    assert not bool((w == y).any()) and torch.equal(w, random_wrong_labels(y, 10, seed=3))
    assert not torch.equal(w, random_wrong_labels(y, 10, seed=4))
    shift = (w - y) % 10  # uniform over 1..9: each about 4000/9 = 444 times
    assert sorted(shift.unique().tolist()) == list(range(1, 10)) and int(torch.bincount(shift)[1:].min()) > 350


def test_leak_scores_count_true_and_fed_labels():
    y, wrong = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([1, 2, 3, 0, 2])
    assert leak_scores(torch.tensor([1, 2, 2, 0, 1]), y, wrong) == {"leak_accuracy": 0.2, "leak_wrong_share": 0.6}
    with pytest.raises(HeatlabError, match="wrong"):
        leak_scores(y, y, y)


def test_leak_test_of_a_label_passing_mixer_predicts_the_fed_wrong_label():
    """Labels independent of x, so the true-class Mixer can only pass the label through: fed the IG of a
    random wrong label it must predict that label (share ~1) and almost never the true one."""
    c, x, y = _block_task(900, seed=7)
    _, x_test, y_test = _block_task(400, seed=8)
    net = MaskedClassifier(c, train_mixer(c, x, mixer_attributions(c, x, y, "true-class", n_steps=4), y,
                                          MixerConfig(epochs=12, patience=4, batch_size=64, lr=0.003)).mixer)
    wrong = random_wrong_labels(y_test, 4, seed=0)
    fed = masked_predictions(net, x_test, mixer_attributions(c, x_test, wrong, "true-class", n_steps=4))
    scores = leak_scores(fed, y_test, wrong)
    assert scores["leak_wrong_share"] > 0.95 and scores["leak_accuracy"] < 0.05
    with torch.no_grad():
        assert float((c(x_test).argmax(1) == wrong).double().mean()) < 0.4  # C alone is near chance (1/4)


def test_bootstrap_over_seeds_and_samples_on_known_cases():
    sample = (torch.rand(400, generator=torch.Generator().manual_seed(0)) < 0.8).double().numpy()
    same = bootstrap_over_seeds_and_samples([sample, sample, sample])
    assert same.estimate == pytest.approx(sample.mean()) and same.high - same.low > 0.05  # a t over seeds gives 0
    half = 1.959964 * (sample.mean() * (1 - sample.mean()) / 400) ** 0.5  # one seed: the binomial interval
    single = bootstrap_over_seeds_and_samples([sample])
    assert single.low == pytest.approx(sample.mean() - half, abs=0.006)
    assert single.high == pytest.approx(sample.mean() + half, abs=0.006)
    const = bootstrap_over_seeds_and_samples([[0.7] * 50] * 3)
    assert const.high - const.low == pytest.approx(0, abs=1e-12) and const.estimate == pytest.approx(0.7)
    # Seeds constant within, 0 and 1: resampled seed means are 0, 1/2, 1 (p = 1/4, 1/2, 1/4), so [0, 1].
    spread = bootstrap_over_seeds_and_samples([[0.0] * 30, [1.0] * 30])
    assert (spread.low, spread.estimate, spread.high) == (0.0, 0.5, 1.0)
    assert bootstrap_over_seeds_and_samples([sample] * 2, seed=5) == bootstrap_over_seeds_and_samples([sample] * 2, seed=5)
    with pytest.raises(HeatlabError, match="seeds × samples"):
        bootstrap_over_seeds_and_samples([0.1, 0.2])


# ----------------------------------------------------------------------------------- the stage
SMALL = {"seeds": 2, "n_steps": 4, "config": MixerConfig(epochs=2, patience=2, batch_size=8)}


@pytest.fixture(scope="module")
def mixer_runs(tiny_run, tmp_path_factory):
    """Two copies of the tiny cell run, each with the same small Mixer run."""
    out = []
    for name in ("a", "b"):
        run = tmp_path_factory.mktemp("mixer") / name
        shutil.copytree(tiny_run, run)
        summary = mixer_run(run, **SMALL)
        out.append((run, summary))
    return out


def test_mixer_stage_writes_one_row_per_setting_and_seed(mixer_runs):
    run, summary = mixer_runs[0]
    rows = pd.read_parquet(run / "tables" / "mixer.parquet")
    assert sorted(zip(rows["setting"], rows["seed"])) == sorted((s, k) for s in ("true-class", "predicted", "expected",
                                                                                   "none") for k in range(2))
    assert rows["accuracy_plain"].nunique() == 1 and rows["test_samples"].iloc[0] == 20
    for setting, r in summary.settings.items():
        assert r["ci_low"] <= r["accuracy_masked"] <= r["ci_high"]
        assert r["accuracy_masked"] == pytest.approx(rows.loc[rows["setting"] == setting, "accuracy_masked"].mean())
    assert (run / "mixer" / "weights" / "expected-seed-1.safetensors").is_file()


def test_same_seed_gives_the_same_mixer_table(mixer_runs):
    (a, _), (b, _) = mixer_runs
    pd.testing.assert_frame_equal(pd.read_parquet(a / "tables" / "mixer.parquet"),
                                  pd.read_parquet(b / "tables" / "mixer.parquet"))


def test_a_stopped_mixer_run_redoes_only_the_missing_unit(mixer_runs):
    run, _ = mixer_runs[1]
    before = pd.read_parquet(run / "tables" / "mixer.parquet")
    markers = sorted((run / "tables" / "parts" / "mixer-test").rglob("*.done.json"))
    assert len(markers) == 8
    markers[2].unlink()
    seen = []
    mixer_run(run, **SMALL, progress=lambda task, done, total: seen.append((task, done, total)))
    assert ("mixer", 7, 8) in seen and ("mixer", 8, 8) in seen and ("mixer-ig", 4, 4) in seen  # IG all reused
    assert ("mixer-ig-wrong", 2, 2) in seen and ("mixer-ig-wrong", 1, 2) not in seen  # the wrong-label IG too
    pd.testing.assert_frame_equal(before, pd.read_parquet(run / "tables" / "mixer.parquet"))


def test_mixer_json_holds_the_leak_test_as_recomputed_from_the_per_sample_table(mixer_runs):
    run, summary = mixer_runs[0]
    assert json.loads((run / "mixer.json").read_text())["settings"] == summary.settings
    samples = pd.read_parquet(run / "tables" / "mixer_predictions.parquet")
    rows = pd.read_parquet(run / "tables" / "mixer.parquet")
    t = samples[samples["setting"] == "true-class"]
    assert len(t) == 2 * 20 and bool((t["wrong"] != t["label"]).all()) and bool(t["wrong"].between(0, summary.n_classes - 1).all())
    leak = summary.settings["true-class"]["leak"]
    assert leak["wrong_share"] == pytest.approx((t["leak"] == t["wrong"]).mean())
    assert leak["accuracy"] == pytest.approx((t["leak"] == t["label"]).mean())
    assert leak["plain_wrong_share"] == pytest.approx((t["plain"] == t["wrong"]).mean())
    assert leak["samples"] == 20 and leak["chance"] == pytest.approx(1 / (summary.n_classes - 1))
    for p in leak["per_seed"]:
        s = t[t["seed"] == p["seed"]]
        assert p["wrong_share"] == pytest.approx((s["leak"] == s["wrong"]).mean())
        r = rows[(rows["setting"] == "true-class") & (rows["seed"] == p["seed"])].iloc[0]
        assert (r["leak_accuracy"], r["leak_wrong_share"]) == pytest.approx((p["accuracy"], p["wrong_share"]))
    assert summary.label_informed == ["true-class"]
    assert [k for k, v in summary.settings.items() if v["label_informed"]] == ["true-class"]
    assert all("leak" not in v for k, v in summary.settings.items() if k != "true-class")
    assert bool((samples.loc[samples["setting"] != "true-class", "leak"] == -1).all())
    for r in summary.settings.values():  # the bootstrap interval holds the gain's estimate too
        assert r["gain_low"] <= r["gain"] <= r["gain_high"]


def test_report_says_how_much_of_the_gain_needs_the_label_and_shows_the_leak_test(mixer_runs):
    from heatlab.report.html import build_report

    run, summary = mixer_runs[0]
    html = build_report(run).read_text()
    assert "Explanation-guided masking (paper 003)" in html and "mixer_accuracy.png" in html
    assert "test-time label" in html or "no label-driven gain" in html
    share = 100 * summary.settings["true-class"]["leak"]["wrong_share"]
    assert (f"Fed the attribution of a random wrong label, the true-class (label-informed) Mixer predicts that label "
            f"<b>{share:.1f}%</b>") in html
    assert "<td>true-class (label-informed)</td>" in html and "bootstrap over seeds" in html


def test_cli_summary_marks_the_label_informed_setting_and_prints_the_leak_test(mixer_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(mixer_runs[0][0], run)  # every unit done: the command only joins and prints
    result = runner.invoke(app, ["mixer", str(run), "--seeds", "2", "--n-steps", "4", "--epochs", "2", "--patience", "2",
                                 "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert "true-class (label-informed): C(x)" in result.output and "leak test" in result.output
    assert "predicted (label-informed)" not in result.output


def test_cli_bad_input_is_one_sentence_and_writes_nothing(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for args, words in ((["--settings", "bogus"], "Unknown attribution setting"), (["--batch-size", "1"], "--batch-size"),
                        (["--lr", "3"], "--lr"), (["--architecture", "fc", "--seeds", "0"], "--seeds")):
        result = runner.invoke(app, ["mixer", str(run), *args])
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output
    assert not (run / "mixer.json").exists() and not (run / "tables" / "parts" / "mixer-ig-train").exists()
    result = runner.invoke(app, ["mixer", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "train" in result.output
