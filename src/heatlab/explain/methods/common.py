"""The contract every attribution-method module follows, and the helpers they share.

A method is one module defining three things:

- an options class: a frozen dataclass subclassing :class:`Options`, one field per setting the
  method reads. Fields named like one of ``attribute``'s own arguments (:data:`CALL_ARGS`) are
  filled from that argument; every other field is an extra keyword argument that ``attribute``
  accepts for this method (any other keyword is refused). A field declared with
  :func:`per_sample` may hold one row per input sample and is sliced along with the batch.
- ``build(model, options, inputs)``: a context manager. Set-up runs before it yields (construct
  the Captum object, draw random baselines, register hooks, rewrite a copy of the model); it yields
  ``run(x, target, options)``; tear-down runs when the block ends, also after an exception (put it
  in a ``finally``). ``inputs`` is the whole ``N×...`` batch (for shapes, dtype and device).
- ``SPEC = MethodSpec(name, build, options_class, ...)``, listed by one line in
  ``heatlab.explain.methods``.

A method supports ``attribute(..., create_graph=True)`` (heatmaps differentiable w.r.t. the
inputs and the model's parameters) when its options declare a ``create_graph`` field; its ``run``
then keeps the autograd graph (see :func:`input_gradients`).

``run(x, target, options)`` is applied to each chunk of the batch: ``x`` is ``n×...``, ``target``
a LongTensor of ``n`` and ``options`` the call's options with per-sample fields sliced to the
chunk; it returns attributions of the shape of ``x``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

from heatlab.errors import HeatlabError

#: ``attribute``'s own settings that an options class may declare as fields (``layer`` and
#: ``layer_name`` are the resolved CAM layer module and its dotted name; ``base_spec`` and
#: ``base_options`` the resolved base method of a wrapping method such as NoiseTunnel).
CALL_ARGS = frozenset({"abs", "n_baselines", "n_samples", "n_steps", "seed", "layer", "layer_name", "create_graph",
                       "base_spec", "base_options"})

_PER_SAMPLE = "per_sample"

Run = Callable[[Tensor, Tensor, Any], Tensor]
Build = Callable[[nn.Module, Any, Tensor], AbstractContextManager[Run]]


@dataclass(frozen=True)
class Options:
    """Base class of the per-method options; a method without settings uses it as is."""


@dataclass(frozen=True)
class LayerOptions(Options):
    """Settings of the CAM methods: the layer (module of the model being attributed) and its name."""

    layer: nn.Module | None = None
    layer_name: str = ""


def per_sample(default: Any = None) -> Any:
    """A dataclass field that may hold ``N×...`` rows, one per input sample (sliced per chunk)."""
    return dataclasses.field(default=default, metadata={_PER_SAMPLE: True})


@dataclass(frozen=True)
class MethodSpec:
    """How to run one method.

    ``build``: the set-up/tear-down context manager (see the module docstring); ``options``: its
    options class; ``hooks_activations``: the method hooks activation modules (needs an
    attribution-safe model: no in-place or reused activations); ``needs_layer``: a CAM method
    (4-D inputs only); ``default``: in the stages' default set (``'all'``: the papers' eleven; the
    others are opt-in by name); ``gradient``: backpropagates to the inputs without a layer, so
    NoiseTunnel can smooth it; ``wraps``: runs the method named by its ``base`` option (whose
    spec and options ``attribute`` resolves into ``base_spec`` and ``base_options``).
    """

    name: str
    build: Build
    options: type[Options] = Options
    hooks_activations: bool = False
    needs_layer: bool = False
    default: bool = False
    gradient: bool = False
    wraps: bool = False

    @cached_property
    def kwargs(self) -> frozenset[str]:
        """Extra keyword arguments the method accepts (its option fields beyond :data:`CALL_ARGS`)."""
        return frozenset(f.name for f in dataclasses.fields(self.options)) - CALL_ARGS

    @cached_property
    def create_graph(self) -> bool:
        """Supports ``create_graph=True`` (its options declare the field)."""
        return any(f.name == "create_graph" for f in dataclasses.fields(self.options))

    @cached_property
    def per_sample_kwargs(self) -> frozenset[str]:
        """Those of :attr:`kwargs` that may hold one row per input sample."""
        return frozenset(f.name for f in dataclasses.fields(self.options) if f.metadata.get(_PER_SAMPLE))

    def make_options(self, call_args: Mapping[str, Any], extra: Mapping[str, Any]) -> Options:
        """The options of one call: the declared ``call_args`` (``None``: the method's default) plus
        the (checked) ``extra`` kwargs."""
        names = {f.name for f in dataclasses.fields(self.options)}
        return self.options(**{k: v for k, v in call_args.items() if k in names and v is not None}, **extra)


def plain(cls) -> Build:
    """``build`` for a Captum method whose ``attribute(inputs, target=...)`` needs nothing else."""

    @contextmanager
    def build(model: nn.Module, options: Options, inputs: Tensor) -> Iterator[Run]:
        method = cls(model)
        yield lambda x, target, _: method.attribute(x, target=target)

    return build


def check_layer_output(a: Tensor, name: str, ndim: int) -> None:
    """Raise unless the CAM result ``a`` has ``ndim`` dims and is not empty."""
    # Captum returns an empty tensor (GuidedGradCam) or a non-image map when the layer's output
    # is not a spatial feature map (e.g. a Linear layer).
    if a.ndim != ndim or a.numel() == 0:
        raise HeatlabError(
            f"Layer '{name}' does not output an N×C×h×w feature map; pass layer= the name of a convolutional layer."
        )


def input_gradients(model: nn.Module, x: Tensor, target: Tensor, *, create_graph: bool = False) -> Tensor:
    """``∂ f_target(x) / ∂ x`` per sample (``n×...``), computed as Captum's ``Saliency`` does.

    With ``create_graph`` the graph of the gradient is kept (``torch.autograd.grad(...,
    create_graph=True)``, which Captum does not expose), so the result can be differentiated
    again w.r.t. ``x`` (when it requires grad) and the model's parameters.
    """
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_()
        # Captum selects the target logits with gather and differentiates their unbound rows.
        logits = model(x).gather(1, target.reshape(-1, 1))
        return torch.autograd.grad(torch.unbind(logits), x, create_graph=create_graph)[0]
