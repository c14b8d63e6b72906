"""Tests for heatlab.explain.attribution (the method registry) and heatlab.explain.postprocess."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.explain.attribution import METHODS, attribute, available_methods
from heatlab.explain.methods import gradient_shap_draws, shap_baselines
from heatlab.explain.postprocess import all_finite, channel_adjust, clamp, normalize_max_abs

N_CLASSES = 5


class TinyCNN(nn.Module):
    """3×16×16 -> 5 logits; separate ReLU modules, BatchNorm (catches a missing eval())."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, stride=2)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, N_CLASSES)

    def trunk(self, x):
        return self.relu1(self.bn1(self.conv1(x)))

    def forward(self, x):
        return self.fc(self.pool(self.relu2(self.conv2(self.trunk(x)))).flatten(1))


class ExplodingCNN(TinyCNN):
    """Raises midway through every forward pass that records gradients, i.e. inside the
    attribution (after hooked activations have run), not in the no-grad prediction pass."""

    def forward(self, x):
        h = self.trunk(x)
        if torch.is_grad_enabled():
            raise RuntimeError("boom")
        return self.fc(self.pool(self.relu2(self.conv2(h))).flatten(1))


class ReusedReLUCNN(TinyCNN):
    """TinyCNN with one ReLU module called twice (not attribution-safe)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.relu = nn.ReLU(inplace=inplace)

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        return self.fc(self.pool(self.relu(self.conv2(h))).flatten(1))


def _cnn(seed=0, cls=TinyCNN, **kw):
    torch.manual_seed(seed)
    model = cls(**kw)
    with torch.no_grad():  # non-trivial BN statistics so eval and train modes differ
        model.bn1.running_mean.uniform_(-0.2, 0.2)
        model.bn1.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _linear(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, N_CLASSES)).eval()


def _images(n=3, size=16, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _hook_counts(model):
    return [(len(m._forward_hooks), len(m._backward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def _autograd_grad(model, x, target):
    x = x.clone().requires_grad_()
    model(x)[torch.arange(len(x)), target].sum().backward()
    return x.grad


# --- known answers ------------------------------------------------------------------------


def test_saliency_and_input_x_gradient_equal_autograd():
    model, x, t = _cnn(), _images(), torch.tensor([0, 3, 1])
    grad = _autograd_grad(model, x, t)
    torch.testing.assert_close(attribute(model, x, "Saliency", target=t), grad.abs())
    torch.testing.assert_close(attribute(model, x, "Saliency", target=t, abs=False), grad)
    torch.testing.assert_close(attribute(model, x, "InputXGradient", target=t), x * grad)


def test_integrated_gradients_linear_completeness():
    model, x, t = _linear(), _images(4, size=4), torch.tensor([0, 1, 4, 2])
    w = model[1].weight.detach().view(N_CLASSES, 3, 4, 4)
    ig = attribute(model, x, "IntegratedGradients", target=t, n_steps=7)
    torch.testing.assert_close(ig, x * w[t], rtol=1e-5, atol=1e-6)
    base = torch.full_like(x, 0.5)
    ig = attribute(model, x, "IntegratedGradients", target=t, baselines=base, batch_size=3)
    torch.testing.assert_close(ig, (x - base) * w[t], rtol=1e-5, atol=1e-6)
    gap = model(x)[range(4), t] - model(base)[range(4), t]
    torch.testing.assert_close(ig.sum((1, 2, 3)), gap.detach(), rtol=1e-4, atol=1e-5)
    # Captum's `method` arrives as integration_method (its rule is not exact, so compare with Captum)
    rule = {"n_steps": 5, "integration_method": "riemann_trapezoid"}
    captum_ig = IntegratedGradients(model).attribute(x, baselines=base, target=t, n_steps=5, method="riemann_trapezoid")
    torch.testing.assert_close(attribute(model, x, "IntegratedGradients", target=t, baselines=base, **rule), captum_ig)
    assert not torch.allclose(captum_ig, ig)


def test_shap_methods_on_linear_model():
    model, x, t = _linear(), _images(3, size=4), torch.tensor([2, 0, 1])
    w = model[1].weight.detach().view(N_CLASSES, 3, 4, 4)
    dls = attribute(model, x, "DeepLiftShap", target=t, n_baselines=5, seed=3)
    mean_base = shap_baselines((3, 4, 4), 5, seed=3).mean(0)
    torch.testing.assert_close(dls, (x - mean_base) * w[t], rtol=1e-5, atol=1e-6)
    gs = attribute(model, x, "GradientShap", target=t, n_baselines=5, n_samples=6, seed=3)
    base, index, _, _ = gradient_shap_draws((3, 4, 4), 6, 3, n_baselines=5)
    torch.testing.assert_close(base, shap_baselines((3, 4, 4), 5, seed=3))
    torch.testing.assert_close(gs, (x - base[index].mean(0)) * w[t], rtol=1e-5, atol=1e-6)


def test_gradient_shap_matches_slow_reference_with_noise():
    model, x, t = _cnn(), _images(2), torch.tensor([1, 4])
    gs = attribute(model, x, "GradientShap", target=t, n_baselines=3, n_samples=4, seed=5, stdevs=0.1)
    base, index, alpha, noise = gradient_shap_draws((3, 16, 16), 4, 5, n_baselines=3, stdevs=0.1)
    assert noise.abs().max() > 0
    expected = torch.zeros_like(x)
    for k in range(4):
        xn = x + noise[k]
        z = alpha[k] * xn + (1 - alpha[k]) * base[index[k]]
        expected += (xn - base[index[k]]) * _autograd_grad(model, z, t) / 4
    torch.testing.assert_close(gs, expected, rtol=1e-4, atol=1e-6)


def test_layer_grad_cam_matches_manual_gradcam_and_broadcasts():
    model, x, t = _cnn(), _images(), torch.tensor([2, 2, 0])
    acts = {}
    handle = model.conv2.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    a = acts["a"]
    (g,) = torch.autograd.grad(logits[range(3), t].sum(), a)
    cam = (g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True).detach()  # N×1×8×8
    expected = F.interpolate(cam, size=(16, 16), mode="nearest").expand(-1, 3, -1, -1)
    got = attribute(model, x, "LayerGradCam", target=t, layer="conv2")
    torch.testing.assert_close(got, expected)


# --- properties of every method --------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_one_at_a_time_and_model_unchanged(method):
    model = _cnn()
    model.train()
    model.bn1.eval()  # a mixed state: every module's own flag must come back
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks, grad_flags = _hook_counts(model), [p.requires_grad for p in model.parameters()]
    x, t = _images(4), torch.tensor([0, 1, 2, 4])
    kw = {"n_baselines": 3, "n_samples": 3, "n_steps": 6}
    full = attribute(model, x, method, target=t, **kw)
    assert full.shape == x.shape and not full.requires_grad
    assert full.abs().sum() > 0
    single = torch.cat([attribute(model, x[i : i + 1], method, target=t[i : i + 1], **kw) for i in range(4)])
    torch.testing.assert_close(full, single, rtol=1e-4, atol=1e-5)
    chunked = attribute(model, x, method, target=t, batch_size=3, **kw)
    torch.testing.assert_close(full, chunked, rtol=1e-4, atol=1e-5)
    assert [m.training for m in model.modules()] == flags
    assert _hook_counts(model) == hooks
    assert [p.requires_grad for p in model.parameters()] == grad_flags
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("method", METHODS)
def test_target_none_uses_argmax(method):
    model, x = _cnn(), _images(4)
    with torch.no_grad():  # centre each logit over the batch so the predictions differ
        model.fc.bias -= model(x).mean(0)
    pred = model(x).argmax(1)
    assert len(set(pred.tolist())) > 1
    got, used = attribute(model, x, method, return_target=True, n_steps=4, n_samples=2, n_baselines=2)
    assert torch.equal(used, pred)
    torch.testing.assert_close(got, attribute(model, x, method, target=pred, n_steps=4, n_samples=2, n_baselines=2))


@pytest.mark.parametrize("method", METHODS)
def test_exception_inside_forward_leaves_model_clean(method):
    model = _cnn(cls=ExplodingCNN).train()
    hooks, flags = _hook_counts(model), [m.training for m in model.modules()]
    attrs = [set(vars(m)) for m in model.modules()]
    with pytest.raises(RuntimeError, match="boom"):
        attribute(model, _images(2), method, n_steps=4, n_samples=2, n_baselines=2)
    assert _hook_counts(model) == hooks
    assert [m.training for m in model.modules()] == flags
    assert [set(vars(m)) for m in model.modules()] == attrs


@pytest.mark.parametrize("method, extra", [("DeepLiftShap", {}), ("GradientShap", {"stdevs": 0.05})])
def test_shap_methods_seeded_and_leave_global_rng_alone(method, extra):
    model, x, t = _cnn(), _images(2), torch.tensor([1, 3])
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = attribute(model, x, method, target=t, seed=7, **extra)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    torch.manual_seed(123)  # the global RNGs must not matter
    np.random.seed(123)
    assert torch.equal(a, attribute(model, x, method, target=t, seed=7, **extra))
    assert not torch.allclose(a, attribute(model, x, method, target=t, seed=8, **extra))


# --- layers, bad input -----------------------------------------------------------------------


def test_cam_layer_default_is_the_last_conv_and_bad_name_lists_the_convs():
    model, x, t = _cnn(), _images(2), torch.tensor([0, 1])
    for method in ("LayerGradCam", "GuidedGradCam"):
        default = attribute(model, x, method, target=t)  # Grad-CAM users expect the last convolution
        torch.testing.assert_close(default, attribute(model, x, method, target=t, layer="conv2"))
        torch.testing.assert_close(default, attribute(model, x, method, target=t, layer=model.conv2))
        assert not torch.allclose(default, attribute(model, x, method, target=t, layer="conv1"))
        with pytest.raises(HeatlabError, match=r"'conv9' is not a module of the model \(its convolutional layers are "
                                               r"conv1, conv2\); pass layer=NAME with one of them\.$"):
            attribute(model, x, method, target=t, layer="conv9")
    with pytest.raises(HeatlabError, match="no nn.Conv2d"):
        attribute(_linear(), _images(1, size=4), "LayerGradCam")
    with pytest.raises(HeatlabError, match="feature map"):
        attribute(model, x, "LayerGradCam", target=t, layer="fc")


def test_bad_input_raises_heatlab_error():
    model, x = _cnn(), _images(2)
    with pytest.raises(HeatlabError, match="Saliency, InputXGradient.*opt-in NoiseTunnel, Occlusion"):
        attribute(model, x, "Magic")  # (Occlusion itself is an opt-in method now)
    bad = x.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(HeatlabError, match="NaN"):
        attribute(model, bad, "Saliency")
    bad[1, 0, 3, 3] = float("inf")
    with pytest.raises(HeatlabError, match="NaN or Inf"):
        attribute(model, bad, "Saliency")
    with pytest.raises(HeatlabError, match="shape"):
        attribute(model, x[0, 0, 0], "Saliency")
    with pytest.raises(HeatlabError, match="N×C×H×W"):
        attribute(model, x[0], "LayerGradCam")
    with pytest.raises(HeatlabError, match="floating-point"):
        attribute(model, (x * 255).to(torch.uint8), "Saliency")
    with pytest.raises(HeatlabError, match="out of range"):
        attribute(model, x, "Saliency", target=N_CLASSES)
    with pytest.raises(HeatlabError, match="out of range"):
        attribute(model, x, "DeepLift", target=torch.tensor([0, 7]))
    with pytest.raises(HeatlabError, match="non-negative"):
        attribute(model, x, "Saliency", target=-1)
    with pytest.raises(HeatlabError, match="one class per sample"):
        attribute(model, x, "Saliency", target=torch.tensor([0, 1, 2]))
    with pytest.raises(HeatlabError, match="does not take"):
        attribute(model, x, "Saliency", baselines=torch.zeros_like(x))
    with pytest.raises(HeatlabError, match="batch_size"):
        attribute(model, x, "Saliency", batch_size=0)
    with pytest.raises(HeatlabError, match="no samples"):
        attribute(model, x[:0], "Saliency")


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("method", ["DeepLift", "GuidedBackprop", "Deconvolution", "DeepLiftShap", "GuidedGradCam"])
def test_reused_relu_model(method, inplace):
    """Hooked methods on a model with one ReLU module called twice (in place or not): they run
    on a safe copy and agree with the same network built with separate ReLUs; the user's model
    is untouched."""
    reused, separate = _cnn(cls=ReusedReLUCNN, inplace=inplace), _cnn()
    separate.load_state_dict(reused.state_dict(), strict=False)
    x, t = _images(2), torch.tensor([1, 2])
    hooks, state = _hook_counts(reused), {k: v.clone() for k, v in reused.state_dict().items()}
    torch.testing.assert_close(attribute(reused, x, method, target=t), attribute(separate, x, method, target=t))
    assert _hook_counts(reused) == hooks
    assert all(torch.equal(v, state[k]) for k, v in reused.state_dict().items())


class UntraceableReusedReLU(TinyCNN):
    """A reused ReLU behind data-dependent control flow: torch.fx cannot trace it, so the safe
    copy keeps the reuse and DeepLift must fail with a clear message."""

    def forward(self, x):
        h = self.relu1(self.bn1(self.conv1(x)))
        if h.sum() > -1:
            h = self.relu1(self.conv2(h))
        return self.fc(self.pool(h).flatten(1))


def test_unfixable_reused_relu_raises_heatlab_error():
    model = _cnn(cls=UntraceableReusedReLU)
    hooks = _hook_counts(model)
    with pytest.raises(HeatlabError, match="'relu1' runs more than once"):
        attribute(model, _images(2), "DeepLift", target=0)
    assert _hook_counts(model) == hooks


def test_available_methods():
    assert available_methods()[: len(METHODS)] == list(METHODS)  # the default set first, then the opt-in names
    assert len(METHODS) == 11 and "LayerGradCam" in METHODS and "LRP" in METHODS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_follows_model_device():
    model, x = _cnn().cuda(), _images(2)
    for method in METHODS:
        a = attribute(model, x, method, n_steps=4, n_samples=2, n_baselines=2)
        assert a.device.type == "cuda"
        torch.testing.assert_close(a.cpu(), attribute(model.cpu(), x, method, n_steps=4, n_samples=2, n_baselines=2))
        model.cuda()


# --- postprocess --------------------------------------------------------------------------


def test_normalize_max_abs_hand_computed():
    h = torch.tensor([[[1.0, -4.0], [2.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.5, 0.25], [-0.1, 0.0]]])
    out = normalize_max_abs(h)
    expected = torch.tensor([[[0.25, -1.0], [0.5, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.5], [-0.2, 0.0]]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(normalize_max_abs(h, dims=2)[0], torch.tensor([[0.25, -1.0], [1.0, 0.0]]))
    with pytest.raises(HeatlabError, match="NaN"):
        normalize_max_abs(torch.tensor([[float("nan"), 1.0]]))


def test_all_finite():
    big = torch.full((4, 4), 3e38)  # the sum overflows to Inf although every element is finite
    assert all_finite(big) and all_finite(torch.zeros(0)) and all_finite(torch.rand(3, 3))
    for bad in (float("nan"), float("inf"), -float("inf")):
        h = big.clone()
        h[2, 1] = bad
        assert not all_finite(h)
    mixed = torch.tensor([float("inf"), -float("inf")])  # sums to NaN, still caught
    assert not all_finite(mixed)


def test_clamp():
    h = torch.tensor([[-0.5, -0.05, 0.0, 0.2]])
    torch.testing.assert_close(clamp(h), torch.tensor([[-0.1, -0.05, 0.0, 0.1]]))
    torch.testing.assert_close(clamp(h, -0.2, 0.0), torch.tensor([[-0.2, -0.05, 0.0, 0.0]]))
    with pytest.raises(HeatlabError, match="lo < hi"):
        clamp(h, 0.1, -0.1)


def test_channel_adjust_hand_computed():
    # one sample, C=2, 1×2 pixels: max|h| = 4 -> [[.25, -.5], [1, 0]] -> sum [1.25, -.5] -> /1.25
    a = torch.tensor([[[[1.0, -2.0]], [[4.0, 0.0]]]])
    torch.testing.assert_close(channel_adjust(a), torch.tensor([[[1.0, -0.4]]]))
    # clamp (-.3, .3): [[.25, -.3], [.3, 0]] -> sum [.55, -.3] -> /.55
    torch.testing.assert_close(channel_adjust(a, clamp=(-0.3, 0.3)), torch.tensor([[[1.0, -0.3 / 0.55]]]))
    # scale invariance (the clamp acts after normalising)
    torch.testing.assert_close(channel_adjust(a * 1e-3, clamp=(-0.3, 0.3)), channel_adjust(a, clamp=(-0.3, 0.3)))


def test_channel_adjust_zero_three_dim_and_nan():
    a = torch.zeros(2, 3, 4, 4)
    a[1, 2, 0, 0] = -2.0
    out = channel_adjust(a)
    assert out.shape == (2, 4, 4)
    assert torch.equal(out[0], torch.zeros(4, 4)) and not out.isnan().any()
    assert out[1, 0, 0] == -1.0 and out[1].abs().sum() == 1.0
    three = torch.tensor([[[2.0, -1.0], [0.5, 0.0]]])
    torch.testing.assert_close(channel_adjust(three), three / 2)
    torch.testing.assert_close(channel_adjust(three, clamp=(-0.1, 0.1)), torch.tensor([[[1.0, -1.0], [1.0, 0.0]]]))
    bad = torch.ones(1, 3, 2, 2)
    bad[0, 1, 1, 1] = float("inf")
    with pytest.raises(HeatlabError, match="NaN or Inf"):
        channel_adjust(bad)
    with pytest.raises(HeatlabError, match="N×C×H×W"):
        channel_adjust(torch.ones(1, 1, 3, 2, 2))


# --- the method lifecycle and the shared model-state helpers ----------------------------------


def _throwaway_spec(log: list):
    """A test method: its set-up hooks the model, its run raises, its tear-down logs and unhooks."""
    from contextlib import contextmanager
    from dataclasses import dataclass

    from heatlab.explain.methods import MethodSpec, Options

    @dataclass(frozen=True)
    class ThrowawayOptions(Options):
        seed: int = 0
        message: str = "mid-attribution"

    @contextmanager
    def build(model, options, inputs):
        handle = model.register_forward_hook(lambda m, args, out: None)
        log.append(("setup", options.seed))
        try:
            def run(x, target, o):
                model(x)
                raise ValueError(o.message)

            yield run
        finally:
            handle.remove()
            log.append("teardown")

    return MethodSpec("Throwaway", build, ThrowawayOptions)


def test_build_teardown_runs_after_an_error_mid_attribution(monkeypatch):
    log = []
    throwaway = _throwaway_spec(log)  # attribute takes a MethodSpec itself: no registry is touched
    model = _cnn().train()
    hooks, flags = _hook_counts(model), [m.training for m in model.modules()]
    with pytest.raises(ValueError, match="boom here"):
        attribute(model, _images(2), throwaway, target=0, seed=4, message="boom here")
    assert log == [("setup", 4), "teardown"]
    assert _hook_counts(model) == hooks and all(n == 0 for counts in hooks for n in counts)
    assert [m.training for m in model.modules()] == flags
    with pytest.raises(HeatlabError, match="Throwaway does not take the argument.s. stdevs; its extra arguments are: message"):
        attribute(model, _images(2), throwaway, target=0, stdevs=0.1)


def test_method_options_declare_the_extra_arguments():
    from heatlab.explain.methods import REGISTRY

    assert [name for name, spec in REGISTRY.items() if spec.default] == list(METHODS)
    assert REGISTRY["Saliency"].kwargs == frozenset()
    assert REGISTRY["GradientShap"].kwargs == {"baselines", "stdevs", "baseline_dist"}
    assert REGISTRY["DeepLiftShap"].kwargs == {"baselines", "baseline_dist"}
    assert REGISTRY["DeepLift"].per_sample_kwargs == {"baselines"}
    assert REGISTRY["IntegratedGradients"].kwargs == {"baselines", "integration_method", "internal_batch_size", "output_weights"}
    assert REGISTRY["IntegratedGradients"].per_sample_kwargs == {"baselines", "output_weights"}
    assert REGISTRY["LayerGradCam"].kwargs == {"interpolate_mode", "relu_attributions", "attribute_to_layer_input"}
    assert REGISTRY["GuidedGradCam"].needs_layer and REGISTRY["DeepLiftShap"].hooks_activations


def test_per_sample_baselines_follow_their_chunk():
    model, x, t = _cnn(), _images(5), torch.tensor([0, 1, 2, 3, 4])
    base = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    full = attribute(model, x, "DeepLift", target=t, baselines=base)
    torch.testing.assert_close(attribute(model, x, "DeepLift", target=t, baselines=base, batch_size=2), full)
    torch.testing.assert_close(attribute(model, x[3:4], "DeepLift", target=t[3:4], baselines=base[3:4]), full[3:4])


def test_eval_mode_restores_each_flag_also_after_an_error_and_model_device():
    from heatlab.models.state import eval_mode, model_device
    from heatlab.models.training import model_device as reexported

    model = _cnn().train()
    model.bn1.eval()
    flags = [m.training for m in model.modules()]
    with pytest.raises(KeyError), eval_mode(model) as inside:
        assert inside is model and not any(m.training for m in model.modules())
        raise KeyError("x")
    assert [m.training for m in model.modules()] == flags
    assert reexported is model_device
    assert model_device(model) == torch.device("cpu") and model_device(nn.ReLU()) == torch.device("cpu")


@pytest.mark.parametrize("method", ["Saliency", "IntegratedGradients", "LayerGradCam"])
def test_an_input_the_model_cannot_take_is_one_sentence(method):
    model = _cnn()
    with pytest.raises(HeatlabError, match=r"cannot take inputs of shape \(5, 16, 16\) \(.*channels.*\); pass inputs"):
        attribute(model, torch.rand(2, 5, 16, 16), method, target=0)
    with pytest.raises(HeatlabError, match=r"cannot take inputs of shape \(5, 16, 16\)"):
        attribute(model, torch.rand(2, 5, 16, 16), method)  # the predicted-class pass fails first
    with pytest.raises(RuntimeError, match="boom"):  # a model that fails inside attribution only keeps its error
        attribute(_cnn(cls=ExplodingCNN), _images(), method, target=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_inputs_of_another_float_dtype_are_attributed_in_the_models_dtype(dtype):
    model, x = _cnn(), _images()
    got = attribute(model, x.to(dtype), "Saliency", target=1)
    want = attribute(model, x.to(dtype).float(), "Saliency", target=1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)
