"""DeepLift (Rescale rule) against one reference input (Captum ``DeepLift``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from captum.attr import DeepLift
from torch import Tensor, nn

from heatlab.explain.methods.common import MethodSpec, Options, Run, per_sample


@dataclass(frozen=True)
class DeepLiftOptions(Options):
    """``baselines``: the reference, broadcastable to the inputs or ``N×...`` (default zeros)."""

    baselines: Tensor | float | None = per_sample()


@contextmanager
def build(model: nn.Module, options: DeepLiftOptions, inputs: Tensor) -> Iterator[Run]:
    dl = DeepLift(model)
    yield lambda x, target, o: dl.attribute(x, baselines=o.baselines, target=target)


SPEC = MethodSpec("DeepLift", build, DeepLiftOptions, hooks_activations=True, default=True, gradient=True)
