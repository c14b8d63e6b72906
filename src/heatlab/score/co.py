"""The Confidence Optimization (CO) score of Augmentative eXplanation (papers 000/001, eq. 5).

AX feeds the classifier ``x + h`` (``ax="sum"``) or ``x * h`` (``ax="mult"``) and asks whether the
heatmap ``h`` made it more confident in the ground-truth class::

    s = Σ_j κ_j [f(x_ax) − f(x)]_j,   κ_j = 1 for the ground-truth class, −1/(C−1) otherwise,

on raw logits (``output="raw"``, the papers' main score) or on probabilities
(``output="softmax"``: ``softmax(f(x_ax)) − softmax(f(x))``; logits and probabilities are never
mixed). Higher is better: a positive score means the heatmap raised the true class relative to
the average of the others.

The score takes the heatmap as given. AX uses heatmaps attributed to the *predicted* class and
divided by their largest magnitude: that post-processing is the explicit step
:func:`prepare_heatmaps`, not hidden here. With ``ax="sum"`` an all-zero heatmap gives a score of
exactly 0 (the baseline and augmented passes see bit-identical chunks).

The model runs in eval mode under ``torch.no_grad()`` on its own device; every module's training
flag is restored afterwards.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.explain.postprocess import all_finite, normalize_max_abs
from heatlab.models.state import eval_mode, model_device

AX_VARIANTS = ("sum", "mult")
OUTPUTS = ("raw", "softmax")


def prepare_heatmaps(h: Tensor) -> Tensor:
    """AX post-processing: ``h / max|h|`` per sample (``N×...`` -> ``N×...``); all-zero stays zero."""
    return normalize_max_abs(h)


def kappa(labels: Tensor, num_classes: int) -> Tensor:
    """Score constants ``N×C`` (float64): 1 at each sample's label, ``−1/(C−1)`` elsewhere."""
    k = torch.full((len(labels), num_classes), -1.0 / (num_classes - 1), dtype=torch.float64, device=labels.device)
    return k.scatter_(1, labels[:, None], 1.0)


def augment(inputs: Tensor, heatmaps: Tensor, ax: str) -> Tensor:
    """The AX input: ``x + h`` (``"sum"``) or ``x * h`` (``"mult"``), same shape as ``inputs``."""
    return inputs + heatmaps if ax == "sum" else inputs * heatmaps


def co_score(
    model: nn.Module,
    inputs: Tensor,
    heatmaps: Tensor,
    labels: Tensor,
    *,
    ax: str = "sum",
    output: str = "raw",
    batch_size: int | None = None,
) -> Tensor:
    """CO score per sample (float64 ``N``, on the model's device); higher is better.

    Args:
        model: classifier returning ``N×C`` raw logits, ``C >= 2``.
        inputs: ``N×...`` (images ``N×C×H×W``), floating point and finite.
        heatmaps: same shape as ``inputs``, finite; used as given (see :func:`prepare_heatmaps`).
        labels: ground-truth classes, integer ``N`` in ``[0, C)``.
        ax: ``"sum"`` (``x + h``) or ``"mult"`` (``x * h``).
        output: ``"raw"`` (logits) or ``"softmax"`` (probabilities).
        batch_size: forward passes in chunks of this many samples (default: all at once).

    Raises:
        HeatlabError: unknown ``ax``/``output``, mismatched shapes, NaN/Inf, labels out of range.
    """
    _check_choice("ax", ax, AX_VARIANTS)
    _check_choice("output", output, OUTPUTS)
    x, h, y, step = _check(model, inputs, heatmaps, labels, batch_size)
    with eval_mode(model), torch.no_grad():
        before = _logits(model, x, step)
        k = _kappa_checked(y, before.shape[1])
        after = _logits(model, augment(x, h, ax), step)
        return _score(before, after, k, output)


def co_records(
    model: nn.Module,
    inputs: Tensor,
    heatmaps: Tensor,
    labels: Tensor,
    *,
    batch_size: int | None = None,
) -> dict[str, Tensor]:
    """Every CO variant and the predictions before and after AX, sharing one baseline pass.

    Same arguments as :func:`co_score`. Returns tensors of ``N`` on the model's device:
    ``co_{raw,softmax}_{sum,mult}`` (float64), ``pred_before`` (int64), ``correct_before`` (bool)
    and, for each ``ax`` in ``sum``/``mult``, ``pred_after_<ax>`` and ``correct_after_<ax>``.
    """
    x, h, y, step = _check(model, inputs, heatmaps, labels, batch_size)
    with eval_mode(model), torch.no_grad():
        before = _logits(model, x, step)
        k = _kappa_checked(y, before.shape[1])
        pred = before.argmax(1)
        out = {"pred_before": pred, "correct_before": pred == y}
        for ax in AX_VARIANTS:
            after = _logits(model, augment(x, h, ax), step)
            for output in OUTPUTS:
                out[f"co_{output}_{ax}"] = _score(before, after, k, output)
            out[f"pred_after_{ax}"] = after.argmax(1)
            out[f"correct_after_{ax}"] = out[f"pred_after_{ax}"] == y
    return out


# --- internals -----------------------------------------------------------------------------


def _score(before: Tensor, after: Tensor, k: Tensor, output: str) -> Tensor:
    if output == "softmax":
        before, after = before.softmax(1), after.softmax(1)
    # The κ-weighted sum in float64: the true-class term and the others' mean nearly cancel.
    return ((after - before).double() * k).sum(1)


def _logits(model: nn.Module, x: Tensor, step: int) -> Tensor:
    parts = []
    for chunk in x.split(step):
        logits = model(chunk)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != chunk.shape[0]:
            raise HeatlabError("The model must return N×C logits (one row per sample); wrap it to do so.")
        parts.append(logits)
    return torch.cat(parts)


def _kappa_checked(labels: Tensor, num_classes: int) -> Tensor:
    if num_classes < 2:
        raise HeatlabError(f"The CO score needs at least 2 classes, but the model returns {num_classes} logit(s).")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise HeatlabError(
            f"Labels must lie in [0, {num_classes - 1}] for a model with {num_classes} logits, "
            f"got {int(labels.min())} to {int(labels.max())}; pass the ground-truth class indices."
        )
    return kappa(labels, num_classes)


def _check(model: nn.Module, inputs, heatmaps, labels, batch_size) -> tuple[Tensor, Tensor, Tensor, int]:
    """Validated ``(x, h, labels, chunk size)`` on the model's device."""
    for name, t in (("inputs", inputs), ("heatmaps", heatmaps)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise HeatlabError(f"The {name} must be a floating-point torch.Tensor; convert with .float().")
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise HeatlabError(f"Inputs must be N×... with at least one sample, got shape {tuple(inputs.shape)}.")
    if heatmaps.shape != inputs.shape:
        raise HeatlabError(
            f"Heatmaps of shape {tuple(heatmaps.shape)} do not match inputs of shape {tuple(inputs.shape)}; "
            "attribute each input to get one heatmap of its shape."
        )
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool \
            or labels.shape != (inputs.shape[0],):
        raise HeatlabError(f"Labels must be an integer tensor of shape ({inputs.shape[0]},), one class per input.")
    if not all_finite(inputs):
        raise HeatlabError("Inputs contain NaN or Inf; clean the data first.")
    if not all_finite(heatmaps):
        raise HeatlabError("Heatmaps contain NaN or Inf; fix the attribution that produced them.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise HeatlabError(f"Batch size must be a whole number >= 1, got {batch_size!r}; pass e.g. batch_size=25.")
    device = model_device(model)
    return inputs.to(device), heatmaps.to(device), labels.long().to(device), batch_size or inputs.shape[0]


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise HeatlabError(f"Unknown {name} {value!r}; choose one of {', '.join(choices)}.")
