"""LRP: layer-wise relevance propagation through the real network, with Zennit's rules (paper 004).

Zennit's composites map layer types to rules; its canonizers fold every BatchNorm into the layer
before it (and undo that afterwards). heatlab adds a canonizer for its attribution-safe ResNet
blocks, whose residual sum becomes Zennit's ``Sum`` so relevance splits between the branches in
proportion to their contributions. Relevance starts at the target logit (``start="target"``:
``R = f_c(x)`` at class c, 0 elsewhere) or, as the paper's original code did, at all logits
(``start="all"``). A model that carries a ``Normalize`` is explained in its input space (the
standardisation is an element-wise affine map, so each pixel keeps its relevance).

Composites (``composite=``): ``epsilon`` (ε-rule on every convolution and linear layer, ``epsilon=``
→ 0 is LRP-0), ``epsilon_plus``, ``epsilon_plus_flat``, ``epsilon_gamma_box`` (z^B at the first
layer with the bounds of [0, 1] pixels in the model's input space) and ``epsilon_alpha2_beta1``.

Max-pooling (``maxpool=``): ``"winner"`` (Zennit's default: the gradient, so each window's
relevance goes to its maximum alone) or ``"average"`` (paper 004's original code: Zennit's ``Norm``
rule on an average-pool copy of the layer, so each window's relevance is split in proportion to its
inputs; the forward pass stays max-pooling). ``None`` takes the model's ``heatlab_lrp_maxpool``
(``"average"`` for paper 004's nets), else ``"winner"``.

During the same backward pass, ``record=RelevanceRecorder([...layer names])`` keeps the relevance
arriving at each named module's output, per sample, and ``filters={layer name: spec}`` replaces
it by :func:`heatlab.explain.filters.apply_filter` of it before it propagates further down.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
from torch.nn import functional as F
from zennit.composites import (
    EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat, LayerMapComposite, layer_map_base,
)
from zennit.layer import Sum
from zennit.rules import Epsilon, Norm
from zennit.types import Convolution, MaxPool

from heatlab.errors import HeatlabError
from heatlab.explain.filters import apply_filter, parse_filter
from heatlab.explain.methods.common import MethodSpec, Options, Run
from heatlab.models.input_space import input_space
from heatlab.models.safety import SafeBasicBlock, SafeBottleneck

COMPOSITES = ("epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1")
STARTS = ("target", "all")
MAXPOOLS = ("average", "winner")


class RelevanceRecorder:
    """Relevance at the outputs of the named layers, one ``N×...`` tensor per layer after the call.

    Pass it as ``record=`` to ``attribute(..., "LRP")``; ``relevance[name]`` then holds the
    relevance (detached, on the model's device) of every sample, in input order.
    """

    def __init__(self, layers: Sequence[str]):
        self.layers = list(layers)
        self._chunks: dict[str, list[Tensor]] = {name: [] for name in self.layers}

    def add(self, name: str, relevance: Tensor) -> None:
        self._chunks[name].append(relevance.detach())

    @property
    def relevance(self) -> dict[str, Tensor]:
        return {name: torch.cat(parts) for name, parts in self._chunks.items() if parts}


@dataclass(frozen=True)
class LRPOptions(Options):
    """``composite`` (see :data:`COMPOSITES`), ``epsilon`` of the ε-rules, ``start`` ("target" or
    "all"), ``maxpool`` ("average", "winner" or None: the model's default, see :func:`lrp_maxpool`),
    ``filters`` {layer name: filter spec} and ``record`` (a :class:`RelevanceRecorder`)."""

    composite: str = "epsilon_plus"
    epsilon: float = 1e-6
    start: str = "target"
    maxpool: str | None = None
    filters: Mapping[str, Any] | None = None
    record: RelevanceRecorder | None = field(default=None, compare=False)


class _SafeResidualCanonizer(AttributeCanonizer):
    """heatlab's SafeBasicBlock/SafeBottleneck with the residual sum as a Zennit ``Sum`` module."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        if isinstance(module, SafeBasicBlock):
            return {"forward": cls._basic.__get__(module), "canonizer_sum": Sum()}
        if isinstance(module, SafeBottleneck):
            return {"forward": cls._bottleneck.__get__(module), "canonizer_sum": Sum()}
        return None

    @staticmethod
    def _basic(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.canonizer_sum(torch.stack([identity, out], dim=-1)))

    @staticmethod
    def _bottleneck(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        out = self.bn3(self.conv3(out))
        return self.relu3(self.canonizer_sum(torch.stack([identity, out], dim=-1)))


class _MaxPoolAsAverage(Norm):
    """Zennit's ``Norm`` rule on an average-pool copy of a max-pooling layer (paper 004's
    ``MaxPool2d_LRP``): ``R_i = x_i / Σ_window x · R_window`` per window; the forward pass is unchanged."""

    def backward(self, module, grad_input, grad_output):
        x = self.stored_tensors["input"][0].clone().requires_grad_()
        pool = getattr(F, f"avg_pool{x.dim() - 2}d")
        with torch.autograd.enable_grad():
            z = pool(x, module.kernel_size, module.stride, module.padding, module.ceil_mode)
        (gradient,) = torch.autograd.grad(z, x, grad_outputs=self.gradient_mapper(grad_output[0], [z]))
        return (self.reducer([x], [gradient]),)


def check_maxpool(maxpool: str | None) -> str | None:
    if maxpool is not None and maxpool not in MAXPOOLS:
        raise HeatlabError(f"Unknown max-pooling rule maxpool={maxpool!r}; choose 'average' (each window's relevance "
                           "split in proportion to its inputs, paper 004's code) or 'winner' (all to the maximum).")
    return maxpool


def lrp_maxpool(model: nn.Module, maxpool: str | None = None) -> str:
    """The max-pooling rule LRP uses on ``model``: ``maxpool`` when given, else the model's
    ``heatlab_lrp_maxpool`` (paper 004's nets: "average"), else "winner" (Zennit's default)."""
    if check_maxpool(maxpool) is not None:
        return maxpool
    return check_maxpool(getattr(model, "heatlab_lrp_maxpool", None)) or "winner"


def check_layers(model: nn.Module, layers: Sequence[str], argument: str) -> list[str]:
    """``layers`` as a list when each names a module of ``model``; else one sentence naming ``argument``
    and the model's layers (its top-level modules, and an example of a deeper name)."""
    names = dict(model.named_modules())
    for layer in layers:
        if not isinstance(layer, str) or not layer or layer not in names:
            top = ", ".join(name for name, _ in model.named_children())
            deeper = next((name for name in names if "." in name), None)
            raise HeatlabError(f"{argument}={layer!r} is not a layer of {type(model).__name__}; its layers are {top}"
                               + (f" and their parts (e.g. {deeper})." if deeper else "."))
    return list(layers)


def filter_layers(model: nn.Module) -> list[str]:
    """The model's default filter points (its ``heatlab_filter_layers``, backward order)."""
    layers = getattr(model, "heatlab_filter_layers", None)
    if not layers:
        raise HeatlabError(f"{type(model).__name__} names no default LRP filter layers; pass the layers yourself, "
                           "e.g. filters={'features.3': 'c0.2'}.")
    return list(layers)


def chosen_filter_layers(model: nn.Module, layers: Sequence[str] | str | None, argument: str = "filter_layers") -> list[str]:
    """Where the filters act: ``layers`` (names, or one comma-separated string) when each is a module of
    ``model`` (:func:`check_layers`, naming ``argument``), else the model's defaults (:func:`filter_layers`)
    when ``layers`` is None or empty."""
    if isinstance(layers, str):
        layers = [name.strip() for name in layers.split(",") if name.strip()]
    return check_layers(model, layers, argument) if layers else filter_layers(model)


def _composite(options: LRPOptions, maxpool: str, low: Tensor, high: Tensor):
    canonizers = [SequentialMergeBatchNorm(), _SafeResidualCanonizer()]
    eps = options.epsilon
    pools = [(MaxPool, _MaxPoolAsAverage())] if maxpool == "average" else []
    if options.composite == "epsilon":
        rules = pools + layer_map_base() + [(Convolution, Epsilon(epsilon=eps)), (nn.Linear, Epsilon(epsilon=eps))]
        return LayerMapComposite(layer_map=rules, canonizers=canonizers)
    if options.composite == "epsilon_gamma_box":
        return EpsilonGammaBox(low=low, high=high, epsilon=eps, layer_map=pools, canonizers=canonizers)
    cls = {"epsilon_plus": EpsilonPlus, "epsilon_plus_flat": EpsilonPlusFlat,
           "epsilon_alpha2_beta1": EpsilonAlpha2Beta1}[options.composite]
    return cls(epsilon=eps, layer_map=pools, canonizers=canonizers)


def check_composite(composite: str) -> str:
    if composite not in COMPOSITES:
        raise HeatlabError(f"Unknown LRP composite {composite!r}; choose one of {', '.join(COMPOSITES)}.")
    return composite


def check_start(start: str) -> str:
    if start not in STARTS:
        raise HeatlabError(f"Unknown LRP start {start!r}; choose 'target' (the target logit) or 'all'.")
    return start


def _check(options: LRPOptions, model: nn.Module) -> tuple[dict[str, Any], list[str], str]:
    """The parsed filters by layer, every layer that gets a hook (filtered or recorded) and the
    max-pooling rule, checked."""
    check_composite(options.composite)
    check_start(options.start)
    maxpool = lrp_maxpool(model, options.maxpool)
    if not isinstance(options.epsilon, (int, float)) or isinstance(options.epsilon, bool) or options.epsilon < 0:
        raise HeatlabError(f"epsilon must be a number >= 0, got {options.epsilon!r}; pass e.g. epsilon=1e-6.")
    filters = {k: parse_filter(v) for k, v in (options.filters or {}).items()}
    check_layers(model, list(filters), "filters")
    recorded = options.record.layers if options.record is not None else []
    check_layers(model, recorded, "record")
    if maxpool == "average":
        for name, module in model.named_modules():
            dilation = getattr(module, "dilation", 1)
            if isinstance(module, MaxPool) and any(d != 1 for d in (dilation if isinstance(dilation, tuple) else (dilation,))):
                raise HeatlabError(f"maxpool='average' cannot treat the dilated max-pooling {name!r}; pass "
                                   "maxpool='winner' for this model.")
    return filters, sorted(set(filters) | set(recorded)), maxpool


def _unfolded_batchnorm(model: nn.Module) -> str | None:
    """The name of a BatchNorm that Zennit's merge leaves alone: one whose preceding leaf (in
    :class:`SequentialMergeBatchNorm`'s order) is not a linear layer. None if there is none."""
    previous = None
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue
        if isinstance(module, SequentialMergeBatchNorm.batch_norm_type) and \
                not isinstance(previous, SequentialMergeBatchNorm.linear_type):
            return name
        previous = module
    return None


@contextmanager
def build(model: nn.Module, options: LRPOptions, inputs: Tensor) -> Iterator[Run]:
    filters, hooked, maxpool = _check(options, model)
    if (bad := _unfolded_batchnorm(model)) is not None:
        raise HeatlabError(f"LRP cannot fold BatchNorm '{bad}' into the layer before it (it does not follow a "
                           "convolution or linear layer); choose another method for this model.")
    with ExitStack() as stack:
        net, to_input = stack.enter_context(input_space(model))
        ones = torch.ones((1, *inputs.shape[1:]), dtype=inputs.dtype, device=inputs.device)
        low, high = to_input(0 * ones), to_input(ones)
        composite = _composite(options, maxpool, low, high)
        modules = dict(net.named_modules())
        modified = stack.enter_context(composite.context(net))
        # Registered after Zennit's hooks, so they see the output Zennit's rule reads its relevance from.
        for name in hooked:
            handle = modules[name].register_forward_hook(_relevance_hook(name, filters.get(name), options.record))
            stack.callback(handle.remove)

        def run(x: Tensor, target: Tensor, o: LRPOptions) -> Tensor:
            z = to_input(x).detach().requires_grad_()
            with torch.enable_grad():
                out = modified(z)
                start = out.detach() if o.start == "all" else \
                    torch.zeros_like(out).scatter_(1, target[:, None], out.detach().gather(1, target[:, None]))
                (relevance,) = torch.autograd.grad(out, z, grad_outputs=start)
            return relevance

        yield run


def _relevance_hook(name: str, filt, recorder: RelevanceRecorder | None):
    """A forward hook that watches the relevance (gradient) arriving at the module's output."""

    def on_relevance(grad: Tensor) -> Tensor:
        if filt is not None:
            grad = apply_filter(grad, filt)
        if recorder is not None:
            recorder.add(name, grad)
        return grad

    def hook(module, args, output):
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(on_relevance)

    return hook


SPEC = MethodSpec("LRP", build, LRPOptions, hooks_activations=True, default=True)
