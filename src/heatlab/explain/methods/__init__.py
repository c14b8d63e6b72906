"""The attribution-method registry: one module per method, one line per method below.

Each module follows the contract of :mod:`heatlab.explain.methods.common`: a frozen options
dataclass, a context-manager ``build(model, options, inputs)`` that sets up, yields
``run(x, target, options)`` and always tears down, and ``SPEC = MethodSpec(...)``. Adding a method
is one such module plus one line in ``_SPECS``. ``attribute`` enters ``build`` with ``with``, so a
method's hooks or model rewrites are undone also when attribution fails midway.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from heatlab.explain.methods import (
    deconvolution,
    deep_lift,
    deep_lift_shap,
    gradient_shap,
    guided_backprop,
    guided_grad_cam,
    input_x_gradient,
    integrated_gradients,
    layer_grad_cam,
    lrp,
    saliency,
)
from heatlab.explain.methods._shap import gradient_shap_draws, shap_baselines
from heatlab.explain.methods.common import CALL_ARGS, LayerOptions, MethodSpec, Options, Run, per_sample

_SPECS: tuple[MethodSpec, ...] = (  # registry order = METHODS order
    saliency.SPEC,
    input_x_gradient.SPEC,
    deep_lift.SPEC,
    deep_lift_shap.SPEC,
    gradient_shap.SPEC,
    guided_backprop.SPEC,
    deconvolution.SPEC,
    guided_grad_cam.SPEC,
    layer_grad_cam.SPEC,
    integrated_gradients.SPEC,
    lrp.SPEC,
)

_BY_NAME: dict[str, MethodSpec] = {s.name: s for s in _SPECS}

#: Method name -> spec (read-only).
REGISTRY: Mapping[str, MethodSpec] = MappingProxyType(_BY_NAME)

__all__ = [
    "CALL_ARGS", "LayerOptions", "MethodSpec", "Options", "REGISTRY", "Run", "gradient_shap_draws", "per_sample",
    "shap_baselines",
]
