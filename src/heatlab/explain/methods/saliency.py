"""Saliency: the gradient of the target logit with respect to the input (Captum ``Saliency``).

With ``create_graph=True`` the same gradient comes from :func:`input_gradients` with the graph kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from captum.attr import Saliency
from torch import Tensor, nn

from heatlab.explain.methods.common import MethodSpec, Options, Run, input_gradients


@dataclass(frozen=True)
class SaliencyOptions(Options):
    """``abs``: ``|gradient|`` (Captum's default, paper 002) or the signed gradient; ``create_graph``:
    keep the graph so the heatmap is differentiable."""

    abs: bool = True
    create_graph: bool = False


@contextmanager
def build(model: nn.Module, options: SaliencyOptions, inputs: Tensor) -> Iterator[Run]:
    sal = Saliency(model)

    def run(x: Tensor, target: Tensor, o: SaliencyOptions) -> Tensor:
        if not o.create_graph:
            return sal.attribute(x, target=target, abs=o.abs)
        g = input_gradients(model, x, target, create_graph=True)
        return g.abs() if o.abs else g

    yield run


SPEC = MethodSpec("Saliency", build, SaliencyOptions, default=True, gradient=True)
