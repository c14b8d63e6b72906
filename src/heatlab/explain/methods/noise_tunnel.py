"""NoiseTunnel: a gradient method averaged over noisy copies of the input (Captum ``NoiseTunnel``).

For each sample, the ``base`` method attributes ``x + e_k`` for ``k < nt_samples`` draws of
Gaussian noise ``e_k`` of std ``stdevs`` (in input units), and the ``N×...`` result is, per
element, ``nt_type``:

- ``"smoothgrad"``: ``mean_k a_k`` (SmoothGrad);
- ``"smoothgrad_sq"``: ``mean_k a_k²``;
- ``"vargrad"``: ``mean_k (a_k - mean_k a_k)²`` (Captum computes ``mean a² - (mean a)²``, the same
  number up to rounding; this form is never negative).

The noise is drawn once per call from ``torch.Generator().manual_seed(seed)`` on the CPU, as
``torch.normal(0, stdevs)`` of shape ``nt_samples×...``, and shared by every sample (like the
SHAP draws of :mod:`heatlab.explain.methods._shap`): a sample's result depends neither on its batch
nor on the global RNGs, which stay untouched. Captum's ``NoiseTunnel`` draws fresh noise per
sample from the global RNG; for one sample after ``torch.manual_seed(seed)`` it draws the same
noise, so both give the same attribution. ``nt_samples_batch_size`` noisy copies per sample go
through the base method at once (memory: that many times the base method's).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.explain.methods.common import MethodSpec, Options, Run

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


@dataclass(frozen=True)
class NoiseTunnelOptions(Options):
    """``base``: the method smoothed (a registry method with ``gradient=True``); ``nt_type`` (see
    :data:`NT_TYPES`); ``nt_samples`` noise draws of std ``stdevs``; ``nt_samples_batch_size``
    draws per base call. ``attribute``'s ``abs``, ``n_steps``, ``n_samples``, ``n_baselines``,
    ``seed`` and ``create_graph`` and the base's own keyword arguments reach the base method
    (``base_options``); ``base_spec`` is the base's spec (both filled by ``attribute``)."""

    base: str = "Saliency"
    nt_type: str = "smoothgrad"
    nt_samples: int = 8
    stdevs: float = 0.15
    nt_samples_batch_size: int = 1
    seed: int = 0
    create_graph: bool = False
    base_spec: Any = None
    base_options: Any = None


def check(o: NoiseTunnelOptions) -> None:
    """Raise a one-sentence HeatlabError for a bad ``nt_type``, count or ``stdevs``."""
    if o.nt_type not in NT_TYPES:
        raise HeatlabError(f"Unknown nt_type {o.nt_type!r}; choose one of {', '.join(NT_TYPES)}.")
    for name in ("nt_samples", "nt_samples_batch_size"):
        value = getattr(o, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HeatlabError(f"{name} must be a positive integer, got {value!r}; pass e.g. {name}=8.")
    if isinstance(o.stdevs, bool) or not isinstance(o.stdevs, (int, float)) or not o.stdevs >= 0:
        raise HeatlabError(f"stdevs must be a non-negative number (the noise std in input units), got {o.stdevs!r}.")


def noise(sample_shape: tuple[int, ...], nt_samples: int, stdevs: float, seed: int, dtype=torch.float32) -> Tensor:
    """The ``nt_samples×sample_shape`` noise of one call (CPU), Captum's ``torch.normal`` draw."""
    gen = torch.Generator().manual_seed(seed)
    std = torch.tensor(float(stdevs), dtype=dtype).repeat((nt_samples, *sample_shape))
    return torch.normal(0, std, generator=gen)


@contextmanager
def build(model: nn.Module, options: NoiseTunnelOptions, inputs: Tensor) -> Iterator[Run]:
    check(options)
    spec: MethodSpec = options.base_spec
    eps = noise(tuple(inputs.shape[1:]), options.nt_samples, options.stdevs, options.seed, inputs.dtype)
    eps = eps.to(inputs.device)
    with spec.build(model, options.base_options, inputs) as base_run:

        def run(x: Tensor, target: Tensor, o: NoiseTunnelOptions) -> Tensor:
            n, parts = x.shape[0], []
            for e in eps.split(o.nt_samples_batch_size):
                k = e.shape[0]
                noisy = (x.unsqueeze(1) + e).reshape(n * k, *x.shape[1:])
                a = base_run(noisy, target.repeat_interleave(k), _expand(spec, o.base_options, n, k))
                parts.append(a.reshape(n, k, *x.shape[1:]))
            a = torch.cat(parts, 1)
            if o.nt_type == "smoothgrad":
                return a.mean(1)
            if o.nt_type == "smoothgrad_sq":
                return (a * a).mean(1)
            return ((a - a.mean(1, keepdim=True)) ** 2).mean(1)

        yield run


def _expand(spec: MethodSpec, opts: Options, n: int, k: int) -> Options:
    """The base's options for ``n·k`` noisy copies: its per-sample rows repeated ``k`` times each."""
    rows = {name: v.repeat_interleave(k, 0) for name in spec.per_sample_kwargs
            if isinstance(v := getattr(opts, name), Tensor) and v.ndim > 0 and v.shape[0] == n}
    return replace(opts, **rows) if rows else opts


SPEC = MethodSpec("NoiseTunnel", build, NoiseTunnelOptions, wraps=True)
