"""InputXGradient: input times the gradient of the target logit (Captum ``InputXGradient``).

With ``create_graph=True`` the gradient comes from :func:`input_gradients` with the graph kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from captum.attr import InputXGradient
from torch import Tensor, nn

from heatlab.explain.methods.common import MethodSpec, Options, Run, input_gradients


@dataclass(frozen=True)
class InputXGradientOptions(Options):
    """``create_graph``: keep the graph so the heatmap is differentiable."""

    create_graph: bool = False


@contextmanager
def build(model: nn.Module, options: InputXGradientOptions, inputs: Tensor) -> Iterator[Run]:
    ixg = InputXGradient(model)

    def run(x: Tensor, target: Tensor, o: InputXGradientOptions) -> Tensor:
        if not o.create_graph:
            return ixg.attribute(x, target=target)
        return x * input_gradients(model, x, target, create_graph=True)

    yield run


SPEC = MethodSpec("InputXGradient", build, InputXGradientOptions, default=True, gradient=True)
