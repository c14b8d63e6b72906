"""Axiomatic metrics: does a heatmap satisfy an axiom of attribution?

No-truth signature ``fn(model, x, y, a, *, explain_func=None, ..., seed=0) -> float64 N``; ``x``
``N×C×H×W`` or ``N×F``, ``y`` the explained class per sample, ``a`` heatmaps of ``x``'s shape.
Both metrics return the gap from the axiom (0 where it holds exactly; lower is better); Quantus's
``Completeness`` and ``InputInvariance`` return whether the gap is (close to) zero, which
:mod:`heatlab.score.quantus` reproduces from the same computations.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.models.normalize import Normalize
from heatlab.score._no_truth import check_inputs, explainer, predict, prepare, rows
from heatlab.score.metric_info import MetricInfo

#: Baselines of completeness (Quantus's names): per sample minimum, maximum, mean, or a number.
BASELINES = ("black", "white", "mean")


def baseline(x: Tensor, perturb_baseline: str | float) -> Tensor:
    """The baseline input ``x̄`` (``x``'s shape): ``"black"`` each sample's minimum, ``"white"`` its
    maximum, ``"mean"`` its mean, or a number."""
    if isinstance(perturb_baseline, (int, float)) and not isinstance(perturb_baseline, bool):
        return torch.full_like(x, float(perturb_baseline))
    stats = {"black": lambda v: v.amin(1), "white": lambda v: v.amax(1), "mean": lambda v: v.mean(1)}
    if perturb_baseline not in stats:
        raise HeatlabError(f"Unknown perturb_baseline={perturb_baseline!r}; pass one of {', '.join(BASELINES)} or a number.")
    value = stats[perturb_baseline](rows(x))
    return value.view(-1, *[1] * (x.ndim - 1)).expand_as(x).clone()


def completeness_gap(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, perturb_baseline: str | float = "black",
                     output_func: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """``(Σ a, output_func(f_y(x) - f_y(x̄)))`` per sample, both in ``a``'s and the logits' dtype."""
    xb = baseline(x, perturb_baseline)
    idx = y.reshape(-1, 1).to(x.device).long()
    both = predict(model, torch.cat([x, xb])).gather(1, idx.repeat(2, 1)).squeeze(1)
    diff = both[: len(x)] - both[len(x):]
    return rows(a).sum(1), (output_func(diff) if output_func is not None else diff)


def completeness(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, explain_func=None, abs: bool = False,
                 normalise: bool = False, perturb_baseline: str | float = "black",
                 output_func: Callable[[Tensor], Tensor] | None = None, seed: int = 0) -> Tensor:
    """``|Σ a − (f_y(x) − f_y(x̄))|``: how far the heatmap is from summing to the output's change from
    the baseline ``x̄`` (Sundararajan et al. 2017, completeness). 0 where it holds; lower is better.

    ``normalise`` defaults to False here (Quantus: True), since rescaling ``a`` breaks the axiom.
    """
    x, y, a = check_inputs(model, x, y, a)
    total, diff = completeness_gap(model, x, y, prepare(a, abs=abs, normalise=normalise),
                                   perturb_baseline=perturb_baseline, output_func=output_func)
    return (total.double() - diff.double()).abs()


def _entry(model: nn.Module) -> tuple[list[nn.Module], nn.Module | None]:
    """``(prefix, layer)``: the model's leading parameter-free shape or standardisation modules (Flatten,
    Identity, heatlab's Normalize: each maps ``x + s`` to its image of ``x`` plus a constant) and the first
    module after them, in registration order, which Quantus (module 1) takes for the order of the forward."""
    prefix = []
    for _, m in list(model.named_modules())[1:]:
        if next(m.children(), None) is not None:
            continue  # a container: its leaves follow
        if isinstance(m, (nn.Flatten, nn.Identity, Normalize)):
            prefix.append(m)
            continue
        return prefix, m
    return prefix, None


def shift_lack(model: nn.Module) -> str | None:
    """None when the model's first layer (after Flatten or a standardisation) can absorb an input shift (a
    Conv2d or Linear with bias), else what that module is, in words (e.g. ``"a Linear without bias"``)."""
    layer = _entry(model)[1]
    if isinstance(layer, (nn.Conv2d, nn.Linear)) and layer.bias is not None:
        return None
    return f"a {type(layer).__name__}" + (" without bias" if isinstance(layer, (nn.Conv2d, nn.Linear)) else "")


def first_layer(model: nn.Module) -> nn.Module:
    """The model's first layer, whose bias absorbs the input shift; HeatlabError when it cannot."""
    lack = shift_lack(model)
    if lack is not None:
        raise HeatlabError(f"Input invariance shifts the bias of the model's first layer, but that is {lack}; "
                           "pass a model whose first layer is a Conv2d or Linear with bias.")
    return _entry(model)[1]


def shifted_model(model: nn.Module, x: Tensor, input_shift: float) -> nn.Module:
    """A copy of ``model`` whose first layer's bias absorbs ``input_shift`` added to every input value
    (Kindermans et al. 2017): ``f'(x + shift) = f(x)``. As Quantus, the per-channel correction is the
    smallest response of the layer to a constant ``shift`` image (at zero-padded borders it differs); after
    a standardisation the layer sees the shift as ``shift / std`` per channel, the change its prefix makes."""
    new = copy.deepcopy(model)
    layer = first_layer(new)
    prefix = nn.Sequential(*_entry(new)[0])
    with torch.no_grad():
        zero = torch.zeros_like(x[:1])
        delta = prefix(torch.full_like(x[:1], float(input_shift))) - prefix(zero)
        out = (layer(delta) - layer(torch.zeros_like(delta)))[0]  # C'×h×w or C': the layer's change
        response = out.reshape(out.shape[0], -1).amin(1) if out.ndim > 1 else out
        layer.bias.copy_(layer.bias - response)
    return new


def input_invariance(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, explain_func=None, input_shift: float = -1,
                     abs: bool = False, normalise: bool = False, seed: int = 0) -> Tensor:
    """``max |a − a'|``, ``a'`` the explanation of the mean-shifted model for the shifted input, which
    has the same outputs (Kindermans et al. 2017, input invariance). 0 where it holds; lower is better."""
    x, y, a = check_inputs(model, x, y, a)
    explain = explainer(explain_func, "input_invariance")
    shifted = explain(shifted_model(model, x, input_shift), x + input_shift, y)
    a, shifted = prepare(a, abs=abs, normalise=normalise), prepare(shifted, abs=abs, normalise=normalise)
    return rows(a.double() - shifted.double()).abs().amax(1)


AXIOMATIC = (
    MetricInfo("completeness", completeness, False, "axiomatic", ("model",), "Sundararajan et al. 2017"),
    MetricInfo("input_invariance", input_invariance, False, "axiomatic", ("model", "explain"), "Kindermans et al. 2017"),
)

__all__ = ["AXIOMATIC", "BASELINES", "baseline", "completeness", "first_layer", "input_invariance", "shift_lack", "shifted_model"]
