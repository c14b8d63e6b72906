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

from heatlab.explain.methods._perturbation import SurrogateOptions, surrogate_build
from heatlab.explain.methods.common import MethodSpec


@dataclass(frozen=True)
class LimeOptions(SurrogateOptions):
    """The surrogate methods' options (:class:`SurrogateOptions`) and ``lasso_alpha`` of the
    surrogate (Captum's default 0.01)."""

    lasso_alpha: float = 0.01


def _lime(model, options: LimeOptions) -> Lime:
    return Lime(model, interpretable_model=SkLearnLasso(alpha=options.lasso_alpha))


SPEC = MethodSpec("Lime", surrogate_build(_lime), LimeOptions)
