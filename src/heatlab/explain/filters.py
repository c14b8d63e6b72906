"""LRP relevance filters of paper 004 (clamp, fraction pass, fractional amplifier).

A filter acts on one sample's relevance ``R`` (all its values at once, e.g. every channel of a
layer): with ``a = max|R|`` and ``r = R / a`` it splits ``r`` into its positive part ``max(r, 0)``
and the magnitude of its negative part ``max(-r, 0)``, transforms both magnitudes (each in
[0, 1]) with the same function, puts them back together (positive − negative) and multiplies by
``a`` again. A sample whose relevance is all zero passes through unchanged.

The filters (frozen dataclasses, α a normalised magnitude in [0, 1]):

* :class:`Clamp` ``c<α>``: caps every normalised magnitude at α (``min(m, α)``).
* :class:`FractionPass` ``f<α>`` or ``f<α1>-<α2>``: keeps a normalised magnitude only when it
  lies in the closed interval [α1, α2] and zeroes it elsewhere; ``f<α>`` is [0, α] (the original
  code's ``alphas=(0, α)``).
* :class:`FractionalAmplifier` ``p<α>`` or ``p<α>x<A>``: multiplies magnitudes ≥ α by the gain A
  (default 2, the paper's setting) and leaves the others alone.

The paper's named settings are :data:`PAPER_FILTERS` (c0.6, c0.2, c0.05, f0.6, f0.2, f0.05,
p0.5, p0.7). :func:`apply_filter` takes a name or a filter object; :func:`parse_filter` turns a
name into the object. Everything is a pure tensor function: any device and floating dtype, no
autograd needed (it is differentiable almost everywhere anyway).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from heatlab.errors import HeatlabError

__all__ = [
    "Filter",
    "Clamp",
    "FractionPass",
    "FractionalAmplifier",
    "PAPER_FILTERS",
    "FILTER_FORMS",
    "parse_filter",
    "apply_filter",
]

#: The settings used in paper 004 (§4.1), by name.
PAPER_FILTERS = ("c0.6", "c0.2", "c0.05", "f0.6", "f0.2", "f0.05", "p0.5", "p0.7")
#: The accepted name forms, as told in error messages.
FILTER_FORMS = "c<α> (clamp), f<α> or f<α1>-<α2> (fraction pass), p<α> or p<α>x<A> (amplifier), with 0 ≤ α ≤ 1"

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_NAME = re.compile(rf"^([cfp]){_NUMBER}(?:-{_NUMBER})?(?:x{_NUMBER})?$")


def _fraction(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise HeatlabError(
            f"The filter setting {what} must be a number in [0, 1] (a fraction of max|R|), got {value!r}; "
            f"use e.g. c0.2, or one of the forms {FILTER_FORMS}."
        )
    return float(value)


def _g(x: float) -> str:
    return f"{x:g}"


class Filter:
    """Base of the filters: ``transform(m)`` maps normalised magnitudes ``m`` in [0, 1] (with 0 -> 0)."""

    def transform(self, m: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def name(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, relevance: Tensor) -> Tensor:
        return apply_filter(relevance, self)


@dataclass(frozen=True)
class Clamp(Filter):
    """Clamp filter c_α: every normalised magnitude above ``alpha`` becomes ``alpha``."""

    alpha: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", _fraction("α of a clamp filter", self.alpha))

    @property
    def name(self) -> str:
        return f"c{_g(self.alpha)}"

    def transform(self, m: Tensor) -> Tensor:
        return m.clamp(max=self.alpha)


@dataclass(frozen=True)
class FractionPass(Filter):
    """Fraction-pass filter: keeps normalised magnitudes in the closed interval [low, high], zero elsewhere.

    ``FractionPass(high=α)`` (low 0) is the paper's f_α.
    """

    high: float
    low: float = 0.0

    def __post_init__(self) -> None:
        low = _fraction("α1 of a fraction-pass filter", self.low)
        high = _fraction("α2 of a fraction-pass filter", self.high)
        if low > high:
            raise HeatlabError(
                f"A fraction-pass filter needs α1 ≤ α2, got [{_g(low)}, {_g(high)}]; write the smaller bound "
                f"first, e.g. f{_g(high)}-{_g(low)}."
            )
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def name(self) -> str:
        return f"f{_g(self.high)}" if self.low == 0 else f"f{_g(self.low)}-{_g(self.high)}"

    def transform(self, m: Tensor) -> Tensor:
        keep = (m >= self.low) & (m <= self.high)
        return torch.where(keep, m, torch.zeros_like(m))


@dataclass(frozen=True)
class FractionalAmplifier(Filter):
    """Fractional amplifier p_α: normalised magnitudes ≥ ``alpha`` are multiplied by ``gain`` (A, default 2)."""

    alpha: float
    gain: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", _fraction("α of a fractional amplifier", self.alpha))
        gain = self.gain
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain) or gain < 0:
            raise HeatlabError(
                f"The gain A of a fractional amplifier must be a finite number ≥ 0, got {gain!r}; use e.g. "
                f"FractionalAmplifier(0.5, gain=2) or the name p0.5x2."
            )
        object.__setattr__(self, "gain", float(gain))

    @property
    def name(self) -> str:
        return f"p{_g(self.alpha)}" if self.gain == 2.0 else f"p{_g(self.alpha)}x{_g(self.gain)}"

    def transform(self, m: Tensor) -> Tensor:
        return torch.where(m >= self.alpha, m * self.gain, m)


def parse_filter(spec: str | Filter) -> Filter:
    """The filter named by ``spec`` (see :data:`FILTER_FORMS`); a filter object is returned as it is.

    ``"c0.2"`` -> ``Clamp(0.2)``, ``"f0.05"`` -> ``FractionPass(0.05)`` ([0, 0.05]),
    ``"f0.2-0.6"`` -> ``FractionPass(0.6, low=0.2)``, ``"p0.5"`` -> ``FractionalAmplifier(0.5)``,
    ``"p0.5x3"`` -> ``FractionalAmplifier(0.5, gain=3)``. Names are case-insensitive; spaces are ignored.
    """
    if isinstance(spec, Filter):
        return spec
    if not isinstance(spec, str):
        raise HeatlabError(
            f"A filter is a name or a filter object, got {type(spec).__name__}; use one of the forms {FILTER_FORMS}."
        )
    text = spec.strip().lower().replace(" ", "")
    match = _NAME.match(text)
    if match is None:
        raise HeatlabError(f"Unknown filter '{spec}'; use one of the forms {FILTER_FORMS} (e.g. {', '.join(PAPER_FILTERS)}).")
    kind, first, second, gain = match.groups()
    if kind != "f" and second is not None or kind != "p" and gain is not None:
        raise HeatlabError(f"Unknown filter '{spec}'; use one of the forms {FILTER_FORMS} (e.g. {', '.join(PAPER_FILTERS)}).")
    if kind == "c":
        return Clamp(float(first))
    if kind == "f":
        return FractionPass(float(first)) if second is None else FractionPass(float(second), low=float(first))
    return FractionalAmplifier(float(first)) if gain is None else FractionalAmplifier(float(first), gain=float(gain))


def parse_filters(spec: str | Sequence[str] | None, default: Sequence[str] = PAPER_FILTERS) -> list[str]:
    """Filter names from ``"c0.2,p0.5"`` or a list (``None``: ``default``), validated, in order, without
    duplicates and without ``"none"`` (the unfiltered case callers add themselves)."""
    names = spec.split(",") if isinstance(spec, str) else list(default if spec is None else spec)
    names = list(dict.fromkeys(n.strip() for n in names if n.strip() and n.strip() != "none"))
    for name in names:
        parse_filter(name)  # an unknown or out-of-range filter fails here, before any work
    return names


def apply_filter(relevance: Tensor, spec: str | Filter) -> Tensor:
    """``relevance`` (a batch ``N×...``) filtered sample by sample with ``spec``; same shape, dtype and device.

    Per sample: ``a = max|R|``, ``r = R/a``; the positive part ``max(r, 0)`` and the magnitude of
    the negative part ``max(-r, 0)`` are transformed by the filter and recombined as
    ``a · (T(pos) − T(neg))``. All-zero samples come back unchanged. Runs without autograd
    bookkeeping (``torch.no_grad``); pass a detached tensor or call it inside a hook.
    """
    flt = parse_filter(spec)
    check_relevance(relevance)
    if relevance.numel() == 0:
        return relevance.clone()
    with torch.no_grad():
        if not bool(torch.isfinite(relevance).all()):
            raise HeatlabError("Relevance contains NaN or infinite values; filter only finite relevance.")
        a = relevance.flatten(1).abs().amax(dim=1).view(-1, *([1] * (relevance.dim() - 1)))
        nonzero = a > 0
        scale = torch.where(nonzero, a, torch.ones_like(a))
        r = relevance / scale
        pos = flt.transform(r.clamp(min=0))
        neg = flt.transform((-r).clamp(min=0))
        out = (pos - neg) * scale
        return torch.where(nonzero, out, relevance)


def check_relevance(relevance: object) -> None:
    """HeatlabError unless ``relevance`` is a floating-point batch tensor ``N×...`` (shared with Mean Power)."""
    if not isinstance(relevance, Tensor):
        raise HeatlabError(f"Relevance must be a torch.Tensor, got {type(relevance).__name__}; pass a tensor N×....")
    if relevance.dim() < 2:
        raise HeatlabError(
            f"Relevance must be a batch N×... with at least 2 dimensions, got shape {tuple(relevance.shape)}; "
            "add a batch dimension with relevance[None]."
        )
    if not relevance.is_floating_point():
        raise HeatlabError(f"Relevance must be a floating-point tensor, got {relevance.dtype}; convert it with .float().")
