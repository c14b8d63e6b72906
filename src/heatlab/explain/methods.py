"""The attribution-method registry: one :class:`MethodSpec` per Captum method.

A spec's ``build(model, options, inputs)`` is called once per ``attribute`` call (it constructs
the Captum object and draws any random baselines) and returns ``run(x, target, **kwargs)``,
applied to each chunk of the batch: ``x`` is ``n×...``, ``target`` a LongTensor of ``n``, and the
result has the shape of ``x``. ``run`` receives every extra keyword argument of the call
(per-sample ones sliced to the chunk); a build function may also read them from
``options.kwargs``. Adding a method is one build function plus one registry line.

SHAP-type methods draw their randomness once per call from ``torch.Generator().manual_seed(seed)``
on the CPU, independently of the batch size, and use the same draws for every sample, so a
sample's attribution does not depend on which batch it is in, nor on the global RNG, nor on the
device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from captum.attr import (
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Saliency,
)
from torch import Tensor, nn

from heatlab.errors import HeatlabError

Run = Callable[..., Tensor]


@dataclass(frozen=True)
class Options:
    """Method settings shared by every chunk of one call (see ``attribute`` for their meaning)."""

    layer: nn.Module | None = None
    layer_name: str = ""
    abs: bool = True
    n_baselines: int = 8
    n_samples: int = 8
    n_steps: int = 32
    seed: int = 0
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """How to run one method.

    ``kwargs``: extra keyword arguments the method accepts; ``per_sample_kwargs``: those of them
    that may hold one row per input sample (sliced along with the batch when it is chunked);
    ``hooks_activations``: the method hooks activation modules (needs an attribution-safe
    model: no in-place or reused activations); ``needs_layer``: a CAM method (4-D inputs only).
    """

    name: str
    build: Callable[[nn.Module, Options, Tensor], Run]
    kwargs: frozenset[str] = frozenset()
    per_sample_kwargs: frozenset[str] = frozenset()
    hooks_activations: bool = False
    needs_layer: bool = False


def shap_baselines(sample_shape: tuple[int, ...], n: int, seed: int, dtype=torch.float32) -> Tensor:
    """The SHAP baseline distribution: ``n×sample_shape`` images uniform in [0, 1] (CPU).

    The first draws of ``torch.Generator().manual_seed(seed)``, so the same seed gives the same
    bytes on every device and DeepLiftShap and GradientShap share the set.
    """
    return _baselines(torch.Generator().manual_seed(seed), sample_shape, n, dtype)


def _baselines(gen: torch.Generator, sample_shape, n: int, dtype) -> Tensor:
    return torch.rand((n, *sample_shape), generator=gen, dtype=dtype)


def gradient_shap_draws(
    sample_shape: tuple[int, ...], n_samples: int, seed: int, *, n_baselines: int = 8,
    baselines: Tensor | None = None, stdevs: float = 0.0, dtype=torch.float32,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """GradientShap's random draws, shared by all samples: ``(baselines, index, alpha, noise)``.

    ``baselines``: the given ``B×sample_shape`` tensor, or :func:`shap_baselines`; then, from the
    same generator, ``index`` (LongTensor ``K = n_samples``: the baseline of each draw), ``alpha``
    (``K``, uniform in [0, 1]) and ``noise`` (``K×sample_shape``, Gaussian with std ``stdevs``).
    All on the CPU except a given ``baselines``, which stays where it is.
    """
    gen = torch.Generator().manual_seed(seed)
    if baselines is None:
        baselines = _baselines(gen, sample_shape, n_baselines, dtype)
    index = torch.randint(baselines.shape[0], (n_samples,), generator=gen)
    alpha = torch.rand(n_samples, generator=gen, dtype=dtype)
    noise = torch.randn((n_samples, *sample_shape), generator=gen, dtype=dtype) * stdevs
    return baselines, index, alpha, noise


# --- build functions ------------------------------------------------------------------------


def _saliency(model: nn.Module, opts: Options, x: Tensor) -> Run:
    sal = Saliency(model)
    return lambda xc, tc: sal.attribute(xc, target=tc, abs=opts.abs)


def _plain(cls) -> Callable[[nn.Module, Options, Tensor], Run]:
    """A method whose Captum ``attribute(inputs, target=..., **kwargs)`` needs nothing else."""

    def build(model: nn.Module, opts: Options, x: Tensor) -> Run:
        method = cls(model)
        return lambda xc, tc, **kw: method.attribute(xc, target=tc, **kw)

    return build


def _integrated_gradients(model: nn.Module, opts: Options, x: Tensor) -> Run:
    ig = IntegratedGradients(model)

    # Captum's ``method`` (the integration rule) is ``integration_method`` here: ``attribute``'s
    # own third argument is already called ``method``.
    def run(xc: Tensor, tc: Tensor, integration_method: str = "gausslegendre", **kw) -> Tensor:
        return ig.attribute(xc, target=tc, n_steps=opts.n_steps, method=integration_method, **kw)

    return run


def _deep_lift_shap(model: nn.Module, opts: Options, x: Tensor) -> Run:
    baselines = opts.kwargs.get("baselines")
    if baselines is None:
        baselines = shap_baselines(tuple(x.shape[1:]), opts.n_baselines, opts.seed, x.dtype)
    baselines = baselines.to(x.device)
    dls = DeepLiftShap(model)
    return lambda xc, tc, **_: dls.attribute(xc, baselines=baselines, target=tc)


def _gradient_shap(model: nn.Module, opts: Options, x: Tensor) -> Run:
    """GradientShap as Captum computes it, but with one seeded set of draws for all samples.

    Captum's ``GradientShap`` draws a baseline and an ``alpha`` per (sample, draw) from NumPy's
    global RNG, so a sample's result depends on its batch position. Here draw ``k`` uses baseline
    ``b_k``, ``alpha_k`` and noise ``e_k`` for every sample; each sample's estimator is Captum's:
    ``mean_k (x + e_k - b_k) * grad f(alpha_k (x + e_k) + (1 - alpha_k) b_k)``.
    """
    shape = tuple(x.shape[1:])
    baselines, index, alpha, noise = gradient_shap_draws(
        shape, opts.n_samples, opts.seed, n_baselines=opts.n_baselines,
        baselines=opts.kwargs.get("baselines"), stdevs=float(opts.kwargs.get("stdevs", 0.0)), dtype=x.dtype,
    )
    base = baselines[index.to(baselines.device)].to(x.device)  # K×...
    alpha = alpha.to(x.device).view(-1, *([1] * len(shape)))
    shift = noise.to(x.device) - base  # (x + e_k) - b_k = x + shift_k
    sal = Saliency(model)

    def run(xc: Tensor, tc: Tensor, **_) -> Tensor:
        n, k = xc.shape[0], base.shape[0]
        diff = xc.unsqueeze(1) + shift  # n×K×...
        z = (base + alpha * diff).reshape(n * k, *shape).requires_grad_()
        grads = sal.attribute(z, target=tc.repeat_interleave(k), abs=False).view(n, k, *shape)
        return (diff * grads).mean(1)

    return run


def _layer_grad_cam(model: nn.Module, opts: Options, x: Tensor) -> Run:
    cam = LayerGradCam(model, opts.layer)

    def run(xc: Tensor, tc: Tensor, interpolate_mode: str = "nearest", **kw) -> Tensor:
        a = cam.attribute(xc, target=tc, **kw)
        _check_layer_output(a, opts.layer_name, 4)
        a = LayerAttribution.interpolate(a, tuple(xc.shape[2:]), interpolate_mode)
        return a.expand_as(xc).contiguous()

    return run


def _guided_grad_cam(model: nn.Module, opts: Options, x: Tensor) -> Run:
    ggc = GuidedGradCam(model, opts.layer)

    def run(xc: Tensor, tc: Tensor, **kw) -> Tensor:
        a = ggc.attribute(xc, target=tc, **kw)
        _check_layer_output(a, opts.layer_name, xc.ndim)
        return a

    return run


def _check_layer_output(a: Tensor, name: str, ndim: int) -> None:
    # Captum returns an empty tensor (GuidedGradCam) or a non-image map when the layer's output
    # is not a spatial feature map (e.g. a Linear layer).
    if a.ndim != ndim or a.numel() == 0:
        raise HeatlabError(
            f"Layer '{name}' does not output an N×C×h×w feature map; pass layer= the name of a convolutional layer."
        )


_SPECS = (
    MethodSpec("Saliency", _saliency),
    MethodSpec("InputXGradient", _plain(InputXGradient)),
    MethodSpec("DeepLift", _plain(DeepLift), frozenset({"baselines"}), frozenset({"baselines"}), hooks_activations=True),
    MethodSpec("DeepLiftShap", _deep_lift_shap, frozenset({"baselines"}), hooks_activations=True),
    MethodSpec("GradientShap", _gradient_shap, frozenset({"baselines", "stdevs"})),
    MethodSpec("GuidedBackprop", _plain(GuidedBackprop), hooks_activations=True),
    MethodSpec("Deconvolution", _plain(Deconvolution), hooks_activations=True),
    MethodSpec(
        "GuidedGradCam", _guided_grad_cam, frozenset({"interpolate_mode", "attribute_to_layer_input"}),
        hooks_activations=True, needs_layer=True,
    ),
    MethodSpec(
        "LayerGradCam", _layer_grad_cam,
        frozenset({"interpolate_mode", "relu_attributions", "attribute_to_layer_input"}), needs_layer=True,
    ),
    MethodSpec(
        "IntegratedGradients", _integrated_gradients,
        frozenset({"baselines", "integration_method", "internal_batch_size"}), frozenset({"baselines"}),
    ),
)

#: Method name -> spec (read-only).
REGISTRY: Mapping[str, MethodSpec] = MappingProxyType({s.name: s for s in _SPECS})
