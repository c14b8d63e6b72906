"""Robustness metrics: how much a heatmap changes when the input is perturbed a little.

No-truth signature ``fn(model, x, y, a, *, explain_func, ..., noise=None, seed=0) -> float64 N``:
``x`` ``N×C×H×W`` or ``N×F``, ``y`` the explained class per sample, ``a`` the heatmaps of ``x``,
``explain_func(model, x, y)`` re-explains each perturbed batch. ``nr_samples`` perturbations are
drawn from ``torch.Generator().manual_seed(seed)``, one ``x``-shaped noise per draw shared by all
samples, so a sample's score does not depend on its batch; ``noise=`` (``K×N×...`` or ``K×1×...``)
gives the draws instead (e.g. the ones another tool used). Each draw is one batched explanation.
Argument names and defaults are Quantus 0.6's; heatlab normalises heatmaps per sample, Quantus
per batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.score._no_truth import check_inputs, explainer, generator, predict, prepare, row_norms64, rows
from heatlab.score.metric_info import MetricInfo


def uniform_noise(shape, k: int, seed: int, lower_bound: float, upper_bound: float | None) -> Iterator[Tensor]:
    """``k`` draws of ``shape``: uniform in ``[-lower_bound, lower_bound)`` or ``[lower_bound, upper_bound)``."""
    lo, hi = (-lower_bound, lower_bound) if upper_bound is None else (lower_bound, upper_bound)
    if hi <= lo:
        raise HeatlabError(f"upper_bound={upper_bound} must exceed lower_bound={lower_bound}; pass a larger upper_bound.")
    gen = generator(seed)
    for _ in range(k):
        yield lo + (hi - lo) * torch.rand((1, *shape), generator=gen, dtype=torch.float64)


def gaussian_noise(shape, k: int, seed: int, mean: float, std: float) -> Iterator[Tensor]:
    gen = generator(seed)
    for _ in range(k):
        yield mean + std * torch.randn((1, *shape), generator=gen, dtype=torch.float64)


def _draws(x: Tensor, noise: Tensor | None, default: Iterator[Tensor], nr_samples: int) -> Iterator[Tensor]:
    if noise is None:
        if nr_samples < 1:
            raise HeatlabError(f"nr_samples={nr_samples} must be at least 1.")
        return (n.to(x.device, x.dtype) for n in default)
    noise = torch.as_tensor(noise)
    if noise.ndim != x.ndim + 1 or noise.shape[1] not in (1, x.shape[0]) or noise.shape[2:] != x.shape[1:]:
        raise HeatlabError(f"noise has shape {tuple(noise.shape)}; pass K×N×... or K×1×... draws for x of shape "
                           f"{tuple(x.shape)}.")
    return (n.to(x.device, x.dtype) for n in noise)


def _runs(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, explain_func, name: str, draws, *, abs: bool,
          normalise: bool, how: str = "max", nan_when_changed: bool, forward=None, logits: Tensor | None = None):
    """Per draw: ``(x_k, a_k, changed, outputs_k)``; ``changed`` marks samples whose predicted class moved
    (with ``nan_when_changed``, else None); ``outputs_k`` is ``forward(x_k)`` = ``(logits, extra)`` (default
    ``(logits, None)``; None when neither ``nan_when_changed`` nor ``forward`` asks for the pass).
    ``logits``: the model's output for ``x`` where the caller has it (saves a forward of ``x``)."""
    explain = explainer(explain_func, name)
    label = (predict(model, x) if logits is None else logits).argmax(1) if nan_when_changed else None
    needed = nan_when_changed or forward is not None
    forward = forward or (lambda t: (predict(model, t), None))
    for noise in draws:
        xk = x + noise
        ak = prepare(explain(model, xk, y), abs=abs, normalise=normalise, how=how)
        outs = forward(xk) if needed else None
        yield xk, ak, (outs[0].argmax(1) != label if nan_when_changed else None), outs


def _ratios(model, x, y, a, explain_func, name, draws, objective, *, abs, normalise, how="max", nan_when_changed,
            forward=None, logits=None):
    a = prepare(a, abs=abs, normalise=normalise, how=how)
    out = []
    for xk, ak, changed, outs in _runs(model, x, y, a, explain_func, name, draws, abs=abs, normalise=normalise, how=how,
                                       nan_when_changed=nan_when_changed, forward=forward, logits=logits):
        r = objective(a, ak, xk, outs)
        out.append(torch.where(changed, torch.nan, r) if changed is not None else r)
    return torch.stack(out, 1)  # N×K


def _fro(t: Tensor, minus: Tensor | None = None) -> Tensor:
    return row_norms64(t, minus)


def _sensitivity(model, x, y, a, explain_func, name, *, nr_samples, lower_bound, upper_bound, abs, normalise,
                 return_nan_when_prediction_changes, noise, seed):
    draws = _draws(x, noise, uniform_noise(x.shape[1:], nr_samples, seed, lower_bound, upper_bound), nr_samples)
    norm = None

    def objective(a, ak, xk, _):
        nonlocal norm  # ‖a‖ is the same for every draw: once
        if norm is None:  # an all-zero heatmap has no relative change: NaN (undefined), where Quantus divides by 0 (inf)
            norm = _fro(a)
            norm = norm.masked_fill(norm == 0, torch.nan)
        return _fro(a, ak) / norm

    return _ratios(model, x, y, a, explain_func, name, draws, objective,
                   abs=abs, normalise=normalise, nan_when_changed=return_nan_when_prediction_changes)


def max_sensitivity(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, explain_func=None, nr_samples: int = 200,
                    lower_bound: float = 0.2, upper_bound: float | None = None, abs: bool = False,
                    normalise: bool = False, return_nan_when_prediction_changes: bool = False,
                    noise: Tensor | None = None, seed: int = 0) -> Tensor:
    """Max over uniform input noise of ``‖a − a(x + δ)‖ / ‖a‖`` (Frobenius; Yeh et al. 2019). Lower is better.

    δ uniform in ``[-lower_bound, lower_bound)`` (``[lower_bound, upper_bound)`` when given); draws
    whose prediction changes are skipped (NaN) with ``return_nan_when_prediction_changes``.
    """
    x, y, a = check_inputs(model, x, y, a)
    s = _sensitivity(model, x, y, a, explain_func, "max_sensitivity", nr_samples=nr_samples, lower_bound=lower_bound,
                     upper_bound=upper_bound, abs=abs, normalise=normalise, noise=noise, seed=seed,
                     return_nan_when_prediction_changes=return_nan_when_prediction_changes)
    return s.amax(1) if return_nan_when_prediction_changes else _nanmax(s)


def avg_sensitivity(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, explain_func=None, nr_samples: int = 200,
                    lower_bound: float = 0.2, upper_bound: float | None = None, abs: bool = False,
                    normalise: bool = False, return_nan_when_prediction_changes: bool = False,
                    noise: Tensor | None = None, seed: int = 0) -> Tensor:
    """Mean over uniform input noise of ``‖a − a(x + δ)‖ / ‖a‖`` (Yeh et al. 2019). Lower is better;
    NaN (undefined) for an all-zero heatmap ``a``, as for :func:`max_sensitivity`."""
    x, y, a = check_inputs(model, x, y, a)
    s = _sensitivity(model, x, y, a, explain_func, "avg_sensitivity", nr_samples=nr_samples, lower_bound=lower_bound,
                     upper_bound=upper_bound, abs=abs, normalise=normalise, noise=noise, seed=seed,
                     return_nan_when_prediction_changes=return_nan_when_prediction_changes)
    return s.mean(1) if return_nan_when_prediction_changes else s.nanmean(1)


def local_lipschitz_estimate(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, explain_func=None,
                             nr_samples: int = 200, perturb_mean: float = 0.0, perturb_std: float = 0.1,
                             abs: bool = False, normalise: bool = True,
                             return_nan_when_prediction_changes: bool = False, noise: Tensor | None = None,
                             seed: int = 0) -> Tensor:
    """Max over Gaussian input noise of ``‖a − a(x + δ)‖₂ / (‖δ‖₂ + 1e-10)`` (Alvarez-Melis & Jaakkola
    2018). Lower is better."""
    x, y, a = check_inputs(model, x, y, a)
    draws = _draws(x, noise, gaussian_noise(x.shape[1:], nr_samples, seed, perturb_mean, perturb_std), nr_samples)
    s = _ratios(model, x, y, a, explain_func, "local_lipschitz_estimate", draws,
                lambda a, ak, xk, _: _fro(a, ak) / (_fro(x, xk) + 1e-10), abs=abs, normalise=normalise,
                nan_when_changed=return_nan_when_prediction_changes)
    return s.amax(1) if return_nan_when_prediction_changes else _nanmax(s)


def _relative_change(t: Tensor, eps: float):
    """``t_k -> ‖(t − t_k) / t‖`` per row, ``eps`` standing in for a zero ``t`` (Agarwal et al. 2022);
    computed in ``t``'s dtype (as Quantus), summed in float64."""
    if t.dtype in (torch.float32, torch.float64):  # eps rounded as ``(t == 0) * eps`` rounds it (default dtype)
        safe = t.masked_fill(t == 0, float(torch.tensor(eps, dtype=torch.get_default_dtype())))
    else:
        safe = t + (t == 0) * eps
    return lambda tk: row_norms64(t, minus=tk, over=safe)


def _stability(model, x, y, a, explain_func, name, denominator, *, nr_samples, abs, normalise, eps_min,
               perturb_kwargs, return_nan_when_prediction_changes, noise, seed, forward=None, logits=None):
    kw = {"lower_bound": 0.02, "upper_bound": 0.2, **(perturb_kwargs or {})}
    draws = _draws(x, noise, uniform_noise(x.shape[1:], nr_samples, seed, kw["lower_bound"], kw["upper_bound"]),
                   nr_samples)

    change = None

    def objective(a, ak, xk, outs):
        nonlocal change
        change = change or _relative_change(a, eps_min)
        d = denominator(xk, outs)
        return change(ak) / (d + (d == 0) * eps_min)

    s = _ratios(model, x, y, a, explain_func, name, draws, objective, abs=abs, normalise=normalise,
                how="second_moment", nan_when_changed=return_nan_when_prediction_changes, forward=forward,
                logits=logits)
    return s.amax(1)  # a NaN draw makes the sample NaN, as in Quantus


def relative_input_stability(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, explain_func=None,
                             nr_samples: int = 200, abs: bool = False, normalise: bool = False,
                             eps_min: float = 1e-6, perturb_func_kwargs: dict | None = None,
                             return_nan_when_prediction_changes: bool = True, noise: Tensor | None = None,
                             seed: int = 0) -> Tensor:
    """RIS (Agarwal et al. 2022): max over draws of ``‖(a − a')/a‖ / ‖(x − x')/x‖``, x' = x plus
    uniform noise in [0.02, 0.2) (Quantus's default; ``perturb_func_kwargs`` sets ``lower_bound``,
    ``upper_bound``). NaN where a draw changes the prediction. Lower is better."""
    x, y, a = check_inputs(model, x, y, a)
    return _stability(model, x, y, a, explain_func, "relative_input_stability",
                      lambda xk, _, change=_relative_change(x, eps_min): change(xk), nr_samples=nr_samples, abs=abs,
                      normalise=normalise, eps_min=eps_min, perturb_kwargs=perturb_func_kwargs, noise=noise,
                      seed=seed, return_nan_when_prediction_changes=return_nan_when_prediction_changes)


def relative_output_stability(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, explain_func=None,
                              nr_samples: int = 200, abs: bool = False, normalise: bool = False,
                              eps_min: float = 1e-6, perturb_func_kwargs: dict | None = None,
                              return_nan_when_prediction_changes: bool = True, noise: Tensor | None = None,
                              seed: int = 0) -> Tensor:
    """ROS (Agarwal et al. 2022): ``‖(a − a')/a‖ / ‖h(x) − h(x')‖``, h the logits; max over draws. Lower is better."""
    x, y, a = check_inputs(model, x, y, a)
    logits = predict(model, x)  # h(x) and the label of x: one forward
    h = logits.double()
    return _stability(model, x, y, a, explain_func, "relative_output_stability",
                      lambda xk, outs: _fro(h - (predict(model, xk) if outs is None else outs[0]).double()), nr_samples=nr_samples, abs=abs,
                      normalise=normalise, eps_min=eps_min, perturb_kwargs=perturb_func_kwargs, noise=noise,
                      seed=seed, return_nan_when_prediction_changes=return_nan_when_prediction_changes, logits=logits)


def hidden_representations(model: nn.Module, x: Tensor, layer_names: Sequence[str] | None = None,
                           layer_indices: Sequence[int] | None = None) -> Tensor:
    """The outputs of the model's layers (all modules but the model and ``nn.Sequential`` containers,
    or those named/indexed as Quantus selects them), flattened and concatenated: ``N×D``."""
    return torch.cat(_layer_outputs(model, x, layer_names, layer_indices)[1], 1)


def _layer_outputs(model: nn.Module, x: Tensor, layer_names, layer_indices) -> tuple[Tensor, list[Tensor]]:
    """One forward pass: the logits and the chosen layers' outputs (N×D_l each, in call order)."""
    everything = list(model.named_modules())
    layers = [(n, m) for n, m in everything if not isinstance(m, (type(model), nn.Sequential))]
    wanted = {i if i >= 0 else len(everything) + i for i in (layer_indices or [])}
    names = set(layer_names or [])
    chosen = [m for i, (n, m) in enumerate(layers) if (not wanted and not names) or i in wanted or n in names]
    if not chosen:
        raise HeatlabError("No hidden layer matches layer_names/layer_indices; pass names from model.named_modules().")
    outputs: list[Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outputs.append(rows(o.detach()))) for m in chosen]
    try:
        logits = predict(model, x)
    finally:
        for h in hooks:
            h.remove()
    return logits, outputs


def relative_representation_stability(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, explain_func=None,
                                      nr_samples: int = 200, abs: bool = False, normalise: bool = False,
                                      eps_min: float = 1e-6, perturb_func_kwargs: dict | None = None,
                                      layer_names: Sequence[str] | None = None,
                                      layer_indices: Sequence[int] | None = None,
                                      return_nan_when_prediction_changes: bool = True,
                                      noise: Tensor | None = None, seed: int = 0) -> Tensor:
    """RRS (Agarwal et al. 2022): ``‖(a − a')/a‖ / ‖(l(x) − l(x'))/l(x)‖``, l the hidden layers' outputs
    (:func:`hidden_representations`); max over draws. Lower is better."""
    x, y, a = check_inputs(model, x, y, a)
    if layer_names is not None and layer_indices is not None:
        raise HeatlabError("Pass layer_names or layer_indices, not both.")
    forward = lambda t: _layer_outputs(model, t, layer_names, layer_indices)  # noqa: E731
    # per layer, never concatenated: the layers' outputs are far larger than the input
    logits, outputs = forward(x)  # the layer outputs and the label of x: one forward
    changes = [_relative_change(t, eps_min) for t in outputs]
    change = lambda tks: sum(c(tk).square() for c, tk in zip(changes, tks)).sqrt()  # noqa: E731
    return _stability(model, x, y, a, explain_func, "relative_representation_stability",
                      lambda xk, outs: change(outs[1]), nr_samples=nr_samples, abs=abs, forward=forward,
                      normalise=normalise, eps_min=eps_min, perturb_kwargs=perturb_func_kwargs, noise=noise,
                      seed=seed, return_nan_when_prediction_changes=return_nan_when_prediction_changes,
                      logits=logits)


def _nanmax(s: Tensor) -> Tensor:
    return torch.where(s.isnan(), -torch.inf, s).amax(1).where(~s.isnan().all(1), torch.nan)


ROBUSTNESS = (
    MetricInfo("max_sensitivity", max_sensitivity, False, "robustness", ("model", "explain"), "Yeh et al. 2019"),
    MetricInfo("avg_sensitivity", avg_sensitivity, False, "robustness", ("model", "explain"), "Yeh et al. 2019"),
    MetricInfo("local_lipschitz_estimate", local_lipschitz_estimate, False, "robustness", ("model", "explain"),
               "Alvarez-Melis & Jaakkola 2018"),
    MetricInfo("relative_input_stability", relative_input_stability, False, "robustness", ("model", "explain"),
               "Agarwal et al. 2022"),
    MetricInfo("relative_output_stability", relative_output_stability, False, "robustness", ("model", "explain"),
               "Agarwal et al. 2022"),
    MetricInfo("relative_representation_stability", relative_representation_stability, False, "robustness",
               ("model", "explain"), "Agarwal et al. 2022"),
)

__all__ = ["ROBUSTNESS", "avg_sensitivity", "hidden_representations", "local_lipschitz_estimate", "max_sensitivity",
           "relative_input_stability", "relative_output_stability", "relative_representation_stability"]
