"""GradientShap as Captum computes it, but with one seeded set of draws for all samples.

Captum's ``GradientShap`` draws a baseline and an ``alpha`` per (sample, draw) from NumPy's global
RNG, so a sample's result depends on its batch position. Here draw ``k`` uses baseline ``b_k``,
``alpha_k`` and noise ``e_k`` (:func:`gradient_shap_draws`) for every sample; each sample's
estimator is Captum's: ``mean_k (x + e_k - b_k) * grad f(alpha_k (x + e_k) + (1 - alpha_k) b_k)``.
``create_graph=True`` keeps the gradients' graph (:func:`input_gradients`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from captum.attr import Saliency
from torch import Tensor, nn

from heatlab.explain.methods._shap import gradient_shap_draws
from heatlab.explain.methods.common import MethodSpec, Options, Run, input_gradients


@dataclass(frozen=True)
class GradientShapOptions(Options):
    """``n_samples`` draws from ``baselines`` (``B×...``, default ``n_baselines`` seeded draws of
    ``baseline_dist``), with Gaussian input noise of std ``stdevs``; ``create_graph`` keeps the graph."""

    n_baselines: int = 8
    n_samples: int = 8
    seed: int = 0
    baselines: Tensor | None = None
    stdevs: float = 0.0
    baseline_dist: str = "normal"
    create_graph: bool = False


@contextmanager
def build(model: nn.Module, options: GradientShapOptions, inputs: Tensor) -> Iterator[Run]:
    shape, device = tuple(inputs.shape[1:]), inputs.device
    baselines, index, alpha, noise = gradient_shap_draws(
        shape, options.n_samples, options.seed, n_baselines=options.n_baselines, baselines=options.baselines,
        stdevs=float(options.stdevs), dtype=inputs.dtype, baseline_dist=options.baseline_dist,
    )
    base = baselines[index.to(baselines.device)].to(device)  # K×...
    alpha = alpha.to(device).view(-1, *([1] * len(shape)))
    shift = noise.to(device) - base  # (x + e_k) - b_k = x + shift_k
    sal = Saliency(model)

    def run(x: Tensor, target: Tensor, o: GradientShapOptions) -> Tensor:
        n, k = x.shape[0], base.shape[0]
        diff = x.unsqueeze(1) + shift  # n×K×...
        z, t = (base + alpha * diff).reshape(n * k, *shape), target.repeat_interleave(k)
        if o.create_graph:
            grads = input_gradients(model, z, t, create_graph=True).view(n, k, *shape)
        else:
            grads = sal.attribute(z.requires_grad_(), target=t, abs=False).view(n, k, *shape)
        return (diff * grads).mean(1)

    yield run


SPEC = MethodSpec("GradientShap", build, GradientShapOptions, default=True, gradient=True)
