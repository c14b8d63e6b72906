"""Real Quantus against heatlab: Quantus's own localisation metrics on the same inputs as
heatlab's Quantus-style callables give the same per-sample scores, and a Quantus metric runs end
to end with ``explain_func=heatlab.explain.explain_func`` on a tiny seeded model."""

import numpy as np
import pytest
import torch
from torch import nn

quantus = pytest.importorskip("quantus")

from heatlab.explain import attribute, channel_adjust, explain_func  # noqa: E402
from heatlab.score import five_band, localisation as loc, quantus as hq  # noqa: E402

QKW = dict(disable_warnings=True, display_progressbar=False)  # Quantus defaults otherwise: abs=False, normalise=True


def _batch(seed=0, n=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 2, size=n)
    a = (rng.normal(size=(n, 1, 8, 8)) + 1.5).astype(np.float32)  # mostly positive, some negative
    s = (rng.random((n, 1, 8, 8)) < np.linspace(0.1, 0.5, n)[:, None, None, None]).astype(np.float32)
    s[:, 0, 0, 0] = 1
    return x, y, a, s


PAIRS = [  # (Quantus metric, heatlab callable, what Quantus must see for heatlab's definition)
    (quantus.PointingGame, hq.PointingGame, lambda a: a),
    (quantus.AUC, hq.AUC, lambda a: a),
    # heatlab uses positive relevance (CLEVR-XAI); Quantus sums signed values, so hand it max(a, 0)
    (quantus.RelevanceMassAccuracy, hq.RelevanceMassAccuracy, lambda a: np.maximum(a, 0)),
    (quantus.RelevanceRankAccuracy, hq.RelevanceRankAccuracy, lambda a: np.maximum(a, 0)),
]


@pytest.mark.parametrize("q_cls, h_cls, prep", PAIRS, ids=lambda p: getattr(p, "__name__", ""))
def test_quantus_and_heatlab_agree_per_sample(q_cls, h_cls, prep):
    x, y, a, s = _batch()
    k = s.reshape(len(s), -1).sum(1)
    assert np.all((a.reshape(len(a), -1) > 0).sum(1) > k)  # no tie at the K-th positive value
    want = np.asarray(q_cls(**QKW)(model=None, x_batch=x, y_batch=y, a_batch=prep(a), s_batch=s), dtype=float)
    got = h_cls()(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
    assert isinstance(got, list) and all(isinstance(v, float) for v in got) and len(got) == len(a)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # N×C×H×W attributions: heatlab sums channels, as Quantus users do with .sum(axis=1)
    a3 = np.repeat(a, 3, axis=1) / 3
    np.testing.assert_allclose(h_cls()(a_batch=a3, s_batch=s), want, rtol=1e-5, atol=1e-6)


def test_signed_mass_accuracy_differs_from_quantus_only_by_the_positive_part():
    x, y, a, s = _batch(1)
    a = a - 1.5  # now about half negative
    signed = np.asarray(quantus.RelevanceMassAccuracy(**QKW)(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s))
    ours = np.array(hq.RelevanceMassAccuracy()(a_batch=a, s_batch=s))
    assert np.all((ours >= 0) & (ours <= 1)) and not np.allclose(ours, signed)


def test_five_band_callables_match_the_score_functions():
    x, y, a, s = _batch(2)
    h = channel_adjust(torch.from_numpy(a))
    want = five_band.five_band(h, torch.from_numpy(s[:, 0]) * 0.9)
    for cls, metric in [(hq.FiveBandAccuracy, "accuracy"), (hq.FiveBandPrecision, "precision"),
                        (hq.FiveBandRecall, "recall"), (hq.FiveBandFPR, "fpr")]:
        for stat in ("avg", "best"):
            got = cls(stat=stat)(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
            np.testing.assert_allclose(got, getattr(want, stat)[metric].numpy(), rtol=0, atol=0)
    reg = hq.Registered("auc/feature")(a_batch=a, s_batch=s)
    np.testing.assert_allclose(reg, hq.AUC()(a_batch=a, s_batch=s), rtol=1e-12)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2)).eval()


def test_explain_func_contract_and_end_to_end_with_quantus():
    model = _model()
    x, y, _, s = _batch(3)
    a = explain_func(model=model, inputs=x, targets=y, method="IntegratedGradients", n_steps=8)
    assert isinstance(a, np.ndarray) and a.shape == x.shape and a.dtype == np.float32
    ref = attribute(model, torch.from_numpy(x), "IntegratedGradients", target=torch.from_numpy(y), n_steps=8)
    np.testing.assert_allclose(a, ref.numpy(), rtol=0, atol=0)
    kwargs = {"method": "Saliency", "abs": False, "channels": "sum"}  # N×1×H×W, as Quantus needs
    q = quantus.AUC(**QKW)(model=model, x_batch=x, y_batch=y, a_batch=None, s_batch=s,
                           explain_func=explain_func, explain_func_kwargs=kwargs)
    ours = hq.AUC()(model=model, x_batch=x, y_batch=y, s_batch=s, explain_func=explain_func,
                    explain_func_kwargs=kwargs)
    sal = attribute(model, torch.from_numpy(x), "Saliency", target=torch.from_numpy(y), abs=False)
    np.testing.assert_allclose(ours, loc.auc(sal, torch.from_numpy(s)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(q, ours, rtol=1e-6, atol=1e-7)
    assert len(set(np.round(q, 6))) > 1  # not a constant: the model's gradients differ per sample
