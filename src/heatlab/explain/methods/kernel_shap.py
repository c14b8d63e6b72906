"""KernelShap: Shapley values of feature groups from a weighted linear fit (Captum ``KernelShap``).

Default features (see :mod:`heatlab.explain.methods._perturbation`): square patches on images (64
on a square image), one per element otherwise; ``n_samples`` perturbations per sample, seeded per
sample with ``seed``.
"""

from __future__ import annotations

from captum.attr import KernelShap

from heatlab.explain.methods._perturbation import SurrogateOptions, surrogate_build
from heatlab.explain.methods.common import MethodSpec

#: KernelShap's options are the surrogate methods' own (:class:`SurrogateOptions`).
KernelShapOptions = SurrogateOptions

SPEC = MethodSpec("KernelShap", surrogate_build(lambda model, _: KernelShap(model)), KernelShapOptions)
