"""One call for every attribution method: ``attribute(model, inputs, method, ...)``.

Built on Captum; method names are Captum's class names (see :data:`METHODS` for the default set,
:data:`OPT_IN_METHODS` for the opt-in ones and :func:`heatlab.explain.methods.lookup` for NoiseTunnel's
short names). The result always
has the shape of ``inputs``. The call leaves the model as it found it: it runs in eval mode and
restores every module's training flag afterwards, removes every hook (also after an exception),
and never changes parameters; methods that rewrite activation gradients run on an
attribution-safe copy when the model needs one (see :func:`attribute`). Each method comes from
the registry :mod:`heatlab.explain.methods`; its ``build`` context manager is entered with
``with`` for the whole call, so its own set-up (hooks, model rewrites) is torn down even on error.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from itertools import chain

import torch
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.explain.methods import (
    DEFAULT_METHODS, NOISE_TUNNEL_NAMES, OPT_IN_METHODS, REGISTRY, MethodSpec, Options, check_base,
    lookup,
)
from heatlab.explain.postprocess import all_finite
from heatlab.models.safety import make_attribution_safe
from heatlab.models.state import eval_mode, model_device

#: The default method set (the papers' eleven, Captum class names) in registry order: what the
#: stages run for 'all'. :data:`OPT_IN_METHODS` are accepted too but run only when named.
METHODS: tuple[str, ...] = DEFAULT_METHODS
#: Methods that support ``create_graph=True``.
CREATE_GRAPH_METHODS: tuple[str, ...] = tuple(name for name, s in REGISTRY.items() if s.create_graph and not s.wraps)

# Captum warns on every call that it sets (and later removes) hooks and that it made the inputs
# require gradients; both are routine here.
_ROUTINE_WARNINGS = (
    "Setting forward, backward hooks",
    "Setting backward hooks on ReLU",
    r"Input Tensor \d+ did not already require gradients",
)
# Attributes DeepLift's hooks set on modules (and delete in the backward pass, if it is reached).
_CAPTUM_MODULE_ATTRS = ("input", "output", "input_ref")
# Messages of the errors that in-place tensor operations (or reused modules) cause in hook-based
# methods.
_INPLACE_HINTS = ("used more than once", "inplace", "in-place")


def available_methods() -> list[str]:
    """Names accepted by :func:`attribute`: the registry's and NoiseTunnel's short names (each of
    which also takes ``-<base>``, see :func:`heatlab.explain.methods.lookup`)."""
    return [*REGISTRY, *NOISE_TUNNEL_NAMES]


def conv_layers(model: nn.Module) -> list[str]:
    """The dotted names of ``model``'s ``nn.Conv2d`` modules, in ``named_modules()`` order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def cam_layer(model: nn.Module, layer: str | nn.Module | None = None, *, first: bool = False) -> str:
    """The dotted name of the layer the CAM methods (LayerGradCam, GuidedGradCam) use on ``model``:
    ``layer``'s name, or by default the model's last ``nn.Conv2d`` (what Grad-CAM users expect: the
    most semantic feature map); ``first=True`` picks the first one instead (the papers' ``conv1``,
    which the paper presets use)."""
    return _layer_name(model, layer, first=first)


def cam_layer_rule(layer: str | nn.Module | None, *, first: bool = False) -> str:
    """How :func:`cam_layer` chose, in words: "chosen by name", "the first nn.Conv2d, ..." or "the last nn.Conv2d"."""
    if layer is not None:
        return "chosen by name"
    return "the first nn.Conv2d, as the papers' presets" if first else "the last nn.Conv2d"


def attribute(
    model: nn.Module,
    inputs: Tensor,
    method: str | MethodSpec,
    *,
    target: int | Tensor | None = None,
    layer: str | nn.Module | None = None,
    abs: bool = True,
    n_baselines: int = 8,
    n_samples: int | None = None,
    n_steps: int = 32,
    seed: int = 0,
    batch_size: int | None = None,
    create_graph: bool = False,
    return_target: bool = False,
    **kwargs,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attributions of ``model``'s ``target`` logit to ``inputs``; same shape as ``inputs``.

    Args:
        model: classifier returning ``N×K`` logits. Its device is used: ``inputs`` are moved there
            and the result lives there.
        inputs: ``N×C×H×W`` images (any ``N×...`` with at least 2 dims for the non-CAM methods),
            floating point and finite.
        method: one of :data:`METHODS` or :data:`OPT_IN_METHODS` (NoiseTunnel's short names also
            as ``SmoothGrad-<base>`` etc.; see the README's "Opt-in methods"), the name of a
            ``heatlab.methods`` entry point, or a :class:`MethodSpec` itself.
        target: class per sample: an int, a LongTensor of ``N``, or ``None`` for the predicted
            class (argmax of one eval-mode forward pass, computed once).
        layer: CAM methods only: a module name as in ``model.named_modules()`` (or the module
            itself); default the model's last ``nn.Conv2d`` (:func:`cam_layer` names it; the
            stages pass the first one under the paper presets).
        abs: Saliency only: ``True`` gives ``|gradient|`` (Captum's default, paper 002),
            ``False`` the signed gradient.
        n_baselines: DeepLiftShap/GradientShap: size of the baseline distribution, drawn from
            ``seed``: ``randn · 0.001`` as in the papers' code, or uniform in [0, 1] with
            ``baseline_dist="uniform"`` (see ``heatlab.explain.methods.shap_baselines``).
        n_samples: GradientShap: number of (baseline, alpha, noise) draws, shared by all samples
            (default 8); KernelShap, Lime: perturbations per sample (default 128).
        n_steps: IntegratedGradients: steps of the path integral.
        seed: seeds all randomness (SHAP baselines, NoiseTunnel's noise, KernelShap's and Lime's
            perturbations; the global RNGs are left as they were); the same seed gives the same
            result for any batch size or chunking.
        batch_size: attribute in chunks of this many samples (default: all at once); the result
            does not depend on it.
        create_graph: keep the autograd graph, so the result is differentiable w.r.t. ``inputs``
            (when they require grad) and the model's parameters (Saliency, InputXGradient,
            IntegratedGradients, GradientShap, and NoiseTunnel over one of them: the values equal
            Captum's); the result is then not detached.
        return_target: also return the targets used (LongTensor ``N`` on the model's device).
        **kwargs: method-specific Captum arguments: ``baselines`` (DeepLift, IntegratedGradients:
            default zeros, a tensor broadcastable to ``inputs`` or of its shape; DeepLiftShap,
            GradientShap: the ``B×...`` distribution), ``baseline_dist`` (DeepLiftShap, GradientShap:
            ``"normal"`` or ``"uniform"``), ``stdevs`` (GradientShap noise, default 0),
            ``integration_method`` (Captum's ``method``, default "gausslegendre"),
            ``internal_batch_size`` and ``output_weights`` (``N×K``: attribute ``Σ_k w_k f_k``;
            IntegratedGradients), ``relu_attributions``,
            ``interpolate_mode`` (LayerGradCam, default "nearest"; also GuidedGradCam),
            ``attribute_to_layer_input`` (CAM methods); NoiseTunnel: ``base``, ``nt_type``,
            ``nt_samples``, ``stdevs``, ``nt_samples_batch_size`` and the base's own arguments;
            Occlusion: ``patch_size``, ``sliding_window_shapes``, ``strides``, ``baselines``,
            ``perturbations_per_eval``; FeatureAblation, KernelShap, Lime: ``patch_size``,
            ``feature_mask``, ``baselines``, ``perturbations_per_eval``.

    LayerGradCam's ``N×1×h×w`` map is upsampled to ``H×W`` with Captum's
    ``LayerAttribution.interpolate`` and repeated over the ``C`` channels; GuidedGradCam is already
    ``N×C×H×W``. DeepLift, DeepLiftShap, GuidedBackprop, Deconvolution and GuidedGradCam hook the
    activation modules, which goes wrong for in-place or reused activations: a model with an
    ``inplace=True`` module, or one found (by a forward hook, at no extra pass) to call an
    activation module twice in a forward pass, is attributed on the copy made by
    ``heatlab.models.safety.make_attribution_safe`` (the user's model is not touched). In-place
    tensor operations written in ``forward`` (``x += y``) are not rewritten.

    Raises:
        HeatlabError: unknown method or argument, bad inputs (not a float tensor, wrong ndim,
            empty, NaN/Inf), target out of range, unknown layer, or a model whose activations
            cannot be hooked even after ``make_attribution_safe``.
    """
    spec, kwargs = _spec(method, kwargs)
    base = check_base(kwargs.pop("base", "Saliency")) if spec.wraps else None
    if base is not None:  # a wrapper hooks (and needs a safe model) as its base does
        spec = replace(spec, hooks_activations=base.hooks_activations)
    _check_kwargs(spec, kwargs, base)
    _check_counts(n_baselines=n_baselines, n_samples=n_samples, n_steps=n_steps, batch_size=batch_size)
    _check_create_graph(spec, base, create_graph)
    device = model_device(model)
    x = _check_inputs(inputs, spec).to(device, _model_dtype(model) or inputs.dtype)
    x = x if create_graph else x.detach()
    n, step = x.shape[0], batch_size or x.shape[0]
    call_args = {
        "abs": abs, "n_baselines": n_baselines, "n_samples": n_samples, "n_steps": n_steps, "seed": seed,
        "create_graph": create_graph, "layer_name": _layer_name(model, layer) if spec.needs_layer else "",
    }
    kwargs = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in kwargs.items()}
    if base is not None:
        own = {k: v for k, v in kwargs.items() if k in spec.kwargs}
        base_opts = base.make_options(call_args, {k: v for k, v in kwargs.items() if k not in own})
        opts = spec.make_options({**call_args, "base_spec": base, "base_options": base_opts}, own)
    else:
        opts = spec.make_options(call_args, kwargs)
    t = None if target is None else _check_target(target, n, device)
    work = make_attribution_safe(model) if spec.hooks_activations and _has_inplace(model) else model
    try:
        if t is None:
            with _attribution_mode(work):
                t = _predict(work, x, step)
        out = _attribute_safely(spec, model, work, x, t, opts, step, check_target=target is not None)
    except RuntimeError as err:
        _raise_if_untakeable(work, x.detach(), err)
        raise
    out = out if create_graph else out.detach()
    return (out, t) if return_target else out


# Words of torch's errors when a layer gets an input of the wrong shape or dtype.
_SHAPE_HINTS = ("shape", "size", "channel", "dtype", "mat1", "dimension", "expected input", "must match")


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's parameters or buffers (inputs are cast to it); None without any."""
    return next((t.dtype for t in chain(model.parameters(), model.buffers()) if t.is_floating_point()), None)


def _raise_if_untakeable(model: nn.Module, x: Tensor, err: RuntimeError) -> None:
    """A HeatlabError naming the input shape when the model cannot even run forward on one sample."""
    try:
        with torch.no_grad(), _attribution_mode(model):
            model(x[:1])
    except RuntimeError as plain:
        reason = str(plain).strip().splitlines()[0].rstrip(".") if str(plain).strip() else type(plain).__name__
        if not any(h in reason.lower() for h in _SHAPE_HINTS):
            return  # the model fails for another reason: its own error is the clearer one
        raise HeatlabError(f"The model cannot take inputs of shape {tuple(x.shape[1:])} ({reason}); pass inputs "
                           "shaped like the data it was built for.") from err


class _ModuleReused(Exception):
    """Raised by a watch hook: the parameter-free leaf module ``name`` ran twice in one forward."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _attribute_safely(
    spec: MethodSpec, model: nn.Module, work: nn.Module, x: Tensor, t: Tensor, opts: Options, step: int,
    check_target: bool,
) -> Tensor:
    """:func:`_run`, retried on an attribution-safe copy when an activation module is reused."""
    try:
        return _run(spec, work, x, t, opts, step, check_target)
    except _ModuleReused as err:
        if work is model:  # only models that reuse an activation module pay for the copy
            return _attribute_safely(spec, model, make_attribution_safe(model), x, t, opts, step, check_target)
        raise HeatlabError(
            f"{spec.name} needs every activation module to run once per forward pass, but '{err.name}' runs "
            "more than once and make_attribution_safe cannot split it; give each use its own module."
        ) from None


def _run(
    spec: MethodSpec, work: nn.Module, x: Tensor, t: Tensor, opts: Options, step: int, check_target: bool
) -> Tensor:
    """Attributions of ``x`` (``N×...``) for targets ``t`` (``N``) on ``work``, in chunks of ``step``.

    The method's ``build`` is entered with ``with`` inside an ``ExitStack`` that also removes this
    function's own hooks, so its tear-down runs first, then the hooks go, then the modes come back,
    whatever is raised.
    """
    n = x.shape[0]
    with _attribution_mode(work), ExitStack() as stack:
        try:
            if check_target:
                stack.callback(work.register_forward_hook(_logits_check(int(t.max()))).remove)
            if spec.hooks_activations:
                for hook in _watch_reuse(work):
                    stack.callback(hook.remove)
            if spec.needs_layer:
                opts = replace(opts, layer=_module(work, opts.layer_name))
            run = stack.enter_context(spec.build(work, opts, x))
            parts = [
                run(x[i : i + step], t[i : i + step], _chunk_options(spec, opts, n, i, step)) for i in range(0, n, step)
            ]
        except RuntimeError as err:
            if any(h in str(err) for h in _INPLACE_HINTS):
                raise HeatlabError(
                    f"{spec.name} failed because the model modifies a tensor in place (e.g. `x += y` or "
                    "`x.relu_()` in forward) or reuses a module; write those operations out of place."
                ) from err
            raise
    # Captum computes some results from inputs that required grad: attribute hands back plain
    # tensors unless create_graph asks for the graph.
    return parts[0] if len(parts) == 1 else torch.cat(parts)


# --- validation ----------------------------------------------------------------------------


def _spec(method: str | MethodSpec, kwargs: dict) -> tuple[MethodSpec, dict]:
    """The spec of ``method`` (a name, or a spec itself) and the call's kwargs with the options its name sets."""
    spec, fixed = (method, {}) if isinstance(method, MethodSpec) else lookup(method)
    if clash := sorted(set(fixed) & set(kwargs)):
        raise HeatlabError(f"{method} already sets {', '.join(clash)}; drop them, or call 'NoiseTunnel' with "
                           f"{', '.join(f'{k}=' for k in clash)}.")
    return spec, {**fixed, **kwargs}


def _check_kwargs(spec: MethodSpec, kwargs: dict, base: MethodSpec | None = None) -> None:
    allowed = spec.kwargs | (base.kwargs if base is not None else frozenset())
    bad = sorted(set(kwargs) - allowed)
    if bad:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise HeatlabError(
            f"{spec.name} does not take the argument(s) {', '.join(bad)}; its extra arguments are: {accepted}."
        )


def _check_create_graph(spec: MethodSpec, base: MethodSpec | None, create_graph) -> None:
    if not isinstance(create_graph, bool):
        raise HeatlabError(f"create_graph must be True or False, got {create_graph!r}.")
    if create_graph and not (spec.create_graph and (base is None or base.create_graph)):
        name = spec.name if base is None else f"NoiseTunnel over {base.name}"
        raise HeatlabError(f"{name} does not support create_graph=True; use one of {', '.join(CREATE_GRAPH_METHODS)} "
                           "(or NoiseTunnel over one of them).")


def _check_counts(**counts: int | None) -> None:
    for name, value in counts.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise HeatlabError(f"{name} must be a positive integer, got {value!r}; pass e.g. {name}=8.")


def _check_inputs(inputs: Tensor, spec: MethodSpec) -> Tensor:
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
        raise HeatlabError("Inputs must be a floating-point torch.Tensor; convert images with x.float() / 255.")
    if not (inputs.ndim == 4 if spec.needs_layer else inputs.ndim >= 2):
        shape = "N×C×H×W" if spec.needs_layer else "N×... (at least 2 dims)"
        raise HeatlabError(
            f"{spec.name} needs inputs of shape {shape}, got {tuple(inputs.shape)}; add the batch dimension with x[None]."
        )
    if inputs.shape[0] == 0:
        raise HeatlabError("Inputs hold no samples; pass at least one.")
    if not all_finite(inputs):
        raise HeatlabError("Inputs contain NaN or Inf; clean or drop those samples before attributing.")
    return inputs


def _check_target(target: int | Tensor, n: int, device: torch.device) -> Tensor:
    t = torch.as_tensor(target)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise HeatlabError(f"Target must be an int or an integer tensor of {n} class indices, got dtype {t.dtype}.")
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise HeatlabError(f"Target must be an int or hold one class per sample ({n}), got shape {tuple(t.shape)}.")
    if bool((t < 0).any()):
        raise HeatlabError(f"Target classes must be non-negative, got {int(t.min())}; pass indices in [0, K-1].")
    return t.to(device=device, dtype=torch.long)


def _logits_check(max_target: int):
    """Forward hook: the model returns ``N×K`` logits with ``K > max_target``.

    Checked on the first output instead of an extra forward pass; it raises before Captum
    indexes the logits (an out-of-range index would be a device-side assert on CUDA).
    """

    def hook(module: nn.Module, args, out) -> None:
        if not isinstance(out, Tensor) or out.ndim != 2:
            raise HeatlabError("The model must return N×K logits (one row per sample); wrap it to do so.")
        if max_target >= out.shape[1]:
            raise HeatlabError(
                f"Target {max_target} is out of range for a model with {out.shape[1]} classes; "
                f"pass targets in [0, {out.shape[1] - 1}]."
            )

    return hook


def _layer_name(model: nn.Module, layer: str | nn.Module | None, *, first: bool = False) -> str:
    """The dotted name of the CAM layer (default: the last ``nn.Conv2d``, or the first with ``first``)."""
    names = dict(model.named_modules())
    convs = conv_layers(model)
    if layer is None:
        if not convs:
            raise HeatlabError("The model has no nn.Conv2d layer; pass layer= the name of a layer with N×C×h×w output.")
        return convs[0] if first else convs[-1]
    if isinstance(layer, nn.Module):
        found = [name for name, m in names.items() if m is layer]
        if found:
            return found[0]
    elif layer in names and layer:
        return layer
    shown = ", ".join(convs[:20]) + (f" and {len(convs) - 20} more" if len(convs) > 20 else "")
    has = f"its convolutional layers are {shown}" if convs else "it has no convolutional layer"
    raise HeatlabError(f"Layer {layer!r} is not a module of the model ({has}); pass layer=NAME with one of them.")


def _module(model: nn.Module, name: str) -> nn.Module | None:
    if not name:
        return None
    module = dict(model.named_modules()).get(name)
    if module is None:  # the attribution-safe copy renamed it
        raise HeatlabError(f"Layer {name!r} is missing from the attribution-safe copy of the model; pass another layer.")
    return module


def _chunk_options(spec: MethodSpec, opts: Options, n: int, start: int, step: int) -> Options:
    """The options for samples ``start:start+step``: per-sample tensors (``N×...``) are sliced."""
    sliced = {k: v[start : start + step] for k in spec.per_sample_kwargs if _per_sample(v := getattr(opts, k), n)}
    if spec.wraps:  # the base method's per-sample options too
        base_opts = _chunk_options(opts.base_spec, opts.base_options, n, start, step)
        if base_opts is not opts.base_options:
            sliced["base_options"] = base_opts
    return replace(opts, **sliced) if sliced else opts


def _per_sample(value, n: int) -> bool:
    return isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == n


# --- the model -----------------------------------------------------------------------------


def _has_inplace(model: nn.Module) -> bool:
    return any(getattr(m, "inplace", False) is True for m in model.modules())


def _watch_reuse(model: nn.Module) -> list:
    """Hooks raising :class:`_ModuleReused` when a parameter- and buffer-free leaf module (an
    activation) runs twice in one forward pass of ``model``; returns the handles."""
    calls: Counter[str] = Counter()

    def count(name: str):
        def hook(module: nn.Module, args, out) -> None:
            calls[name] += 1
            if calls[name] > 1:
                raise _ModuleReused(name)

        return hook

    handles = [model.register_forward_pre_hook(lambda module, args: calls.clear())]
    for name, m in model.named_modules():
        own = chain(m.children(), m.parameters(recurse=False), m.buffers(recurse=False))
        if next(own, None) is None:
            handles.append(m.register_forward_hook(count(name)))
    return handles


def _predict(model: nn.Module, x: Tensor, step: int) -> Tensor:
    """Predicted class per sample (LongTensor ``N``), one no-grad forward pass."""
    preds = []
    with torch.no_grad():
        for chunk in x.split(step):
            logits = model(chunk)
            if not isinstance(logits, Tensor) or logits.ndim != 2:
                raise HeatlabError("The model must return N×K logits (one row per sample); wrap it to do so.")
            preds.append(logits.argmax(1))
    return torch.cat(preds)


@contextmanager
def _attribution_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and quiet routine Captum warnings; afterwards restore every module's training flag
    and drop the tensors DeepLift's hooks store on modules when an attribution fails midway."""
    modules = list(model.modules())
    had = [[name for name in _CAPTUM_MODULE_ATTRS if name in vars(m)] for m in modules]
    try:
        with eval_mode(model), warnings.catch_warnings():
            for msg in _ROUTINE_WARNINGS:
                warnings.filterwarnings("ignore", message=msg)
            yield
    finally:
        for m, kept in zip(modules, had):
            for name in _CAPTUM_MODULE_ATTRS:
                if name in vars(m) and name not in kept:
                    delattr(m, name)
