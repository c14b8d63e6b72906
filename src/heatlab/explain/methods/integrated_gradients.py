"""IntegratedGradients: the path integral of gradients from a baseline (Captum ``IntegratedGradients``).

With ``output_weights`` (``N×K``, one row per sample) the attribution is that of the weighted sum
of the logits ``Σ_k w_k f_k(x)`` instead of one target logit; IG is linear in the function, so
this equals ``Σ_k w_k IG_k(x)`` in one pass instead of K (paper 003's probability-weighted setting).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from captum.attr import IntegratedGradients
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.explain.methods.common import MethodSpec, Options, Run, per_sample


@dataclass(frozen=True)
class IntegratedGradientsOptions(Options):
    """``n_steps`` of the integral; ``baselines`` broadcastable to the inputs or ``N×...`` (default
    zeros); ``integration_method`` is Captum's ``method`` (``attribute``'s third argument already
    has that name); ``internal_batch_size`` as in Captum; ``output_weights`` ``N×K`` attributes ``Σ_k w_k f_k``
    (``target`` is then ignored)."""

    n_steps: int = 32
    baselines: Tensor | float | None = per_sample()
    integration_method: str = "gausslegendre"
    internal_batch_size: int | None = None
    output_weights: Tensor | None = per_sample()


@contextmanager
def build(model: nn.Module, options: IntegratedGradientsOptions, inputs: Tensor) -> Iterator[Run]:
    ig = IntegratedGradients(model)
    # Captum repeats additional forward arguments along with the path points, so each point of
    # sample i is weighted by row i.
    weighted = IntegratedGradients(lambda x, w: (model(x) * w).sum(1))

    def run(x: Tensor, target: Tensor, o: IntegratedGradientsOptions) -> Tensor:
        if o.output_weights is not None:
            w = o.output_weights.to(device=x.device, dtype=x.dtype)
            if w.ndim != 2 or w.shape[0] != x.shape[0]:
                raise HeatlabError(f"output_weights must be N×K with one row per input sample, got {tuple(w.shape)}; "
                                   "pass e.g. softmax(model(x), 1).")
            return weighted.attribute(x, baselines=o.baselines, additional_forward_args=(w,), n_steps=o.n_steps,
                                      method=o.integration_method, internal_batch_size=o.internal_batch_size)
        return ig.attribute(
            x, baselines=o.baselines, target=target, n_steps=o.n_steps, method=o.integration_method,
            internal_batch_size=o.internal_batch_size,
        )

    yield run


SPEC = MethodSpec("IntegratedGradients", build, IntegratedGradientsOptions)
