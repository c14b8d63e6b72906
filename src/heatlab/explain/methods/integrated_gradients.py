"""IntegratedGradients: the path integral of gradients from a baseline (Captum ``IntegratedGradients``).

With ``output_weights`` (``N×K``, one row per sample) the attribution is that of the weighted sum
of the logits ``Σ_k w_k f_k(x)`` instead of one target logit; IG is linear in the function, so
this equals ``Σ_k w_k IG_k(x)`` in one pass instead of K (paper 003's probability-weighted setting).

With ``create_graph=True`` the path integral is Captum's (same alphas, step sizes and sums) with
the gradients from :func:`input_gradients` keeping their graph (all path points in one pass;
``internal_batch_size`` and ``output_weights`` are not supported then).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.explain.methods.common import MethodSpec, Options, Run, input_gradients, per_sample


@dataclass(frozen=True)
class IntegratedGradientsOptions(Options):
    """``n_steps`` of the integral; ``baselines`` broadcastable to the inputs or ``N×...`` (default
    zeros); ``integration_method`` is Captum's ``method`` (``attribute``'s third argument already
    has that name); ``internal_batch_size`` as in Captum; ``output_weights`` ``N×K`` attributes ``Σ_k w_k f_k``
    (``target`` is then ignored); ``create_graph`` keeps the graph so the heatmap is differentiable."""

    n_steps: int = 32
    baselines: Tensor | float | None = per_sample()
    integration_method: str = "gausslegendre"
    internal_batch_size: int | None = None
    output_weights: Tensor | None = per_sample()
    create_graph: bool = False


@contextmanager
def build(model: nn.Module, options: IntegratedGradientsOptions, inputs: Tensor) -> Iterator[Run]:
    ig = IntegratedGradients(model)
    # Captum repeats additional forward arguments along with the path points, so each point of
    # sample i is weighted by row i.
    weighted = IntegratedGradients(lambda x, w: (model(x) * w).sum(1))

    def run(x: Tensor, target: Tensor, o: IntegratedGradientsOptions) -> Tensor:
        if o.create_graph:
            if o.output_weights is not None or o.internal_batch_size is not None:
                raise HeatlabError("IntegratedGradients with create_graph=True takes neither output_weights nor "
                                   "internal_batch_size; drop them or pass create_graph=False.")
            return _differentiable(model, x, target, o)
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


def _differentiable(model: nn.Module, x: Tensor, target: Tensor, o: IntegratedGradientsOptions) -> Tensor:
    """Captum's ``IntegratedGradients._attribute`` step by step, with the gradients' graph kept."""
    step_sizes, alphas = (f(o.n_steps) for f in approximation_parameters(o.integration_method))
    base = 0 if o.baselines is None else o.baselines
    path = torch.cat([base + alpha * (x - base) for alpha in alphas])  # n_steps·n×..., step-major
    grads = input_gradients(model, path, target.repeat(o.n_steps), create_graph=True)
    scaled = grads.contiguous().view(o.n_steps, -1) * torch.tensor(step_sizes).float().view(-1, 1).to(grads.device)
    total = scaled.reshape(o.n_steps, *x.shape).sum(0)
    return total * (x - base)


SPEC = MethodSpec("IntegratedGradients", build, IntegratedGradientsOptions, default=True, gradient=True)
