"""No-truth metrics (randomisation, robustness, complexity, axiomatic) and the Random control.

Against real Quantus 0.6 on the same inputs (stochastic metrics: the same noise given to both),
against analytic cases, and for the invariants: batched equals one-by-one, the user's model and
the global RNG untouched, bad input refused with one sentence.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.explain import attribute, explain_func
from heatlab.explain.methods import CONTROL_METHODS, DEFAULT_METHODS, OPT_IN_METHODS
from heatlab.score import axiomatic as ax, complexity as cx, randomisation as rz, robustness as rb
from heatlab.score import quantus as hq

QKW = dict(disable_warnings=True, display_progressbar=False)
N_CLASSES = 5


def _model(seed=0, linear=False):
    torch.manual_seed(seed)
    if linear:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, N_CLASSES)).eval()
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, N_CLASSES)).eval()


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % N_CLASSES


def saliency(m, x, y):
    return attribute(m, x, "Saliency", target=y)


def random_method(m, x, y):
    return attribute(m, x, "Random", target=y)


def _np(*ts):
    return [t.numpy() for t in ts]


# ---- complexity --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Sparseness", "Complexity", "EffectiveComplexity"])
def test_complexity_equals_quantus(name):
    quantus = pytest.importorskip("quantus")
    x, y = _batch()
    a = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    a[0] = 0.5 * (a[0] > 1)  # many exact zeros: the eps threshold and the sort see ties
    q = getattr(quantus, name)(**QKW)(model=None, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy())
    h = getattr(hq, name)()(model=None, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy())
    np.testing.assert_allclose(np.asarray(h, float), np.asarray(q, float), rtol=1e-5)


def test_complexity_analytic_cases():
    d = 48
    one_hot, uniform = torch.zeros(2, d), torch.ones(2, d)
    one_hot[:, 7] = 3.0
    assert torch.allclose(cx.sparseness(None, None, None, one_hot), torch.full((2,), (d - 1) / d, dtype=torch.float64),
                          atol=1e-6)
    assert torch.allclose(cx.sparseness(None, None, None, uniform), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(cx.complexity(None, None, None, uniform), torch.full((2,), math.log(d), dtype=torch.float64))
    assert torch.allclose(cx.complexity(None, None, None, one_hot), torch.zeros(2, dtype=torch.float64), atol=1e-9)
    assert cx.effective_complexity(None, None, None, one_hot).tolist() == [1.0, 1.0]


# ---- axiomatic ---------------------------------------------------------------------------------

def test_completeness_of_integrated_gradients_on_a_linear_model_holds():
    m = _model(linear=True)
    x, y = _batch()
    ig = attribute(m, x, "IntegratedGradients", target=y, n_steps=16)  # zero baseline
    gap = ax.completeness(m, x, y, ig, perturb_baseline=0.0)
    assert gap.max() < 1e-4
    assert ax.completeness(m, x, y, saliency(m, x, y), perturb_baseline=0.0).min() > 1e-2


def test_completeness_equals_quantus():
    quantus = pytest.importorskip("quantus")
    m = _model(linear=True)
    x, y = _batch()
    total, diff = ax.completeness_gap(m, x, y, torch.zeros_like(x), perturb_baseline="black")
    a = torch.zeros_like(x)
    a[:, 0, 0, 0] = diff
    a[::2, 0, 0, 1] = 0.25  # half the samples break completeness
    kw = dict(model=m, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy())
    q = quantus.Completeness(normalise=False, **QKW)(**kw)
    h = hq.Completeness(normalise=False)(**kw)
    assert list(map(bool, q)) == h == [False, True] * 3


def test_input_invariance_equals_quantus():
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(0)  # no padding (the shifted first layer is exact everywhere), no ReLU to flip on rounding
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, N_CLASSES)).eval()
    x, y = _batch()
    for method, expected in (("Saliency", True), ("InputXGradient", False)):
        kw = dict(model=m, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=explain_func,
                  explain_func_kwargs={"method": method})
        q = quantus.InputInvariance(**QKW)(**kw)
        h = hq.InputInvariance()(**kw)
        assert list(map(bool, q)) == h
        assert all(v == expected for v in h)
    a = saliency(m, x, y)
    assert ax.input_invariance(m, x, y, a, explain_func=saliency).max() < 1e-4


# ---- randomisation -----------------------------------------------------------------------------

def test_mprt_equals_quantus_given_the_same_randomised_weights():
    quantus = pytest.importorskip("quantus")
    m = _model()
    x, y = _batch()
    kw = dict(model=m, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=explain_func)
    q = quantus.MPRT(**QKW)(**kw)
    h = hq.MPRT()(**kw)
    assert list(h) == list(q)  # the layers, in Quantus's order
    for k in q:
        np.testing.assert_allclose(h[k], q[k], rtol=1e-6, atol=1e-9)
    for opt in ("return_average_correlation", "return_last_correlation"):
        q = quantus.MPRT(**{opt: True}, layer_order="bottom_up", **QKW)(**kw)
        h = hq.MPRT(**{opt: True}, layer_order="bottom_up")(**kw)
        np.testing.assert_allclose(h, q, rtol=1e-6, atol=1e-9)


def test_emprt_equals_quantus():
    quantus = pytest.importorskip("quantus")
    m = _model()
    x, y = _batch()
    kw = dict(model=m, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=explain_func)
    q = quantus.EfficientMPRT(**QKW)(**kw)
    h = hq.EfficientMPRT()(**kw)
    np.testing.assert_allclose(h, q, rtol=1e-9)


def test_random_logit_equals_quantus():
    quantus = pytest.importorskip("quantus")
    m = _model()
    x, y = _batch()
    kw = dict(model=m, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=explain_func,
              explain_func_kwargs={"method": "InputXGradient"})
    q = quantus.RandomLogit(num_classes=N_CLASSES, **QKW)(**kw)
    h = hq.RandomLogit(num_classes=N_CLASSES)(**kw)
    np.testing.assert_allclose(h, q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_average_ranks_equal_scipy_with_ties_signed_zeros_and_negatives(dtype):
    stats = pytest.importorskip("scipy.stats")
    from heatlab.score._no_truth import average_ranks

    g = torch.Generator().manual_seed(2)
    v = (torch.randint(-4, 5, (5, 40), generator=g) * 0.25).to(dtype)
    v[0, :6] = -0.0  # equal to 0.0: one tie group
    v[1] = torch.randn(40, generator=g).to(dtype)
    ref = stats.rankdata(v.numpy(), axis=1)
    np.testing.assert_array_equal(average_ranks(v).numpy(), ref)  # the CPU (NumPy) path
    np.testing.assert_array_equal(average_ranks(v.clone().requires_grad_()).numpy(), ref)  # the torch path


def test_mprt_and_smprt_explain_only_the_models_their_score_reads():
    m, (x, y) = _model(), _batch()
    a, calls = saliency(m, x, y), []
    counted = lambda mm, xx, yy: calls.append(1) or saliency(mm, xx, yy)  # noqa: E731
    layers = rz.mprt_layers(m, x, y, a, explain_func=saliency)
    layers.pop("original")
    all_layers = torch.stack(list(layers.values()), 1)
    torch.testing.assert_close(rz.mprt(m, x, y, a, explain_func=counted), all_layers[:, -1])
    assert len(calls) == 1  # the fully randomised model only
    torch.testing.assert_close(rz.mprt(m, x, y, a, explain_func=counted, return_average_correlation=True),
                               all_layers.mean(1))
    assert len(calls) == 1 + 3
    calls.clear()
    last = rz.smprt(m, x, y, a, explain_func=counted, nr_samples=2)
    assert len(calls) == 2 * 2  # the original and the last model, two draws each
    every = rz.smprt(m, x, y, a, explain_func=saliency, nr_samples=2, return_average_correlation=True)
    assert last.shape == every.shape == (6,) and not torch.equal(last, every)


def test_a_model_independent_explanation_fails_the_randomisation_tests_and_random_passes_mprt():
    m = _model()
    x, y = _batch()
    identity = lambda _m, xx, _y: xx  # noqa: E731
    assert torch.allclose(rz.mprt(m, x, y, x, explain_func=identity), torch.ones(6, dtype=torch.float64))
    assert torch.allclose(rz.smprt(m, x, y, x, explain_func=identity, nr_samples=1), torch.ones(6, dtype=torch.float64))
    assert torch.equal(rz.emprt(m, x, y, x, explain_func=identity), torch.zeros(6, dtype=torch.float64))
    # Random changes with the weights: MPRT's known blind spot (Hedström et al. 2023) lets it pass
    r = rz.mprt(m, x, y, random_method(m, x, y), explain_func=random_method)
    assert r.abs().max() < 0.2
    # the class does not matter to the input or to Random: random logit similarity 1
    assert torch.allclose(rz.random_logit(m, x, y, x, explain_func=identity), torch.ones(6, dtype=torch.float64))


def test_randomisation_leaves_the_model_and_the_global_rng_alone():
    m = _model()
    x, y = _batch()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    a = saliency(m, x, y)
    rz.mprt(m, x, y, a, explain_func=saliency, layer_order="independent")
    rz.emprt(m, x, y, a, explain_func=saliency)
    rz.smprt(m, x, y, a, explain_func=saliency, nr_samples=2)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_randomised_layers_orders():
    m = _model()
    names = [n for n, mod in m.named_modules() if hasattr(mod, "reset_parameters")]
    got = [n for n, _ in rz.randomised_layers(m, "top_down")]
    assert got == names[::-1]
    changed = []
    for name, rm in rz.randomised_layers(m, "independent", seed=1):
        changed.append([k.split(".")[0] for k, v in rm.state_dict().items() if not torch.equal(v, m.state_dict()[k])])
    assert changed == [[n, n] for n in names]  # weight and bias of that layer only


# ---- robustness --------------------------------------------------------------------------------

def _fixed_noise_perturb(noise):
    draws = iter(noise)

    def perturb(arr, indices, **kwargs):
        return arr + next(draws).reshape(arr.shape)

    return perturb


ROBUST = [
    ("MaxSensitivity", {}),
    ("AvgSensitivity", {}),
    ("LocalLipschitzEstimate", {}),
    ("RelativeInputStability", {}),
    ("RelativeOutputStability", {}),
    ("RelativeRepresentationStability", {}),
    ("MaxSensitivity", {"return_nan_when_prediction_changes": True, "normalise": True, "abs": True}),
]


@pytest.mark.parametrize("name, opts", ROBUST, ids=[f"{n}-{len(o)}" for n, o in ROBUST])
def test_robustness_equals_quantus_with_the_same_noise(name, opts):
    quantus = pytest.importorskip("quantus")
    m = _model()
    x, y = _batch()
    noise = 0.05 * torch.randn(3, *x.shape, generator=torch.Generator().manual_seed(5))
    kw = dict(model=m, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=explain_func,
              explain_func_kwargs={"method": "InputXGradient"})
    q = getattr(quantus, name)(nr_samples=3, perturb_func=_fixed_noise_perturb(noise.numpy()), **opts, **QKW)(**kw)
    h = getattr(hq, name)(nr_samples=3, noise=noise, **opts)(**kw)
    np.testing.assert_allclose(h, np.asarray(q, float), rtol=1e-4, atol=1e-7)


def test_sensitivity_of_a_constant_explanation_is_zero():
    m = _model()
    x, y = _batch()
    const = lambda _m, xx, _y: torch.ones_like(xx)  # noqa: E731
    a = torch.ones_like(x)
    for fn in (rb.max_sensitivity, rb.avg_sensitivity, rb.local_lipschitz_estimate, rb.relative_input_stability):
        assert torch.equal(fn(m, x, y, a, explain_func=const, nr_samples=3), torch.zeros(6, dtype=torch.float64))


# ---- invariants --------------------------------------------------------------------------------

BATCHED = [
    (cx.sparseness, {}),
    (rz.mprt, {"explain_func": saliency}),
    (rz.smprt, {"explain_func": saliency, "nr_samples": 3}),
    (rz.random_logit, {"explain_func": saliency}),
    (rb.max_sensitivity, {"explain_func": saliency, "nr_samples": 3}),
    (rb.relative_representation_stability, {"explain_func": saliency, "nr_samples": 2}),
]


@pytest.mark.parametrize("fn, kw", BATCHED, ids=[f.__name__ for f, _ in BATCHED])
def test_batched_equals_one_by_one(fn, kw):
    m = _model()
    x, y = _batch(4)
    a = saliency(m, x, y)
    batched = fn(m, x, y, a, **kw)
    single = torch.cat([fn(m, x[i:i + 1], y[i:i + 1], a[i:i + 1], **kw) for i in range(4)])
    assert batched.dtype == torch.float64 and batched.shape == (4,)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("nan_when_changed", [True, False])
@pytest.mark.parametrize("fn", [rb.relative_output_stability, rb.relative_representation_stability],
                         ids=lambda f: f.__name__)
def test_relative_stability_forwards_x_once_and_each_draw_once(fn, nan_when_changed):
    """ROS's h(x), RRS's layer outputs of x and the label of x come from one forward of x; then one per
    draw (the explainer here never calls the model)."""
    m = _model()
    x, y = _batch(4)
    seen = []
    m.register_forward_pre_hook(lambda _m, i: seen.append(i[0].shape[0]))
    s = fn(m, x, y, torch.rand(x.shape, generator=torch.Generator().manual_seed(2)), nr_samples=3,
           explain_func=lambda _m, xx, _y: xx.square(), return_nan_when_prediction_changes=nan_when_changed)
    assert s.shape == (4,) and sum(seen) == 4 * (1 + 3)


def test_random_method_is_seeded_uniform_noise_per_sample_and_model():
    m = _model()
    x, y = _batch()
    r = random_method(m, x, y)
    assert r.shape == x.shape and 0 < r.min() and r.max() < 1 and abs(float(r.mean()) - 0.5) < 0.02
    assert torch.equal(r[3:4], random_method(m, x[3:4], y[3:4]))  # batched == one-by-one
    assert torch.equal(r.flip(0), random_method(m, x.flip(0), y.flip(0)))
    assert not torch.equal(r[0], r[1])
    assert not torch.equal(r, attribute(m, x, "Random", target=y, seed=1))
    assert not torch.equal(r, random_method(_model(seed=1), x, y))  # other weights, other noise
    assert "Random" in CONTROL_METHODS and "Random" in OPT_IN_METHODS and "Random" not in DEFAULT_METHODS


# ---- bad input ---------------------------------------------------------------------------------

def test_bad_input_is_one_sentence():
    m = _model()
    x, y = _batch()
    a = saliency(m, x, y)
    nan = a.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(HeatlabError, match="NaN"):
        cx.sparseness(m, x, y, nan)
    with pytest.raises(HeatlabError, match="NaN"):
        hq.MaxSensitivity(nr_samples=1)(model=m, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=nan.numpy(),
                                        explain_func=explain_func)
    with pytest.raises(HeatlabError, match="has shape"):
        rz.mprt(m, x, y, a[:3], explain_func=saliency)
    with pytest.raises(HeatlabError, match="layer_order='sideways'; pass one of top_down, bottom_up, independent"):
        rz.mprt(m, x, y, a, explain_func=saliency, layer_order="sideways")
    with pytest.raises(HeatlabError, match="layer_order"):
        hq.MPRT(layer_order="sideways")
    with pytest.raises(HeatlabError, match="explain_func"):
        rb.max_sensitivity(m, x, y, a)
    with pytest.raises(HeatlabError, match="perturb_baseline"):
        ax.completeness(m, x, y, a, perturb_baseline="pink")


def test_one_input_check_for_every_no_truth_metric():
    from heatlab.score import faithfulness as fa

    m = _model()
    x, y = _batch()
    a = saliency(m, x, y)
    inf = a.clone()
    inf[0, 0, 0, 0] = float("inf")
    for fn, kw in ((fa.deletion, {}), (rb.max_sensitivity, {"explain_func": saliency}), (rz.mprt, {"explain_func": saliency}),
                   (ax.completeness, {})):
        with pytest.raises(HeatlabError, match="y must hold 6 integer targets"):
            fn(m, x, y[:3], a, **kw)
        with pytest.raises(HeatlabError, match="a holds infinite attributions"):
            fn(m, x, y, inf, **kw)
        with pytest.raises(HeatlabError, match=r"a has shape \(3, 3, 8, 8\), which does not match x"):
            fn(m, x, y, a[:3], **kw)
    assert cx.sparseness(None, None, None, a[:, :, 0]).shape == (6,)  # complexity reads no x: any N×... heatmaps


def test_quantus_classes_take_quantus_arguments_and_refuse_unknown_ones():
    import inspect

    quantus = pytest.importorskip("quantus")
    names = [n for n in hq.__all__ if issubclass(getattr(hq, n), hq._base.QuantusMetric)]
    assert len(names) == 24
    for name in names:
        params = inspect.signature(getattr(quantus, name).__init__).parameters
        accepted = set(getattr(hq, name).options) | set(hq._base.COMMON)
        assert {p for p in params if p not in ("self", "args", "kwargs")} <= accepted, name
        with pytest.raises(HeatlabError, match=rf"{name} got unknown argument\(s\) \['colour'\]"):
            getattr(hq, name)(colour="red")


def test_row_norms64_by_blocks_equal_the_float64_norm():
    from heatlab.score._no_truth import row_norms64

    g = torch.Generator().manual_seed(0)
    t, u = torch.randn(2, 5, 3, 37, 41, generator=g)
    safe = t + (t == 0) * 1e-6
    cases = [((t,), t.double()), ((t, u), (t - u).double()), ((t, u, safe), torch.sub(t, u).div_(safe).double()),
             ((t, u[:, :1]), (t - u[:, :1]).double()),  # a broadcast difference
             ((t, u.double()), t - u.double())]  # a wider difference
    for args, ref in cases:
        for block in (7, 1000, 1 << 20):  # one column per block, blocks not dividing the row, one block
            torch.testing.assert_close(row_norms64(*args, block=block), ref.flatten(1).norm(dim=1), rtol=1e-14, atol=0)


@pytest.mark.parametrize("d", [1, 2, 300])
def test_average_ranks_equal_scipy_row_by_row_on_ties_signed_zeros_and_extreme_magnitudes(d):
    stats = pytest.importorskip("scipy.stats")
    from heatlab.score._no_truth import _average_ranks_numpy

    rng = np.random.default_rng(7)
    pool = np.array([0.0, -0.0, 1.0, -1.0, 3e38, -3e38, 1e-45, -1e-45, 1.2e-38, -1.2e-38, 0.5, 65536.0], np.float32)
    v = np.stack([pool[rng.integers(0, pool.size, d)],  # many ties, across every 16-bit digit
                  rng.standard_normal(d).astype(np.float32) * np.float32(1e-40),  # subnormals
                  (rng.standard_normal(d) * 1e30).astype(np.float32),
                  np.full(d, -0.0, np.float32)])
    v[0, : min(d, 3)] = [0.0, -0.0, 0.0][: min(d, 3)]
    v[2, : d // 2 : 7] = v[2, -1]  # a few ties among distinct values
    for block in (v, v[1:3]):  # mostly tied (mean rank of every group), few ties (tied slots only)
        got = _average_ranks_numpy(block)
        assert got.dtype == np.float64
        for row, ranks in zip(block, got):
            np.testing.assert_array_equal(ranks, stats.rankdata(row))


def test_stable_sort_float32_is_torchs_stable_sort():
    from heatlab.score._no_truth import stable_sort_float32

    g = torch.Generator().manual_seed(3)
    v = (torch.randint(-300, 300, (4, 5000), generator=g).float() * 1e-3).exp() * torch.randint(-1, 2, (4, 5000), generator=g)
    order, keys = stable_sort_float32(v.numpy())  # ties among -0.0 and 0.0 and across the low 16 bits
    ref = torch.sort(v, dim=1, stable=True)
    np.testing.assert_array_equal(order, ref.indices.numpy())
    assert ((keys[:, 1:] == keys[:, :-1]) == (ref.values[:, 1:] == ref.values[:, :-1]).numpy()).all()
