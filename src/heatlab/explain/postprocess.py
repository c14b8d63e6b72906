"""Heatmap post-processing, explicit and named (DESIGN §2, §4.3).

* :func:`normalize_max_abs`: ``h / max|h|`` per sample, into [-1, 1].
* :func:`clamp`: clip values into ``[lo, hi]``.
* :data:`CHANNEL_RULES`: named channel reductions (``"sum"``, heatlab's rule, ``"mean"``, ...).
* :func:`channel_adjust`: paper 002's channel adjustment ``h/max|h| -> (clip) -> sum over channels
  -> h/max|h|``, ``N×C×H×W -> N×H×W``, with the clip after normalising (the paper's text) or on
  the raw attribution (the paper's original code).

A heatmap that is zero everywhere stays zero (never NaN). NaN/Inf in a heatmap is an error.
"""

from __future__ import annotations

from types import MappingProxyType

from torch import Tensor

from heatlab.errors import HeatlabError


def normalize_max_abs(h: Tensor, dims: int | tuple[int, ...] | None = None) -> Tensor:
    """``h / max|h|`` per sample: ``N×...`` -> ``N×...`` with values in [-1, 1].

    ``dims``: the dimensions the maximum runs over (default: all but the batch dimension 0).
    An all-zero sample stays zero.
    """
    _check_heatmap(h, min_ndim=2)
    return _normalize(h, dims)


def clamp(h: Tensor, lo: float = -0.1, hi: float = 0.1) -> Tensor:
    """Values of ``h`` clipped into ``[lo, hi]`` (any shape; paper 002's clamp uses ±0.1)."""
    _check_heatmap(h, min_ndim=0)
    _check_bounds(lo, hi)
    return h.clamp(lo, hi)


#: Where the clamp variant clips: after ``h/max|h|`` (the paper's text) or on the raw attribution
#: (the paper's original code, so the clip depends on the attribution's scale).
CLAMP_ORDERS = ("paper", "original")


def channel_adjust(
    attributions: Tensor, *, clamp: tuple[float, float] | None = None, clamp_order: str = "paper"
) -> Tensor:
    """Paper 002's channel adjustment: ``N×C×H×W -> N×H×W``.

    ``h <- h/max|h|`` (per sample, over C, H, W), then, with ``clamp=(lo, hi)``, clip to
    ``[lo, hi]`` (the paper's clamp variant uses ``(-0.1, 0.1)``), then sum over channels, then
    ``h <- h/max|h|`` again. ``clamp_order="paper"`` clips *after* the first normalisation, as the
    paper's text says, so the clip does not depend on the attribution's scale;
    ``clamp_order="original"`` clips the raw attribution before it, as the paper's code did (on
    attributions with peaks below 0.1 that clip touches nothing). An ``N×H×W`` input is treated as
    one channel (only normalised, and clipped if asked). An all-zero map stays zero.
    """
    _check_heatmap(attributions, min_ndim=3)
    if attributions.ndim > 4:
        raise HeatlabError(
            f"channel_adjust takes N×C×H×W or N×H×W heatmaps, got shape {tuple(attributions.shape)}."
        )
    if clamp_order not in CLAMP_ORDERS:
        raise HeatlabError(f"Unknown clamp_order {clamp_order!r}; choose 'paper' (clip after normalising) "
                           "or 'original' (clip the raw attribution).")
    h = attributions
    if clamp is not None:
        lo, hi = clamp
        _check_bounds(lo, hi)
    if clamp is not None and clamp_order == "original":
        h = h.clamp(lo, hi)
    h = _normalize(h, None)
    if clamp is not None and clamp_order == "paper":
        h = h.clamp(lo, hi)
    if h.ndim == 4:
        h = h.sum(1)
    return _normalize(h, None)


#: Named reductions over the channel axis (dim 1) of ``N×C×H×W`` heatmaps -> ``N×H×W``. ``"sum"``
#: is heatlab's own rule (:func:`channel_adjust` sums the channels); used by the localisation
#: metrics' ``channels=`` and by ``explain_func(..., channels=)``.
CHANNEL_RULES = MappingProxyType({
    "sum": lambda h: h.sum(dim=1),
    "mean": lambda h: h.mean(dim=1),
    "abs_sum": lambda h: h.abs().sum(dim=1),
    "max": lambda h: h.amax(dim=1),
})


def _normalize(h: Tensor, dims: int | tuple[int, ...] | None) -> Tensor:
    if dims is None:
        dims = tuple(range(1, h.ndim))
    peak = h.abs().amax(dim=dims, keepdim=True)
    # Dividing an all-zero map by 1 keeps it zero instead of 0/0 = NaN.
    return h / peak.masked_fill(peak == 0, 1)


def all_finite(t: Tensor) -> bool:
    """True when ``t`` holds no NaN or Inf.

    A finite sum proves it (NaN and Inf propagate through a sum) at a fraction of the cost of
    ``isfinite(t).all()``; only a non-finite sum, e.g. an overflow, needs the element-wise check.
    """
    return bool(t.sum().isfinite()) or bool(t.isfinite().all())


def _check_heatmap(h: Tensor, min_ndim: int) -> None:
    if not isinstance(h, Tensor) or not h.is_floating_point():
        raise HeatlabError("Heatmaps must be floating-point torch.Tensors; convert with h.float().")
    if h.ndim < min_ndim:
        raise HeatlabError(
            f"Heatmaps need at least {min_ndim} dims (batch first), got shape {tuple(h.shape)}; add it with h[None]."
        )
    if not all_finite(h):
        raise HeatlabError("Heatmap contains NaN or Inf; fix the attribution that produced it.")


def _check_bounds(lo: float, hi: float) -> None:
    if not lo < hi:
        raise HeatlabError(f"Clamp bounds need lo < hi, got ({lo}, {hi}); the paper uses (-0.1, 0.1).")
