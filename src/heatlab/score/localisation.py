"""Localisation metrics of heatmaps against binary masks, as Quantus defines them.

Every metric takes heatmaps ``h`` and a mask, treats each sample as a flat vector of P pixels and
returns a float64 tensor of N scores. **Higher is better for all four.** A sample whose mask is
empty scores NaN (documented here, no warning is emitted).

Accepted inputs (:func:`as_heatmaps`, :func:`as_mask`): heatmaps as a torch tensor or NumPy array
of shape N×H×W, N×1×H×W or N×C×H×W; a 4-D heatmap is reduced over its channel axis by the rule
``channels=`` (default ``"sum"``, the rule of heatlab's own ``channel_adjust``; ``"mean"``,
``"abs_sum"`` or ``"max"`` on request). Masks: bool or 0/1 numbers, N×H×W or N×1×H×W.

Pointing game and AUC use the heatmap as given (signed). Relevance mass and rank accuracy use its
**positive part** ``max(h, 0)``, as Arras et al. (CLEVR-XAI) define them, so mass accuracy lies
in [0, 1]. None of the four changes when ``h`` is multiplied by a positive number, so Quantus's
``normalise=True`` (divide by max|h|) gives the same numbers; Quantus's mass/rank accuracy equal
heatlab's when given ``max(h, 0)`` (Quantus itself uses the signed values).

- :func:`pointing_game` (Zhang et al. 2018, "Top-down neural attention by excitation backprop").
- :func:`relevance_mass_accuracy` and :func:`relevance_rank_accuracy` (Arras et al. 2022,
  "CLEVR-XAI: a benchmark dataset for the ground truth evaluation of neural network explanations").
- :func:`auc` (Fawcett 2006, "An introduction to ROC analysis").
- :func:`localisation_metrics`: all four against the discriminative-feature mask (truth = 0.9)
  and the whole-cell mask (truth > 0) of the synthetic cells. The same eight scores are entries
  of the metric registry :mod:`heatlab.score.metrics`, which also takes binary masks.

Work is vectorised over samples (one sort per row, shared by the metrics that rank pixels) and
done in chunks of whole samples so that intermediate tensors stay a few MiB. Inside
:func:`shared_rows`, the row functions called on one heatmap tensor share that sort (the
registry's ``per_sample_scores`` uses this; the cache lives only for the block).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cached_property
from types import MappingProxyType
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from heatlab.errors import HeatlabError
from heatlab.explain.postprocess import CHANNEL_RULES
from heatlab.score.five_band import truth_bands

_CHUNK_ELEMENTS = 1 << 18  # pixels per chunk (int64 intermediates of 2 MiB)

MASKS = ("feature", "cell")


class _Rows:
    """One chunk of heatmaps as n×P rows; the sort (shared by AUC and rank accuracy) is lazy."""

    def __init__(self, h: Tensor):
        self.x = h.reshape(h.shape[0], -1)
        if self.x.dtype not in (torch.float32, torch.float64):
            self.x = self.x.float()  # half/bfloat16 widen exactly

    @cached_property
    def ranked(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(sorted values, permutation, lo, hi), all n×P in ascending order of value.

        lo[i] / hi[i] = number of pixels with value < / ≤ the i-th smallest (ties share both).
        """
        values, perm = self.x.sort(dim=1)
        lo = _group_start(values)
        hi = values.shape[1] - _group_start(values.flip(1)).flip(1)
        return values, perm, lo, hi


_SHARED: ContextVar[dict[int, tuple[Tensor, _Rows]] | None] = ContextVar("heatlab_shared_rows", default=None)


@contextmanager
def shared_rows() -> Iterator[None]:
    """Inside the block, :func:`rows_of` returns one :class:`_Rows` (one lazy sort) per heatmap tensor."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def rows_of(h: Tensor) -> _Rows:
    """Heatmaps ``n×...`` as ``n×P`` rows; the same object for the same tensor inside :func:`shared_rows`.

    Only the last tensor is kept (callers go chunk by chunk), held by reference so its id stays
    valid while it is cached.
    """
    cache = _SHARED.get()
    if cache is None:
        return _Rows(h)
    hit = cache.get(id(h))
    if hit is None or hit[0] is not h:
        cache.clear()
        hit = cache[id(h)] = (h, _Rows(h))
    return hit[1]


def pointing_game(h, mask, *, channels: str = "sum") -> Tensor:
    """1.0 if the maximum of ``h`` lies inside ``mask``, else 0.0; float64 N (Zhang et al. 2018).

    Higher is better. Like Quantus's ``PointingGame``, a tie for the maximum counts as a hit when
    any of the tied pixels is in the mask (so an all-zero heatmap hits every non-empty mask). NaN
    for an empty mask (Quantus 0.6.0 returns 1.0 there, because it writes NaN into a bool array).
    """
    return _per_mask(h, mask, _pointing_game, channels)


def relevance_mass_accuracy(h, mask, *, channels: str = "sum") -> Tensor:
    """Σ_{mask} h⁺ / Σ h⁺ per sample with h⁺ = max(h, 0); float64 N in [0, 1] (Arras et al. 2022).

    Higher is better (1 when all positive relevance is in the mask). Positive relevance only, as
    CLEVR-XAI defines it (signed sums, as Quantus's code takes them, can leave [0, 1]). Sums are
    taken in float64. NaN for an empty mask or a heatmap without positive values (0 / 0).
    """
    return _per_mask(h, mask, _relevance_mass_accuracy, channels)


def relevance_rank_accuracy(h, mask, *, channels: str = "sum") -> Tensor:
    """Fraction of the K highest-ranked pixels of h⁺ = max(h, 0) in the mask, K = mask size; float64 N.

    Higher is better (Arras et al. 2022, "CLEVR-XAI": ranks of positive relevance; Quantus
    ``RelevanceRankAccuracy`` on ``max(h, 0)``). Ties at the K-th value (e.g. the zeros of h⁺) are
    shared: the free top-K places are split evenly over the tied pixels, i.e. the expected score
    under random tie-breaking. Without such ties this equals Quantus exactly; with ties Quantus's
    answer depends on NumPy's unstable argsort order. NaN for an empty mask.
    """
    return _per_mask(h, mask, _relevance_rank_accuracy, channels)


def auc(h, mask, *, channels: str = "sum") -> Tensor:
    """ROC-AUC of ``h`` as a score for mask membership, per sample; float64 N (Fawcett 2006).

    Higher is better (1 = every mask pixel outranks every other pixel, 0.5 = chance). Ties count
    one half, which equals sklearn's ``roc_auc_score`` and Quantus's ``AUC`` (sklearn ``roc_curve``
    + trapezoidal ``auc``); computed exactly from average ranks (Mann-Whitney U). NaN when the
    mask is empty or covers every pixel (AUC is undefined without both classes).
    """
    return _per_mask(h, mask, _auc, channels)


def localisation_metrics(h, truth, *, channels: str = "sum") -> dict[str, Tensor]:
    """All four metrics against two masks; float64 N tensors keyed ``"metric/mask"``.

    h: heatmaps as for :func:`as_heatmaps`; truth: N×H×W or N×1×H×W, either the cells' three
    levels 0, 0.4, 0.9 (masks ``"feature"`` = truth 0.9, the discriminative feature, and
    ``"cell"`` = truth > 0, the whole cell; the levels are why two masks exist) or a binary mask
    (bool or 0/1), which is then both masks. Keys are e.g. ``"pointing_game/feature"``,
    ``"auc/cell"``. Class 'empty' (no cell) has empty masks, so its samples score NaN.
    """
    h = as_heatmaps(h, channels=channels)
    truth = _as_tensor(truth, "ground truth", h.device)
    truth = _squeeze_channel(truth, h, "ground truth")
    binary = truth.dtype == torch.bool or bool(((truth == 0) | (truth == 1)).all())
    parts: list[dict[str, Tensor]] = []
    for hc, tc in _row_chunks(h, truth):
        rows = _Rows(hc)
        if binary:
            m = tc.reshape(hc.shape[0], -1).bool()
            masks = {"feature": m, "cell": m}
        else:
            bands = _truth_bands_or_raise(tc).reshape(hc.shape[0], -1)
            masks = {"feature": bands == 2, "cell": bands > 0}
        parts.append({f"{name}/{m}": fn(rows, masks[m]) for m in MASKS for name, fn in _METRICS.items()})
    keys = [f"{name}/{m}" for m in MASKS for name in _METRICS]
    return {k: torch.cat([p[k] for p in parts]) if parts else _empty(h) for k in keys}


# ----------------------------------------------------------------------------- metrics on rows


def _pointing_game(rows: _Rows, m: Tensor) -> Tensor:
    at_max = rows.x == rows.x.amax(dim=1, keepdim=True)
    return _nan_if_empty((m & at_max).any(dim=1).double(), m)


def _relevance_mass_accuracy(rows: _Rows, m: Tensor) -> Tensor:
    pos = rows.x.clamp(min=0)
    inside = (pos * m).sum(dim=1, dtype=torch.float64)
    return _nan_if_empty(inside / pos.sum(dim=1, dtype=torch.float64), m)


def _relevance_rank_accuracy(rows: _Rows, m: Tensor) -> Tensor:
    values, _, lo, hi = rows.ranked
    # Ranks of max(h, 0): every value <= 0 becomes one tie at 0. Clamping the sorted values keeps
    # them sorted; the tie group of the zeros starts at 0 and ends where the negatives+zeros end.
    nonpos = values <= 0
    values = values.clamp(min=0)
    n_nonpos = nonpos.sum(dim=1, keepdim=True)
    lo = torch.where(nonpos, 0, lo)
    hi = torch.where(nonpos, n_nonpos, hi)
    x = rows.x.clamp(min=0)
    p = values.shape[1]
    k = m.sum(dim=1, keepdim=True)
    q = (p - k).clamp(max=p - 1)  # ascending position of the K-th largest value
    kth, below, upto = values.gather(1, q), lo.gather(1, q), hi.gather(1, q)
    above_in_mask = (m & (x > kth)).sum(dim=1, keepdim=True)
    tied_in_mask = (m & (x == kth)).sum(dim=1, keepdim=True)
    free_places = k - (p - upto)  # top-K places left for the pixels tied at the K-th value
    hits = above_in_mask + tied_in_mask * free_places.double() / (upto - below)
    return _nan_if_empty((hits / k).squeeze(1), m)


def _auc(rows: _Rows, m: Tensor) -> Tensor:
    _, perm, lo, hi = rows.ranked
    p = perm.shape[1]
    in_mask = m.gather(1, perm)
    k = in_mask.sum(dim=1)
    twice_rank_sum = (in_mask * (lo + hi + 1)).sum(dim=1)  # 2·Σ average 1-based rank over the mask
    twice_u = twice_rank_sum - k * (k + 1)  # 2·Mann-Whitney U
    out = twice_u.double() / (2 * k * (p - k)).double()
    return torch.where((k == 0) | (k == p), math.nan, out)


_METRICS: dict[str, Callable[[_Rows, Tensor], Tensor]] = {
    "pointing_game": _pointing_game,
    "relevance_mass_accuracy": _relevance_mass_accuracy,
    "relevance_rank_accuracy": _relevance_rank_accuracy,
    "auc": _auc,
}

#: The four metrics on rows: ``fn(rows_of(h), mask n×P bool) -> float64 n`` (no validation).
ROW_METRICS: Mapping[str, Callable[[_Rows, Tensor], Tensor]] = MappingProxyType(_METRICS)


# ----------------------------------------------------------------------------- input forms

def as_heatmaps(h, *, channels: str = "sum") -> Tensor:
    """Heatmaps as a floating-point tensor ``N×...`` (``N×H×W`` for 3-D and 4-D input).

    ``h``: torch tensor or NumPy array, N×H×W, N×1×H×W or N×C×H×W (any other N×... is used as
    N rows of pixels). A 4-D input loses its channel axis by ``CHANNEL_RULES[channels]``
    (``"sum"``, the default, as heatlab's ``channel_adjust``). NumPy arrays become CPU tensors.
    """
    if channels not in CHANNEL_RULES:
        raise HeatlabError(f"Unknown channel rule channels={channels!r}; pass one of {sorted(CHANNEL_RULES)}.")
    h = _as_tensor(h, "heatmaps", None)
    if not h.is_floating_point():
        raise HeatlabError("Heatmaps must hold floating-point values; convert them with .float() or .astype(float).")
    if h.ndim == 4:
        h = CHANNEL_RULES[channels](h)
    _check_heatmaps(h)
    return h


def as_mask(mask, h: Tensor) -> Tensor:
    """A mask (bool or 0/1, N×H×W or N×1×H×W, torch or NumPy) as a bool tensor of ``h``'s shape and device."""
    mask = _squeeze_channel(_as_tensor(mask, "mask", h.device), h, "mask")
    _check_mask(mask, h)
    return mask.bool()


def _as_tensor(x, what: str, device) -> Tensor:
    if not isinstance(x, Tensor):
        if not isinstance(x, np.ndarray):
            raise HeatlabError(f"The {what} must be a torch tensor or NumPy array, got {type(x).__name__}.")
        if x.dtype == object or x.dtype.kind not in "biuf":
            raise HeatlabError(f"The {what} must hold bool or real numbers, got NumPy dtype {x.dtype}.")
        x = torch.from_numpy(np.ascontiguousarray(x))
        if device is not None:
            x = x.to(device)
    return x


def _squeeze_channel(x: Tensor, h: Tensor, what: str) -> Tensor:
    """Drop a size-1 channel axis of ``x`` (N×1×H×W -> N×H×W) when ``h`` is N×H×W."""
    if x.ndim == h.ndim + 1 and x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.shape != h.shape:
        hint = ("give it one channel (N×1×H×W or N×H×W)" if x.ndim == 4
                else "pass one map of the heatmaps' height and width per heatmap")
        raise HeatlabError(
            f"The {what} has shape {tuple(x.shape)} but the heatmaps (after channel reduction) have "
            f"{tuple(h.shape)}; {hint}."
        )
    if x.device != h.device:
        raise HeatlabError(f"Heatmaps are on {h.device} but the {what} is on {x.device}; move both to one device.")
    return x


def _truth_bands_or_raise(truth: Tensor) -> Tensor:
    try:
        return truth_bands(truth)
    except HeatlabError:
        raise HeatlabError(
            "Ground truth must be the cells' levels 0/0.4/0.9 or a binary mask (bool or 0/1); "
            "threshold other maps into a mask, e.g. truth > 0.5."
        ) from None


# ----------------------------------------------------------------------------- helpers


def _group_start(values: Tensor) -> Tensor:
    """For ascending rows, the index where each element's run of equal values starts (int64)."""
    idx = torch.arange(values.shape[1], device=values.device).expand_as(values)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    return torch.where(starts, idx, 0).cummax(dim=1).values


def _nan_if_empty(score: Tensor, m: Tensor) -> Tensor:
    return torch.where(m.any(dim=1), score, math.nan)


def _per_mask(h, mask, metric: Callable[[_Rows, Tensor], Tensor], channels: str) -> Tensor:
    h = as_heatmaps(h, channels=channels)
    mask = _squeeze_channel(_as_tensor(mask, "mask", h.device), h, "mask")
    _check_mask(mask, h)
    parts = [metric(_Rows(hc), mc.reshape(hc.shape[0], -1).bool()) for hc, mc in _row_chunks(h, mask)]
    return torch.cat(parts) if parts else _empty(h)


def _row_chunks(h: Tensor, other: Tensor):
    pixels = max(1, h[0].numel()) if h.shape[0] else 1
    rows = max(1, _CHUNK_ELEMENTS // pixels)
    for start in range(0, h.shape[0], rows):
        yield h[start : start + rows], other[start : start + rows]


def _empty(h: Tensor) -> Tensor:
    return torch.empty(0, dtype=torch.float64, device=h.device)


def _check_heatmaps(h: Tensor) -> None:
    if not isinstance(h, Tensor) or not h.is_floating_point():
        raise HeatlabError("Heatmaps must hold floating-point values; convert them with .float() or .astype(float).")
    if h.ndim < 2 or math.prod(h.shape[1:]) == 0:
        raise HeatlabError(f"Heatmaps must be N×H×W with at least one pixel, got shape {tuple(h.shape)}.")
    lo, hi = torch.aminmax(h) if h.numel() else (torch.zeros(()), torch.zeros(()))
    if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN propagates through aminmax
        raise HeatlabError("Heatmaps contain NaN or Inf; fix the attribution or replace them with torch.nan_to_num.")


def _check_mask(mask: Tensor, h: Tensor) -> None:
    if not isinstance(mask, Tensor) or mask.shape != h.shape:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise HeatlabError(
            f"Mask {shape} must have the heatmaps' shape {tuple(h.shape)} (or N×1×H×W); pass one mask per heatmap."
        )
    if mask.device != h.device:
        raise HeatlabError(f"Heatmaps are on {h.device} but the mask is on {mask.device}; move both to one device.")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise HeatlabError("Mask values must be 0/1 or bool; threshold the map into a mask first, e.g. mask > 0.5.")
