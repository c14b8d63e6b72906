"""The 2-D toy example of papers 000/001 (§2): a rotated linear classifier and its GAX heatmap.

A sample has hidden class components ``a = (a1, a2)`` (class 1 when ``a1 > a2``) and is seen in
pixel space as ``x = W a`` with ``W`` invertible (the paper's figures use the rotation ``W(θ)``).
The perfect classifier ``f(x) = σ(W⁻¹ x)`` recovers ``a``; here ``σ`` is the identity, i.e. raw
outputs as in the paper's main experiments. For ground-truth class 1 the CO score of eq. (1) is
``s = (1, −1)·[f(x + h) − f(x)]``, which for this linear ``f`` equals the paper's ``Δ = A − B``
with ``(A, B) = W⁻¹ h`` (eq. 2-3).

GAX takes ``h = w ⊙ x`` and ascends ``Δ`` in ``w`` from ``w = 1``. ``Δ`` is linear in ``w``, so
``k`` steps of size ``η`` land exactly on the closed form of eq. (4), which depends on ``k`` and
``η`` only through ``kη`` (:func:`gax_heatmap`).

Everything is a pure function on tensors; leading dimensions broadcast, so one call evaluates a
whole sweep of angles. All functions follow the dtype and device of their tensor arguments
(``float64`` when given plain numbers).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from heatlab.errors import HeatlabError

#: ``kη`` of the paper's Fig. 1 caption. (The original plotting script multiplied by η twice,
#: so its curves are drawn with an effective 1.44; heatlab follows the caption and eq. 4.)
PAPER_K_ETA = 1.2

#: The three panels of Fig. 1: a distinct, a less distinct and an almost tied sample.
PAPER_A1_VALUES = (0.95, 0.7, 0.55)


def _tensor(value: float | Tensor, name: str, like: Tensor | None = None) -> Tensor:
    """``value`` as a floating tensor (float64 for plain numbers); it must be finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
        raise HeatlabError(f"{name} must be a number or a tensor, got {type(value).__name__}; pass e.g. {name}=0.5.")
    if isinstance(value, Tensor):
        t = value if value.is_floating_point() else value.to(torch.float64)
    elif like is not None:
        t = torch.tensor(float(value), dtype=like.dtype, device=like.device)
    else:
        t = torch.tensor(float(value), dtype=torch.float64)
    if not torch.isfinite(t).all():
        raise HeatlabError(f"{name} must be finite, got {value!r}; pass finite numbers.")
    return t


def _matrix(W: Tensor) -> Tensor:
    if not isinstance(W, Tensor) or W.dim() < 2 or W.shape[-2:] != (2, 2):
        shape = tuple(W.shape) if isinstance(W, Tensor) else type(W).__name__
        raise HeatlabError(f"W must be a tensor of 2×2 matrices (shape ...×2×2), got {shape}; use rotation(theta).")
    W = W if W.is_floating_point() else W.to(torch.float64)
    if not torch.isfinite(W).all():
        raise HeatlabError("W must be finite; pass an invertible 2×2 matrix such as rotation(theta).")
    return W


def _vectors(v: Tensor, name: str) -> Tensor:
    if not isinstance(v, Tensor) or v.dim() < 1 or v.shape[-1] != 2:
        shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise HeatlabError(f"{name} must be a tensor of 2-vectors (shape ...×2), got {shape}; use toy_sample(...).")
    v = v if v.is_floating_point() else v.to(torch.float64)
    if not torch.isfinite(v).all():
        raise HeatlabError(f"{name} must be finite; pass finite 2-vectors.")
    return v


def _inverse(W: Tensor) -> Tensor:
    det = torch.linalg.det(W)
    if (det.abs() < 1e-12).any():
        raise HeatlabError("W must be invertible (its determinant is 0); pass e.g. a rotation matrix.")
    return torch.linalg.inv(W)


def rotation(theta: float | Tensor) -> Tensor:
    """The paper's ``W(θ) = [[cos θ, −sin θ], [sin θ, cos θ]]``: θ of shape S -> S×2×2."""
    t = _tensor(theta, "theta")
    c, s = torch.cos(t), torch.sin(t)
    return torch.stack((torch.stack((c, -s), -1), torch.stack((s, c), -1)), -2)


def toy_sample(a1: float | Tensor, W: Tensor, *, a2: float | Tensor | None = None) -> Tensor:
    """Pixel-space sample ``x = W (a1, a2)ᵀ``: ...×2 (broadcast of ``a1``, ``a2`` and ``W``'s ...).

    ``a2`` defaults to ``1 − a1``, the convention of the paper's Fig. 1 (e.g. ``a1 = 0.95`` is
    the "distinct" sample with low ``a2 = 0.05``).
    """
    W = _matrix(W)
    a1 = _tensor(a1, "a1", like=W).to(W)
    a2 = 1 - a1 if a2 is None else _tensor(a2, "a2", like=W).to(W)
    a = torch.stack(torch.broadcast_tensors(a1, a2), -1)
    return (W @ a.unsqueeze(-1)).squeeze(-1)


def toy_logits(x: Tensor, W: Tensor) -> Tensor:
    """The perfect classifier's raw outputs ``y = W⁻¹ x``: x ...×2, W ...×2×2 -> ...×2."""
    x, W = _vectors(x, "x"), _matrix(W)
    return (_inverse(W).to(x) @ x.unsqueeze(-1)).squeeze(-1)


def toy_co(x: Tensor, h: Tensor, W: Tensor) -> Tensor:
    """CO score of eq. (1) for ground-truth class 1: ``(1, −1)·[f(x + h) − f(x)]`` -> shape ...."""
    x, h = _vectors(x, "x"), _vectors(h, "h")
    diff = toy_logits(x + h, W) - toy_logits(x, W)
    return diff[..., 0] - diff[..., 1]


def gax_gradient(x: Tensor, W: Tensor) -> Tensor:
    """``∇_w Δ`` of eq. (3) for ``h = w ⊙ x``: x ...×2, W ...×2×2 -> ...×2 (independent of ``w``).

    ``∂Δ/∂w1 = (W⁻¹₁₁ − W⁻¹₂₁)·x1`` and ``∂Δ/∂w2 = −(W⁻¹₂₂ − W⁻¹₁₂)·x2``, where
    ``x1 = a1 W₁₁ + a2 W₁₂`` and ``x2 = a1 W₂₁ + a2 W₂₂``.
    """
    x, W = _vectors(x, "x"), _matrix(W)
    inv = _inverse(W).to(x)
    g1 = (inv[..., 0, 0] - inv[..., 1, 0]) * x[..., 0]
    g2 = -(inv[..., 1, 1] - inv[..., 0, 1]) * x[..., 1]
    return torch.stack((g1, g2), -1)


def gax_heatmap(x: Tensor, W: Tensor, k_eta: float = PAPER_K_ETA) -> Tensor:
    """Eq. (4): the heatmap ``h = (1 + kη ∇_w Δ) ⊙ x`` after ``k`` ascent steps of size ``η`` -> ...×2.

    ``k_eta`` is the product ``kη`` (1.2 in the paper's Fig. 1); ``k_eta = 0`` gives ``h = x``.
    """
    k_eta = _tensor(k_eta, "k_eta")
    x = _vectors(x, "x")
    return (1 + k_eta.to(x) * gax_gradient(x, W)) * x


def nonnegative_theta_range(a1: float, a2: float | None = None) -> tuple[float, float]:
    """The rotations ``θ`` for which both pixels of ``x = W(θ)(a1, a2)`` are ≥ 0 (an interval of width π/2).

    ``x = ‖a‖ (cos(θ + φ), sin(θ + φ))`` with ``φ = atan2(a2, a1)``, so ``θ ∈ [−φ, π/2 − φ]``.
    Needs ``a1, a2 ≥ 0``, not both 0 (``a2`` defaults to ``1 − a1``).
    """
    a1 = float(_tensor(a1, "a1"))
    a2 = 1 - a1 if a2 is None else float(_tensor(a2, "a2"))
    if a1 < 0 or a2 < 0 or a1 == a2 == 0:
        raise HeatlabError(f"a1 and a2 must be ≥ 0 and not both 0, got a1={a1}, a2={a2}; use a1 in [0, 1].")
    phi = math.atan2(a2, a1)
    return -phi, math.pi / 2 - phi
