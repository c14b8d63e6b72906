"""FeatureAblation: the drop of the target logit when one feature group is set to the baseline
(Captum ``FeatureAblation``).

Default features (see :mod:`heatlab.explain.methods._perturbation`): square patches on images
(64 forward passes per image), one feature per element otherwise. Deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from captum.attr import FeatureAblation
from torch import Tensor, nn

from heatlab.explain.methods._perturbation import check_count, check_mask, default_mask
from heatlab.explain.methods.common import MethodSpec, Options, Run, per_sample


@dataclass(frozen=True)
class FeatureAblationOptions(Options):
    """``feature_mask``: integer feature ids, ``1×...`` or ``N×...`` (default: patches of side
    ``patch_size`` on images, one per element otherwise); ``baselines`` the ablated value (default 0);
    ``perturbations_per_eval`` features per forward pass."""

    patch_size: int | None = None
    feature_mask: Tensor | None = per_sample()
    baselines: Tensor | float | None = per_sample()
    perturbations_per_eval: int = 16


@contextmanager
def build(model: nn.Module, options: FeatureAblationOptions, inputs: Tensor) -> Iterator[Run]:
    check_count("perturbations_per_eval", options.perturbations_per_eval)
    default = default_mask(inputs, options.patch_size) if options.feature_mask is None else None
    if options.feature_mask is not None:
        check_mask(options.feature_mask, inputs)
    fa = FeatureAblation(model)

    def run(x: Tensor, target: Tensor, o: FeatureAblationOptions) -> Tensor:
        mask = default if o.feature_mask is None else o.feature_mask
        return fa.attribute(x, baselines=o.baselines, target=target, feature_mask=mask,
                            perturbations_per_eval=o.perturbations_per_eval)

    yield run


SPEC = MethodSpec("FeatureAblation", build, FeatureAblationOptions)
