"""IntegratedGradients: the path integral of gradients from a baseline (Captum ``IntegratedGradients``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from captum.attr import IntegratedGradients
from torch import Tensor, nn

from heatlab.explain.methods.common import MethodSpec, Options, Run, per_sample


@dataclass(frozen=True)
class IntegratedGradientsOptions(Options):
    """``n_steps`` of the integral; ``baselines`` broadcastable to the inputs or ``N×...`` (default
    zeros); ``integration_method`` is Captum's ``method`` (``attribute``'s third argument already
    has that name); ``internal_batch_size`` as in Captum."""

    n_steps: int = 32
    baselines: Tensor | float | None = per_sample()
    integration_method: str = "gausslegendre"
    internal_batch_size: int | None = None


@contextmanager
def build(model: nn.Module, options: IntegratedGradientsOptions, inputs: Tensor) -> Iterator[Run]:
    ig = IntegratedGradients(model)

    def run(x: Tensor, target: Tensor, o: IntegratedGradientsOptions) -> Tensor:
        return ig.attribute(
            x, baselines=o.baselines, target=target, n_steps=o.n_steps, method=o.integration_method,
            internal_batch_size=o.internal_batch_size,
        )

    yield run


SPEC = MethodSpec("IntegratedGradients", build, IntegratedGradientsOptions)
