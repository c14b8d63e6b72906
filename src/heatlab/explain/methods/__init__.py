"""The attribution-method registry: one module per method, one line per method below.

Each module follows the contract of :mod:`heatlab.explain.methods.common`: a frozen options
dataclass, a context-manager ``build(model, options, inputs)`` that sets up, yields
``run(x, target, options)`` and always tears down, and ``SPEC = MethodSpec(...)``. Adding a method
is one such module plus one line in ``_SPECS``; a package outside heatlab adds one with a
``heatlab.methods`` entry point naming its ``MethodSpec`` (:func:`lookup` finds it by name; the
registry pattern is :mod:`heatlab.registry`), and ``attribute`` also takes a ``MethodSpec`` itself. ``attribute`` enters ``build`` with ``with``, so a
method's hooks or model rewrites are undone also when attribution fails midway.

The stages' default set (``'all'``) is the papers' eleven (``MethodSpec.default``); NoiseTunnel,
Occlusion, FeatureAblation, KernelShap, Lime and the control ``Random`` (seeded uniform noise,
:data:`CONTROL_METHODS`) are opt-in by name. NoiseTunnel settings also have
names of their own (:func:`lookup`), so a stage's ``--methods`` list reaches them: ``SmoothGrad``,
``SmoothGradSq`` and ``VarGrad`` smooth Saliency, and ``SmoothGrad-IntegratedGradients`` (any
``<name>-<base>`` with a gradient method as base) another method.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from heatlab.explain.methods import (
    deconvolution,
    deep_lift,
    deep_lift_shap,
    feature_ablation,
    gradient_shap,
    guided_backprop,
    guided_grad_cam,
    input_x_gradient,
    integrated_gradients,
    kernel_shap,
    layer_grad_cam,
    lime,
    lrp,
    noise_tunnel,
    occlusion,
    random,
    saliency,
)
from heatlab.explain.methods._shap import gradient_shap_draws, shap_baselines
from heatlab.errors import HeatlabError
from heatlab.explain.methods.common import CALL_ARGS, LayerOptions, MethodSpec, Options, Run, per_sample
from heatlab.registry import Registry

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
    # opt-in (not in the stages' default set)
    noise_tunnel.SPEC,
    occlusion.SPEC,
    feature_ablation.SPEC,
    kernel_shap.SPEC,
    lime.SPEC,
    random.SPEC,  # the control: seeded uniform noise
)

#: Method name -> spec: the built-in methods (immutable; ``register`` returns a new registry).
REGISTRY: Registry[MethodSpec] = Registry("methods", MethodSpec, _SPECS)
#: The stages' default set ('all'), in registry order: the papers' eleven.
DEFAULT_METHODS: tuple[str, ...] = tuple(s.name for s in _SPECS if s.default)
#: Control methods: the floor a real method must beat; opt-in by name, added wherever a table of
#: no-truth scores is built.
CONTROL_METHODS: tuple[str, ...] = ("Random",)
#: Short names of NoiseTunnel settings -> ``nt_type``; alone they smooth Saliency.
NOISE_TUNNEL_NAMES: Mapping[str, str] = MappingProxyType(
    {"SmoothGrad": "smoothgrad", "SmoothGradSq": "smoothgrad_sq", "VarGrad": "vargrad"})
#: Registry methods NoiseTunnel can smooth (``MethodSpec.gradient``).
GRADIENT_METHODS: tuple[str, ...] = tuple(s.name for s in _SPECS if s.gradient)
#: Names accepted beyond the default set: the opt-in methods and NoiseTunnel's short names.
OPT_IN_METHODS: tuple[str, ...] = (*(s.name for s in _SPECS if not s.default), *NOISE_TUNNEL_NAMES)
#: How the opt-in names read in a message or help text.
OPT_IN_TEXT = (f"{', '.join(OPT_IN_METHODS)} (or <{'|'.join(NOISE_TUNNEL_NAMES)}>-<base> with a gradient "
               "method as base, e.g. SmoothGrad-IntegratedGradients)")


def method_registry() -> Registry[MethodSpec]:
    """The built-in methods plus those of the ``heatlab.methods`` entry points (opt-in: run when named)."""
    return REGISTRY.with_entry_points()


def lookup(name: str) -> tuple[MethodSpec, dict[str, str]]:
    """The spec of a method name and the options the name sets (NoiseTunnel's ``base``, ``nt_type``).

    ``name`` is a registry name, a short name of :data:`NOISE_TUNNEL_NAMES` (over Saliency),
    ``<short name>-<base>`` or the name of a ``heatlab.methods`` entry point (looked up only when no
    built-in name fits); raises HeatlabError for any other.
    """
    if name in REGISTRY:
        return REGISTRY[name], {}
    short, sep, base = name.partition("-") if isinstance(name, str) else ("", "", "")
    if short in NOISE_TUNNEL_NAMES and sep:
        check_base(base)
    if short in NOISE_TUNNEL_NAMES:
        return noise_tunnel.SPEC, {"base": base or "Saliency", "nt_type": NOISE_TUNNEL_NAMES[short]}
    if isinstance(name, str) and name in (plugins := method_registry()):
        return plugins[name], {}
    raise HeatlabError(f"Unknown attribution method {name!r}; choose one of {', '.join(DEFAULT_METHODS)}, "
                       f"or the opt-in {OPT_IN_TEXT}.")


def check_base(base) -> MethodSpec:
    """The spec of NoiseTunnel's ``base``; raises HeatlabError unless it is a gradient method."""
    if base not in GRADIENT_METHODS:
        raise HeatlabError(f"NoiseTunnel cannot smooth {base!r}, which is not a gradient method of the registry; "
                           f"choose a base from {', '.join(GRADIENT_METHODS)}.")
    return REGISTRY[base]


def is_method(name: str) -> bool:
    """``name`` is accepted by :func:`lookup`."""
    try:
        lookup(name)
    except HeatlabError:
        return False
    return True

__all__ = [
    "CALL_ARGS", "CONTROL_METHODS", "DEFAULT_METHODS", "GRADIENT_METHODS", "LayerOptions", "MethodSpec", "NOISE_TUNNEL_NAMES",
    "OPT_IN_METHODS", "OPT_IN_TEXT", "Options", "REGISTRY", "Run", "check_base", "gradient_shap_draws", "is_method", "lookup",
    "method_registry",
    "per_sample", "shap_baselines",
]
