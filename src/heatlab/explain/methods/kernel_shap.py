"""KernelShap: Shapley values of feature groups from a weighted linear fit (Captum ``KernelShap``).

Default features (see :mod:`heatlab.explain.methods._perturbation`): square patches on images (64
on a square image), one per element otherwise; ``n_samples`` perturbations per sample, seeded per
sample with ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from captum.attr import KernelShap
from torch import Tensor

from heatlab.explain.methods._perturbation import surrogate_build
from heatlab.explain.methods.common import MethodSpec, Options, per_sample


@dataclass(frozen=True)
class KernelShapOptions(Options):
    """``feature_mask`` (integer ids, ``1×...`` or ``N×...``; default patches of side ``patch_size``
    on images, one per element otherwise); ``baselines`` of absent features (default 0);
    ``n_samples`` perturbations (``attribute``'s argument; default 128); ``perturbations_per_eval``
    per forward pass; ``seed``."""

    patch_size: int | None = None
    feature_mask: Tensor | None = per_sample()
    baselines: Tensor | float | None = per_sample()
    n_samples: int = 128
    perturbations_per_eval: int = 16
    seed: int = 0


SPEC = MethodSpec("KernelShap", surrogate_build(lambda model, _: KernelShap(model)), KernelShapOptions)
