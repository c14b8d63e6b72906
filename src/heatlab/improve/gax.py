"""Generative Augmentative eXplanation (GAX; papers 000/001 §3, eq. 6), batched.

Each sample gets its own parameters ``w`` (ones) and ``b`` (``bias``, optional), both shaped like
the sample; its heatmap is ``h = tanh(w⊙x + b)``. Adam (``lr``, betas 0.9/0.999) minimises

    loss_i = −CO_i + λ / mean_{c,y,x}((h_i − x_i + ε)² / (x_i + ε))          (eq. 6, λ = 100)

with ``CO_i = Σ_j κ_j [f(x_i + h_i) − f(x_i)]_j`` on raw logits (``x_i·h_i`` for ``ax="mult"``),
κ = 1 for the label and −1/(C−1) for the other classes, and the baseline ``f(x)`` computed once
in the same input space as ``f(x + h)`` (the original mixed a normalised baseline with an
unnormalised augmented input). The paper's "average over all pixels" is read as the mean over
one image's C×H×W values, as in the original, which optimised one image at a time.

Batched: the batch loss is the sum of the per-sample losses, the model runs in eval mode (no
statistics shared between samples) and Adam is element-wise, so every sample follows its
one-at-a-time trajectory. A sample stops as soon as ``CO ≥ target_co``: its heatmap is the one
that reached the target (the original took one more step after reaching it) and its parameters
and Adam moments are dropped from the batch, so nothing can move it again. The loop ends when
every sample has reached the target or after ``max_steps`` updates (the original had no cap).

Memory: snapshots are kept on the CPU as float16, S×N×C×H×W with S = steps/snapshot_every + 2;
at snapshot_every=1, 500 steps, 32 cells of 3×128×128 that is 1.6 GB. Pick ``snapshot_every``
for the storage you can afford (the run stage stores every 5th step by default).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.progress import Progress, report

AX_VARIANTS = ("sum", "mult")
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8  # torch.optim.Adam's default, as in the original


@dataclass
class GaxResult:
    """Outcome of :func:`gax` for N samples after T = ``len(co) − 1`` optimisation steps.

    co: (T+1)×N float32, the CO of each sample's heatmap after t updates; a sample that reached
        the target keeps its last value (no NaN). steps_to_target: N int64, the step at which
        CO ≥ target first held (−1 if never). reached: N bool. heatmaps: N×C×H×W final h (the
        dtype of the computation). snapshots: S×N×C×H×W float16, h at ``snapshot_steps`` (S int64:
        every ``snapshot_every`` steps from 0, plus the last step T).
    """

    co: Tensor
    steps_to_target: Tensor
    reached: Tensor
    heatmaps: Tensor
    snapshots: Tensor
    snapshot_steps: Tensor

    @property
    def steps(self) -> int:
        """Optimisation steps the batch ran (T)."""
        return self.co.shape[0] - 1

    @property
    def final_co(self) -> Tensor:
        """N float32: each sample's CO with its final heatmap."""
        return self.co[-1]

    @property
    def final_steps(self) -> Tensor:
        """N int64: the step of each sample's final heatmap (steps_to_target, or T if not reached)."""
        return torch.where(self.reached, self.steps_to_target, torch.full_like(self.steps_to_target, self.steps))


def kappa(labels: Tensor, num_classes: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """N×C CO weights of eq. (5): 1 at each sample's label, −1/(C−1) elsewhere."""
    k = torch.full((labels.shape[0], num_classes), -1.0 / (num_classes - 1), dtype=dtype, device=labels.device)
    return k.scatter_(1, labels.view(-1, 1).long(), 1.0)


def check_options(*, target_co: float, max_steps: int, snapshot_every: int = 1, lr: float = 0.1,
                  similarity_factor: float = 100.0, bias: float = 0.01, eps: float = 1e-4, ax: str = "sum") -> None:
    """Raise HeatlabError for GAX settings that cannot work (shared by :func:`gax` and the run stage)."""
    def whole(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def finite(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if not finite(target_co):
        raise HeatlabError(f"The target CO must be a finite number, got {target_co!r}; pass e.g. --target-co 48.")
    if not whole(max_steps) or max_steps < 1:
        raise HeatlabError(f"max_steps must be a whole number of at least 1, got {max_steps!r}; pass e.g. --max-steps 500.")
    if not whole(snapshot_every) or snapshot_every < 1:
        raise HeatlabError(f"snapshot_every must be a whole number of at least 1, got {snapshot_every!r}; pass e.g. 5.")
    if not finite(lr) or lr <= 0:
        raise HeatlabError(f"The GAX learning rate must be a positive number, got {lr!r}; the paper uses 0.1.")
    if not finite(similarity_factor) or similarity_factor < 0:
        raise HeatlabError(f"similarity_factor must be a number >= 0, got {similarity_factor!r}; the paper uses 100.")
    if not finite(bias):
        raise HeatlabError(f"The GAX bias must be a finite number, got {bias!r}; the paper uses 0.01.")
    if not finite(eps) or eps <= 0:
        raise HeatlabError(f"eps must be a positive number, got {eps!r}; the paper uses 1e-4.")
    if ax not in AX_VARIANTS:
        raise HeatlabError(f"Unknown AX variant {ax!r}; choose 'sum' (x + h) or 'mult' (x * h).")


def _check_inputs(inputs: object, labels: object) -> None:
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.dim() < 2 or inputs.shape[0] < 1:
        raise HeatlabError("GAX inputs must be a floating-point tensor N×... with at least one sample; pass e.g. images N×C×H×W.")
    if not torch.isfinite(inputs).all():
        raise HeatlabError("GAX inputs contain NaN or Inf; pass finite pixel values in [0, 1].")
    if (inputs < 0).any():
        raise HeatlabError("GAX inputs have negative values, but its similarity loss divides by x + ε; "
                           "pass [0, 1] pixel-space inputs (let the model normalise them itself).")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise HeatlabError("GAX labels must be a 1-D integer tensor with one label per sample.")
    if labels.shape[0] != inputs.shape[0]:
        raise HeatlabError(f"GAX got {inputs.shape[0]} inputs but {labels.shape[0]} labels; pass one label per sample.")


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside; every module's mode and flag restored after."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def _adam_(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, step: int, lr: float) -> None:
    """One in-place Adam update with torch.optim.Adam's formula (single-tensor path)."""
    m.lerp_(grad, 1 - BETAS[0])
    v.mul_(BETAS[1]).addcmul_(grad, grad, value=1 - BETAS[1])
    step_size = lr / (1 - BETAS[0] ** step)
    denom = (v.sqrt() / math.sqrt(1 - BETAS[1] ** step)).add_(ADAM_EPS)
    param.addcdiv_(m, denom, value=-step_size)


def _model_placement(model: nn.Module, inputs: Tensor) -> tuple[torch.device, torch.dtype]:
    """The model's device and floating dtype (the inputs' when the model has no parameters)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return inputs.device, inputs.dtype


def gax(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    target_co: float = 48.0,
    lr: float = 0.1,
    max_steps: int = 500,
    similarity_factor: float = 100.0,
    bias: float = 0.01,
    ax: str = "sum",
    snapshot_every: int = 1,
    use_bias: bool = True,
    eps: float = 1e-4,
    progress: Progress | None = None,
) -> GaxResult:
    """Optimise GAX heatmaps for a batch ``inputs`` N×C×H×W (pixel space, ≥ 0) with ``labels`` N.

    Runs on the model's device in its dtype, leaves the model's modes and ``requires_grad`` flags
    as they were, and calls ``progress("gax", step, max_steps)`` after every step.
    """
    check_options(target_co=target_co, max_steps=max_steps, snapshot_every=snapshot_every, lr=lr,
                  similarity_factor=similarity_factor, bias=bias, eps=eps, ax=ax)
    _check_inputs(inputs, labels)
    device, dtype = _model_placement(model, inputs)
    x_all = inputs.detach().to(device=device, dtype=dtype)
    n = x_all.shape[0]
    with frozen(model):
        with torch.no_grad():
            base_all = model(x_all)
        if base_all.dim() != 2 or base_all.shape[0] != n or base_all.shape[1] < 2:
            raise HeatlabError(f"GAX needs a classifier with logits N×C (C >= 2), got output shape {tuple(base_all.shape)}.")
        num_classes = base_all.shape[1]
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise HeatlabError(f"GAX labels must lie in 0..{num_classes - 1} for this {num_classes}-class model; "
                               f"got values from {int(labels.min())} to {int(labels.max())}.")
        return _optimise(model, x_all, base_all, kappa(labels.to(device), num_classes, dtype=dtype),
                         target_co=float(target_co), lr=float(lr), max_steps=max_steps,
                         similarity=float(similarity_factor), bias=float(bias) if use_bias else None,
                         ax=ax, snapshot_every=snapshot_every, eps=float(eps), progress=progress)


def _optimise(model, x_all, base_all, kappa_all, *, target_co, lr, max_steps, similarity, bias, ax,
              snapshot_every, eps, progress) -> GaxResult:
    """The GAX loop on a frozen eval-mode model; rows of finished samples are dropped as they finish."""
    n = x_all.shape[0]
    idx = torch.arange(n, device=x_all.device)  # original positions of the rows still optimised
    x, base, kap = x_all, base_all, kappa_all
    params = [torch.ones_like(x)] + ([torch.full_like(x, bias)] if bias is not None else [])
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    current = torch.empty_like(x_all)  # every sample's latest recorded h (final h once it is done)
    last_co = torch.zeros(n, dtype=torch.float32, device=x_all.device)
    steps_to = torch.full((n,), -1, dtype=torch.int64)
    history, snapshots, snapshot_steps = [], [], []
    for t in range(max_steps + 1):
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            z = params[0] * x + params[1] if len(params) == 2 else params[0] * x
            h = torch.tanh(z)
            out = model(x + h if ax == "sum" else x * h)
            co = ((out - base) * kap).sum(1)
        co_now = co.detach()
        last_co[idx] = co_now.float()
        history.append(last_co.clone())
        hit = co_now >= target_co
        done = bool(hit.all()) or t == max_steps
        if t % snapshot_every == 0 or done:
            current[idx] = h.detach()
            snapshots.append(current.to("cpu", torch.float16))
            snapshot_steps.append(t)
        elif bool(hit.any()):
            current[idx[hit]] = h.detach()[hit]
        steps_to[idx[hit].cpu()] = t
        report(progress, "gax", t, max_steps)
        if done:
            break
        sim = ((h - x + eps) ** 2 / (x + eps)).flatten(1).mean(1)
        loss = (-co + similarity / sim).sum()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            params = [p.detach() for p in params]
            if bool(hit.any()):
                keep = ~hit
                idx, x, base, kap = idx[keep], x[keep], base[keep], kap[keep]
                params = [p[keep] for p in params]
                grads = [g[keep] for g in grads]
                moments = [(m[keep], v[keep]) for m, v in moments]
            for p, g, (m, v) in zip(params, grads, moments):
                _adam_(p, g, m, v, t + 1, lr)
    report(progress, "gax", max_steps, max_steps)
    reached = steps_to >= 0
    return GaxResult(
        co=torch.stack(history).cpu(),
        steps_to_target=steps_to,
        reached=reached,
        heatmaps=current.cpu(),
        snapshots=torch.stack(snapshots),
        snapshot_steps=torch.tensor(snapshot_steps, dtype=torch.int64),
    )
