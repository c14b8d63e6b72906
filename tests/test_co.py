"""CO score (papers 000/001, eq. 5): hand-computed answers on a linear model, invariants, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.score.co import co_records, co_score, prepare_heatmaps

N, SHAPE, C = 6, (1, 2, 3), 4  # 6 samples of 1×2×3 "images", 4 classes


def _linear(seed: int = 0, dtype=torch.float64) -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """f(x) = W·flatten(x) + b, with W (C×6) and b as numpy arrays for the hand computation."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), C)).to(dtype)
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(C, int(np.prod(SHAPE)), generator=g, dtype=dtype))
        model[1].bias.copy_(torch.randn(C, generator=g, dtype=dtype))
    return model, model[1].weight.detach().numpy().copy(), model[1].bias.detach().numpy().copy()


def _data(seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, *SHAPE, generator=g, dtype=dtype)
    h = torch.randn(N, *SHAPE, generator=g, dtype=dtype)
    y = torch.tensor([0, 1, 2, 3, 1, 2])
    return x, h, y


def _kappa_by_hand(label: int) -> np.ndarray:
    k = np.array([-1.0 / (C - 1)] * C)
    k[label] = 1.0
    return k


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def test_raw_sum_equals_kappa_W_h_by_hand():
    model, W, _ = _linear()
    x, h, y = _data()
    got = co_score(model, x, h, y, ax="sum", output="raw").numpy()
    want = [_kappa_by_hand(int(y[i])) @ (W @ h[i].numpy().ravel()) for i in range(N)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_raw_mult_equals_kappa_W_xh_minus_x_by_hand():
    model, W, _ = _linear()
    x, h, y = _data()
    got = co_score(model, x, h, y, ax="mult", output="raw").numpy()
    want = []
    for i in range(N):
        xi, hi = x[i].numpy().ravel(), h[i].numpy().ravel()
        want.append(_kappa_by_hand(int(y[i])) @ (W @ (xi * hi - xi)))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ax", ["sum", "mult"])
def test_softmax_variant_is_a_difference_of_probabilities(ax):
    model, W, b = _linear()
    x, h, y = _data()
    got = co_score(model, x, h, y, ax=ax, output="softmax").numpy()
    want = []
    for i in range(N):
        xi, hi = x[i].numpy().ravel(), h[i].numpy().ravel()
        xa = xi + hi if ax == "sum" else xi * hi
        want.append(_kappa_by_hand(int(y[i])) @ (_softmax(W @ xa + b) - _softmax(W @ xi + b)))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert np.all(np.abs(got) <= 1 + 1 / (C - 1))  # a difference of probabilities is bounded


def test_uniform_change_of_all_logits_scores_zero():
    """Appendix A.2: if h shifts every logit by the same amount, CO is 0 (κ sums to zero)."""
    model, _, _ = _linear()
    with torch.no_grad():
        model[1].weight.copy_(model[1].weight[:1].expand(C, -1))  # identical rows
    x, h, y = _data()
    np.testing.assert_allclose(co_score(model, x, h, y).numpy(), 0.0, atol=1e-12)


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5))


def test_zero_heatmap_gives_exactly_zero_for_x_plus_h_and_never_nan():
    model = _cnn()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(4, 3, 8, 8, generator=g)
    h = prepare_heatmaps(torch.zeros_like(x))
    assert torch.equal(h, torch.zeros_like(x))
    rec = co_records(model, x, h, torch.tensor([0, 1, 2, 4]), batch_size=3)
    for output in ("raw", "softmax"):
        assert torch.equal(rec[f"co_{output}_sum"], torch.zeros(4, dtype=torch.float64))
        assert torch.isfinite(rec[f"co_{output}_mult"]).all()
    assert torch.equal(rec["pred_after_sum"], rec["pred_before"])


def test_prepare_heatmaps_divides_by_max_abs_per_sample():
    h = torch.tensor([[[[2.0, -4.0]]], [[[0.0, 0.0]]], [[[0.5, 0.25]]]])
    out = prepare_heatmaps(h)
    torch.testing.assert_close(out, torch.tensor([[[[0.5, -1.0]]], [[[0.0, 0.0]]], [[[1.0, 0.5]]]]))


def test_records_agree_with_co_score_and_hand_predictions():
    model, W, b = _linear()
    x, h, y = _data()
    rec = co_records(model, x, h, y)
    for ax in ("sum", "mult"):
        for output in ("raw", "softmax"):
            torch.testing.assert_close(rec[f"co_{output}_{ax}"], co_score(model, x, h, y, ax=ax, output=output),
                                       rtol=0, atol=0)
    xs = x.numpy().reshape(N, -1)
    before = np.argmax(xs @ W.T + b, axis=1)
    after_sum = np.argmax((xs + h.numpy().reshape(N, -1)) @ W.T + b, axis=1)
    np.testing.assert_array_equal(rec["pred_before"].numpy(), before)
    np.testing.assert_array_equal(rec["correct_before"].numpy(), before == y.numpy())
    np.testing.assert_array_equal(rec["pred_after_sum"].numpy(), after_sum)
    np.testing.assert_array_equal(rec["correct_after_sum"].numpy(), after_sum == y.numpy())
    assert rec["correct_before"].dtype == torch.bool and rec["co_raw_sum"].dtype == torch.float64


def test_batched_equals_one_at_a_time():
    model = _cnn().double()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(7, 3, 8, 8, generator=g, dtype=torch.float64)
    h = prepare_heatmaps(torch.randn(7, 3, 8, 8, generator=g, dtype=torch.float64))
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    batched = co_records(model, x, h, y, batch_size=3)
    for i in range(7):
        single = co_records(model, x[i : i + 1], h[i : i + 1], y[i : i + 1])
        for key, value in single.items():
            torch.testing.assert_close(batched[key][i : i + 1], value, rtol=1e-12, atol=1e-12)


def test_model_mode_is_restored_and_eval_mode_is_used():
    model = _cnn()
    model.train()
    model[1].eval()  # a mixed state must come back exactly
    g = torch.Generator().manual_seed(4)
    x, h = torch.rand(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    y = torch.tensor([0, 1, 2])
    first = co_score(model, x, h, y)
    assert torch.equal(first, co_score(model, x, h, y))  # dropout off: deterministic
    assert [m.training for m in model.modules()] == [True, True, False, True, True, True, True, True]
    assert not first.requires_grad


def test_bad_input_raises_one_clear_sentence():
    model, _, _ = _linear()
    x, h, y = _data()
    cases = [
        (dict(heatmaps=h[:, :, :1]), "do not match"),
        (dict(labels=torch.tensor([0, 1, 2, 3, 1, C])), r"Labels must lie in \[0, 3\]"),
        (dict(labels=torch.tensor([0, 1, 2, 3, 1, -1])), "Labels must lie"),
        (dict(labels=y.double()), "integer tensor"),
        (dict(labels=y[:3]), "integer tensor"),
        (dict(heatmaps=torch.where(h > 0, h, torch.tensor(math.nan, dtype=h.dtype))), "NaN or Inf"),
        (dict(inputs=x.clone().fill_(math.inf)), "NaN or Inf"),
        (dict(inputs=x.long(), heatmaps=h.long()), "floating-point"),
        (dict(ax="div"), "Unknown ax"),
        (dict(output="probit"), "Unknown output"),
        (dict(batch_size=0), "Batch size"),
    ]
    for change, message in cases:
        args = {"inputs": x, "heatmaps": h, "labels": y, **change}
        kwargs = {k: args.pop(k) for k in ("ax", "output", "batch_size") if k in args}
        with pytest.raises(HeatlabError, match=message):
            co_score(model, args["inputs"], args["heatmaps"], args["labels"], **kwargs)
    one_logit = nn.Sequential(nn.Flatten(), nn.Linear(6, 1)).double()
    with pytest.raises(HeatlabError, match="at least 2 classes"):
        co_records(one_logit, x, h, torch.zeros(N, dtype=torch.long))
