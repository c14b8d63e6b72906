"""Five-band score of heatmaps against ground truth (paper 002 §III-C and §IV-A, DESIGN §4.3).

Each pixel of a channel-adjusted heatmap ``h`` (N×H×W, values in [-1, 1]) is put in one of five
bands by four increasing thresholds ``t1 < t2 < t3 < t4``; the ground truth (values 0, 0.4, 0.9)
is banded the same way with :data:`TRUTH_THRESHOLDS`, so 0 → 0, 0.4 → 1, 0.9 → 2. Bands are then
compared pixel by pixel for every soft threshold of :func:`soft_thresholds`.

Boundary convention (the paper's explicit cases are ``h > t(2) → 2`` and ``h ≤ −t(2) → −2``; its
open middle intervals leave the ties undefined, so heatlab closes every band on the right)::

    band = #{k : t_k < h} − 2   i.e.   h ≤ t1 → −2,  t1 < h ≤ t2 → −1,  t2 < h ≤ t3 → 0,
                                       t3 < h ≤ t4 → 1,  h > t4 → 2

A heatmap value equal to a threshold therefore goes to the lower band. Thresholds are rounded to
the heatmap's dtype before comparing, so "equal" means equal as numbers of that dtype.

Binary masks: ground truth may also be a mask (bool, or only the values 0 and 1). It is read as
**mask 1 → level 0.9 (band 2, discriminative feature), 0 → 0**: a binary mask of "what the class
depends on" (e.g. the flower dataset's masks "for discriminating features", which paper 002 §II
sets its own truth beside) marks the feature level; the 0.4 localisation level has no counterpart
in a mask. So a binary-mask score equals the three-level score of ``0.9 * mask`` (the same rule as
the metric registry's "feature" mask, truth >= 0.65). Inputs may be NumPy arrays, and heatmaps or
truth may carry a size-1 channel axis (N×1×H×W).

Speed: bands are monotone in ``h``, so all counts for all thresholds come from one histogram per
sample and truth class over the (sorted, unique) threshold values; no N×T×H×W tensor is built and
no Python loop runs over samples or thresholds (only over chunks that keep intermediates small).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from heatlab.data.split import TRUTH_LEVELS
from heatlab.errors import HeatlabError

TRUTH_THRESHOLDS = (-0.7, -0.3, 0.3, 0.7)
TRUTH_VALUES = TRUTH_LEVELS

#: Soft-threshold families: starting row, step per row, number of rows (paper §III-C and §IV-A).
_VARIANTS = {
    "standard": ((-0.5, -0.3, 0.3, 0.5), 0.005, 56),
    "clamp": ((-0.9, -0.5, 0.5, 0.9), 0.01, 41),
}
_RANGE_TOL = 1e-4  # how far outside [-1, 1] a heatmap may stray (rounding after normalisation)
_TRUTH_TOL = 1e-3  # truth values stored as float16 are off by up to ~1e-4
_CHUNK_ELEMENTS = 1 << 19  # pixels per chunk: intermediates of a few MiB stay in the allocator's heap
_MAX_TABLE_CELLS = 1 << 16  # lookup-table size above which counting falls back to bucketize

_TRUTH_VALUES_MSG = ("Ground truth must hold only the levels 0, 0.4 and 0.9 or be a binary mask (bool or 0/1); "
                     "threshold other maps into a mask first, e.g. truth > 0.5.")

METRICS = ("accuracy", "precision", "recall", "fpr")


def soft_thresholds(variant: str = "standard") -> Tensor:
    """The soft thresholds t_m as a float64 T×4 tensor (rows t1 < t2 < t3 < t4).

    ``"standard"`` (paper §III-C): ``[-0.5+md, -0.3+md, 0.3-md, 0.5-md]``, d = 0.005, m = 0..55
    (56 rows, last ``[-0.225, -0.025, 0.025, 0.225]``). ``"clamp"`` (paper §IV-A, for clamped
    heatmaps): ``[-0.9+md, -0.5+md, 0.5-md, 0.9-md]``, d = 0.01, m = 0..40 (41 rows). Each value
    is the float64 nearest to the exact decimal (e.g. exactly ``0.225``), not an accumulated sum.
    """
    if variant not in _VARIANTS:
        raise HeatlabError(f"Unknown five-band variant {variant!r}; use one of {sorted(_VARIANTS)}.")
    start, step, rows = _VARIANTS[variant]
    scale = round(1 / step)  # 200 or 100: thresholds are integers / scale, divided once
    start_units = torch.tensor([round(s * scale) for s in start], dtype=torch.float64)
    toward_zero = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    m = torch.arange(rows, dtype=torch.float64).unsqueeze(1)
    return (start_units + m * toward_zero) / scale


def stratify(h: Tensor, thresholds) -> Tensor:
    """Five-band stratification S⁵_t(h): int8 bands in {-2, -1, 0, 1, 2}, same shape as ``h``.

    ``thresholds`` is one row ``(t1, t2, t3, t4)``, strictly increasing. Bands are closed on the
    right (see the module docstring): ``band = #{k : t_k < h} − 2``; thresholds are rounded to
    ``h``'s dtype first. The ground truth uses :data:`TRUTH_THRESHOLDS`.
    """
    if not isinstance(h, Tensor) or not h.is_floating_point():
        raise HeatlabError("stratify needs a floating-point tensor of heatmap values; convert it with .float().")
    t = torch.as_tensor(thresholds, dtype=torch.float64).flatten()
    if t.numel() != 4 or not bool((t[1:] > t[:-1]).all()):
        raise HeatlabError(f"Five-band thresholds must be 4 strictly increasing numbers, got {t.tolist()}.")
    if bool(torch.isnan(h).any()):
        raise HeatlabError("Heatmaps contain NaN; fix the attribution or replace them with torch.nan_to_num.")
    x = _widen(h)
    return _count_below(x, _round_to(t.to(x.device), h.dtype, x.dtype)).sub_(2).to(torch.int8)


def truth_bands(truth: Tensor) -> Tensor:
    """Validate ground truth (values 0, 0.4, 0.9 up to 1e-3); return its int8 bands 0, 1, 2."""
    _check_truth_type(truth)
    return _truth_bands(truth).to(torch.int8)


@dataclass
class FiveBandResult:
    """Five-band scores of N heatmaps at T soft thresholds.

    thresholds: float64 T×4 (the rows t_m); accuracy, precision, recall, fpr: float64 N×T;
    tp, fp, fn, tn: int64 N×T pixel counts. Higher is better for accuracy, precision and recall,
    lower for fpr. A sample whose truth is all 0 (class 'empty') has TP = 0, so P = R = 0 there.
    """

    thresholds: Tensor
    accuracy: Tensor
    precision: Tensor
    recall: Tensor
    fpr: Tensor
    tp: Tensor
    fp: Tensor
    fn: Tensor
    tn: Tensor

    @property
    def avg(self) -> dict[str, Tensor]:
        """Per-sample mean over the T thresholds of each metric (float64 N tensors).

        The paper writes X_avg = (1/n_soft) Σ over n_soft + 1 thresholds; heatlab takes the mean.
        """
        return {name: getattr(self, name).mean(dim=1) for name in METRICS}

    @property
    def best(self) -> dict[str, Tensor]:
        """Per-sample best value over thresholds: max for accuracy/precision/recall, min for fpr."""
        out = {name: getattr(self, name).amax(dim=1) for name in METRICS[:3]}
        out["fpr"] = self.fpr.amin(dim=1)
        return out

    def roc(self) -> tuple[Tensor, Tensor]:
        """ROC points (paper §III-C): per-threshold means over samples, (FPR T, recall T).

        FPR is the x axis and recall the y axis (the original plots had them swapped).
        """
        return self.fpr.mean(dim=0), self.recall.mean(dim=0)


def five_band(attributions, truth, *, variant: str = "standard") -> FiveBandResult:
    """Five-band score of channel-adjusted heatmaps against ground truth (paper 002 §III-C).

    attributions: float N×H×W in [-1, 1] (run ``heatlab.explain.postprocess.channel_adjust``
    first); truth: N×H×W with values 0, 0.4, 0.9. For each soft threshold t_m
    (:func:`soft_thresholds` of ``variant``): TP = heatmap band ≠ 0 and equal to the truth band;
    FP = heatmap band ≠ 0 where the truth is 0, plus heatmap band ≠ 0 but ≠ a non-zero truth band;
    FN = heatmap band 0 where the truth is not; TN = both 0. P = TP/(TP+FP+1e-6),
    R = TP/(TP+FN+1e-6), FPR = FP/(FP+TN+1e-6), accuracy = fraction of pixels with equal bands;
    metrics are computed in float64 from the exact counts. Works on any device. ``truth`` may be a
    binary mask (bool or 0/1; read as 1 → 0.9, 0 → 0, see the module docstring); either input may
    be a NumPy array or N×1×H×W.
    """
    attributions, truth = as_pair(attributions, truth)
    thresholds = soft_thresholds(variant).to(attributions.device)
    n, pixels = attributions.shape[0], attributions.shape[1] * attributions.shape[2]
    t_rounded = _round_to(thresholds, attributions.dtype, _work_dtype(attributions.dtype))
    edges = torch.unique(t_rounded)  # sorted; every threshold value is one of these edges
    below = torch.zeros(0, 3, edges.numel() + 1, dtype=torch.int64, device=attributions.device)
    below = torch.cat(
        [below] + [_cumulative_counts(h, g, edges) for h, g in _chunks(attributions, truth)]
    )  # N×band×(E+1): pixels of each truth band 0/1/2 with h ≤ each edge; last column = all
    le = below[:, :, torch.searchsorted(edges, t_rounded.flatten())].view(n, 3, len(thresholds), 4)
    total = below[:, :, -1:]  # N×band×1
    # le[:, c, :, k]: pixels of truth band c with h ≤ t_(k+1), i.e. heatmap band ≤ k - 2.
    tp = (le[:, 1, :, 3] - le[:, 1, :, 2]) + (total[:, 2] - le[:, 2, :, 3])
    fn = (le[:, 1, :, 2] - le[:, 1, :, 1]) + (le[:, 2, :, 2] - le[:, 2, :, 1])
    tn = le[:, 0, :, 2] - le[:, 0, :, 1]
    fp = pixels - tp - fn - tn
    tp64, fp64, fn64, tn64 = (c.double() for c in (tp, fp, fn, tn))
    return FiveBandResult(
        thresholds=thresholds,
        accuracy=(tp64 + tn64) / pixels,
        precision=tp64 / (tp64 + fp64 + 1e-6),
        recall=tp64 / (tp64 + fn64 + 1e-6),
        fpr=fp64 / (fp64 + tn64 + 1e-6),
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
    )


# ----------------------------------------------------------------------------- counting


def _cumulative_counts(h: Tensor, truth: Tensor, edges: Tensor) -> Tensor:
    """n×3×(E+1) int64: per sample and truth band 0/1/2, pixels with h ≤ edges[j] (last: all)."""
    n = h.shape[0]
    x = _widen(h).reshape(n, -1)
    _check_range(x)
    bins = edges.numel() + 1
    row = torch.arange(0, 3 * n, 3, dtype=torch.int32, device=x.device).unsqueeze(1)
    key = _truth_bands(truth.reshape(n, -1)).add_(row).mul_(bins).add_(_count_below(x, edges))
    hist = torch.bincount(key.flatten(), minlength=n * 3 * bins).view(n, 3, bins)
    return hist.cumsum(dim=2)


def _count_below(x: Tensor, edges: Tensor) -> Tensor:
    """int32 #{j : edges[j] < x} per element; ``edges`` sorted, dtype of x; x must not be NaN.

    Equal to ``torch.bucketize(x, edges)`` but O(1) per element: a lookup table over cells of
    width half the smallest edge gap holds, per cell, the number of edges below it and the one
    edge it may contain. Edges far from [-1, 1] or too close together use bucketize instead.
    """
    edges = torch.unique(edges)
    e64 = edges.double()
    gaps = e64[1:] - e64[:-1]
    width = float(gaps.min()) / 2 if gaps.numel() else 1.0
    lo, hi = float(e64[0]) - width, float(e64[-1])
    cells = math.ceil((hi - lo) / width) + 2 if math.isfinite(lo) and math.isfinite(hi) else math.inf
    if cells > _MAX_TABLE_CELLS or max(abs(lo), abs(hi)) > 4:
        return torch.bucketize(x, edges, out_int32=True)
    # Cell c nominally covers [s, s + w) with s = lo + c·w. Widened by w/4 on each side it still
    # holds at most one edge (gaps are ≥ 2w), and rounding moves x's cell index by far less than
    # w/4, so #{edges < x} = #{edges < s − w/4} + [the edge in the widened cell is < x].
    start = lo + width * torch.arange(cells, dtype=torch.float64, device=x.device)
    base = torch.searchsorted(e64, start - width / 4)
    near_idx = base.clamp(max=edges.numel() - 1)
    inside = (base < edges.numel()) & (e64[near_idx] <= start + 1.25 * width)
    near = torch.where(inside, edges[near_idx], math.inf).to(x.dtype)
    cell = (x - lo).mul_(1 / width).floor_().clamp_(0, cells - 1).to(torch.int32).flatten()
    count = base.to(torch.int32).index_select(0, cell).view(x.shape)
    return count.add_(x > near.index_select(0, cell).view(x.shape))


def _truth_bands(truth: Tensor) -> Tensor:
    """int32 truth bands 0, 1, 2 (same shape), or HeatlabError if a value is not 0, 0.4 or 0.9."""
    g = _widen(truth if truth.is_floating_point() else truth.double())
    lo, hi = (float(v) for v in torch.aminmax(g)) if g.numel() else (0.0, 0.0)
    if not (-_TRUTH_TOL <= lo and hi <= TRUTH_VALUES[-1] + _TRUTH_TOL):  # also catches NaN
        raise HeatlabError(_TRUTH_VALUES_MSG)
    t = _round_to(torch.tensor(TRUTH_THRESHOLDS, dtype=torch.float64, device=g.device), g.dtype, g.dtype)
    bands = _count_below(g, t).sub_(2)  # in 0..2 given the range check
    levels = torch.tensor(TRUTH_VALUES, dtype=g.dtype, device=g.device)
    if not bool(((g - levels.index_select(0, bands.flatten()).view(g.shape)).abs_() <= _TRUTH_TOL).all()):
        raise HeatlabError(_TRUTH_VALUES_MSG)
    return bands


# ----------------------------------------------------------------------------- validation


def as_pair(h, truth) -> tuple[Tensor, Tensor]:
    """(heatmaps N×H×W, truth levels N×H×W) from torch/NumPy input, N×1×H×W squeezed, masks mapped.

    A binary truth (bool, or only 0 and 1) becomes ``0.9 * mask`` in ``h``'s float dtype.
    """
    from_numpy = isinstance(truth, np.ndarray)
    h, truth = _to_tensor(h, "Heatmaps"), _to_tensor(truth, "Ground truth")
    if from_numpy and isinstance(h, Tensor):
        truth = truth.to(h.device)
    if isinstance(h, Tensor) and h.ndim == 4 and h.shape[1] == 1:
        h = h[:, 0]
    if isinstance(truth, Tensor) and truth.ndim == 4 and truth.shape[1] == 1:
        truth = truth[:, 0]
    if isinstance(truth, Tensor) and not truth.is_complex() and truth.numel():
        if truth.dtype == torch.bool or bool(((truth == 0) | (truth == 1)).all()):
            dtype = h.dtype if isinstance(h, Tensor) and h.is_floating_point() else torch.float32
            truth = truth.to(dtype) * TRUTH_VALUES[-1]
    _check_pair(h, truth)
    return h, truth


def _to_tensor(x, what: str):
    if isinstance(x, np.ndarray):
        if x.dtype == object or x.dtype.kind not in "biuf":
            raise HeatlabError(f"{what} must hold bool or real numbers, got NumPy dtype {x.dtype}.")
        return torch.from_numpy(np.ascontiguousarray(x))
    return x


def _check_truth_type(truth) -> None:
    if not isinstance(truth, Tensor) or truth.dtype == torch.bool or truth.is_complex():
        raise HeatlabError("Ground truth must be a real-valued torch tensor with values 0, 0.4 and 0.9 "
                           "(five_band also takes a bool or 0/1 mask).")


def _check_pair(h: Tensor, truth: Tensor) -> None:
    if not isinstance(h, Tensor) or not h.is_floating_point():
        raise HeatlabError("Heatmaps must be a floating-point torch tensor N×H×W; convert them with .float().")
    if h.ndim != 3:
        raise HeatlabError(
            f"Heatmaps must be N×H×W or N×1×H×W, got shape {tuple(h.shape)}; run "
            "heatlab.explain.channel_adjust first (it sums the channels and rescales to [-1, 1])."
        )
    _check_truth_type(truth)
    if truth.shape != h.shape:
        raise HeatlabError(
            f"Heatmaps {tuple(h.shape)} and ground truth {tuple(truth.shape)} differ in shape; "
            "pass one truth map per heatmap."
        )
    if h.shape[1] * h.shape[2] == 0:
        raise HeatlabError(f"Heatmaps of shape {tuple(h.shape)} have no pixels; pass H, W >= 1.")
    if truth.device != h.device:
        raise HeatlabError(
            f"Heatmaps are on {h.device} but ground truth is on {truth.device}; move both to one device."
        )


def _check_range(x: Tensor) -> None:
    lo, hi = torch.aminmax(x)  # NaN propagates, so one pass catches NaN, Inf and the range
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise HeatlabError("Heatmaps contain NaN or Inf; fix the attribution or replace them with torch.nan_to_num.")
    if lo < -1 - _RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise HeatlabError(f"Heatmap values span [{lo:.4g}, {hi:.4g}], outside [-1, 1]; run channel_adjust first.")


# ----------------------------------------------------------------------------- helpers


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays; every other float (half, bfloat16) widens exactly to float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _widen(x: Tensor) -> Tensor:
    return x.to(_work_dtype(x.dtype))


def _round_to(t: Tensor, dtype: torch.dtype, work: torch.dtype) -> Tensor:
    """Thresholds rounded to the data's dtype, then widened (exactly) to the working dtype."""
    return t.to(dtype).to(work)


def _chunks(h: Tensor, truth: Tensor):
    """(heatmaps, truth) slices of whole samples with about _CHUNK_ELEMENTS pixels each."""
    rows = max(1, _CHUNK_ELEMENTS // (h.shape[1] * h.shape[2]))
    for start in range(0, h.shape[0], rows):
        yield h[start : start + rows], truth[start : start + rows]
