"""Saliency: the gradient of the target logit with respect to the input (Captum ``Saliency``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from captum.attr import Saliency
from torch import Tensor, nn

from heatlab.explain.methods.common import MethodSpec, Options, Run


@dataclass(frozen=True)
class SaliencyOptions(Options):
    """``abs``: ``|gradient|`` (Captum's default, paper 002) or the signed gradient."""

    abs: bool = True


@contextmanager
def build(model: nn.Module, options: SaliencyOptions, inputs: Tensor) -> Iterator[Run]:
    sal = Saliency(model)
    yield lambda x, target, o: sal.attribute(x, target=target, abs=o.abs)


SPEC = MethodSpec("Saliency", build, SaliencyOptions)
