"""Lime: the coefficients of a local linear surrogate on feature groups (Captum ``Lime`` with its
exponential cosine kernel and its Lasso surrogate, ``SkLearnLasso(alpha=lasso_alpha)``; Captum's
alpha 0.01 zeroes every coefficient when the target logit moves by less than about that much).

Default features (see :mod:`heatlab.explain.methods._perturbation`): square patches on images (64
on a square image), one per element otherwise; ``n_samples`` perturbations per sample, seeded per
sample with ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from captum._utils.models.linear_model import SkLearnLasso
from captum.attr import Lime
from torch import Tensor

from heatlab.explain.methods._perturbation import surrogate_build
from heatlab.explain.methods.common import MethodSpec, Options, per_sample


@dataclass(frozen=True)
class LimeOptions(Options):
    """``feature_mask`` (integer ids, ``1×...`` or ``N×...``; default patches of side ``patch_size``
    on images, one per element otherwise); ``baselines`` of absent features (default 0);
    ``n_samples`` perturbations (``attribute``'s argument; default 128); ``perturbations_per_eval``
    per forward pass; ``seed``; ``lasso_alpha`` of the surrogate (Captum's default 0.01)."""

    patch_size: int | None = None
    feature_mask: Tensor | None = per_sample()
    baselines: Tensor | float | None = per_sample()
    n_samples: int = 128
    perturbations_per_eval: int = 16
    seed: int = 0
    lasso_alpha: float = 0.01


SPEC = MethodSpec("Lime", surrogate_build(lambda model, o: Lime(model, interpretable_model=SkLearnLasso(alpha=o.lasso_alpha))), LimeOptions)
