"""DeepLiftShap: DeepLift averaged over a baseline distribution (Captum ``DeepLiftShap``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from captum.attr import DeepLiftShap
from torch import Tensor, nn

from heatlab.explain.methods._shap import check_baseline_dist, shap_baselines
from heatlab.explain.methods.common import MethodSpec, Options, Run


@dataclass(frozen=True)
class DeepLiftShapOptions(Options):
    """``baselines``: the ``B×...`` distribution (default :func:`shap_baselines` of ``n_baselines``
    draws of ``baseline_dist`` from ``seed``)."""

    n_baselines: int = 8
    seed: int = 0
    baselines: Tensor | None = None
    baseline_dist: str = "normal"


@contextmanager
def build(model: nn.Module, options: DeepLiftShapOptions, inputs: Tensor) -> Iterator[Run]:
    baselines = options.baselines
    check_baseline_dist(options.baseline_dist)
    if baselines is None:
        baselines = shap_baselines(tuple(inputs.shape[1:]), options.n_baselines, options.seed, inputs.dtype,
                                   dist=options.baseline_dist)
    baselines = baselines.to(inputs.device)
    dls = DeepLiftShap(model)
    yield lambda x, target, _: dls.attribute(x, baselines=baselines, target=target)


SPEC = MethodSpec("DeepLiftShap", build, DeepLiftShapOptions, hooks_activations=True, default=True, gradient=True)
