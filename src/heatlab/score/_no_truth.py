"""Helpers shared by the no-truth metrics (randomisation, robustness, complexity, axiomatic).

Every function is batched over the samples (rows) and stays on the tensors' device.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.models.state import model_device

#: ``explain_func(model, x, y) -> N×...`` as the metrics call it.
Explain = Callable[[nn.Module, Tensor, Tensor], Tensor]


def check_heatmaps(a, x: Tensor | None = None, what: str = "a") -> Tensor:
    """``a`` as one finite heatmap per sample of ``x`` (N×C×H×W, N×1×H×W or N×H×W for images, N×F or
    N×1 for tables; any N×... when ``x`` is None), a 3-D ``a`` given its channel axis: N×1×H×W."""
    if not torch.is_tensor(a) or a.ndim < 2:
        raise HeatlabError(f"{what} must be a tensor of N heatmaps (N×...), got {type(a).__name__} "
                           f"{tuple(getattr(a, 'shape', ()))}; pass one heatmap per sample.")
    if x is not None:
        if a.ndim == 3 and x.ndim == 4:
            a = a.unsqueeze(1)
        if not (a.ndim == x.ndim and a.shape[0] == x.shape[0] and a.shape[2:] == x.shape[2:]
                and a.shape[1] in (1, x.shape[1])):
            raise HeatlabError(f"{what} has shape {tuple(a.shape)}, which does not match x {tuple(x.shape)}; pass "
                               "N×C×H×W, N×1×H×W or N×H×W heatmaps for images and N×F for tables.")
    bad = "NaN" if bool(torch.isnan(a).any()) else "infinite" if not bool(torch.isfinite(a).all()) else ""
    if bad:
        raise HeatlabError(f"{what} holds {bad} attributions; recompute or clean the heatmaps first "
                           f"(e.g. torch.nan_to_num({what})).")
    return a


def check_inputs(model: nn.Module, x, y, a, what: str = "a") -> tuple[Tensor, Tensor, Tensor]:
    """The one input check of every no-truth metric that reads the model: ``x`` N×C×H×W images or N×F
    tables (float), ``y`` N integer targets, ``a`` as :func:`check_heatmaps` takes it (dtype kept);
    all three moved to the model's device."""
    if not isinstance(model, nn.Module):
        raise HeatlabError(f"model must be a torch nn.Module, got {type(model).__name__}.")
    for name, v in (("x", x), ("y", y), (what, a)):
        if not isinstance(v, Tensor):
            raise HeatlabError(f"{name} must be a torch tensor, got {type(v).__name__}.")
    dev = model_device(model)
    x, y, a = x.to(dev), y.to(dev), a.to(dev)
    if x.ndim not in (2, 4) or not x.is_floating_point():
        raise HeatlabError(f"x must be float N×C×H×W images or N×F tables, got shape {tuple(x.shape)} ({x.dtype}).")
    n = x.shape[0]
    if y.shape != (n,) or y.is_floating_point():
        raise HeatlabError(f"y must hold {n} integer targets (one per sample of x), got shape {tuple(y.shape)} ({y.dtype}).")
    return x, y, check_heatmaps(a, x, what)


def explainer(explain_func, name: str) -> Explain:
    """``explain_func`` as ``(model, x, y) -> float tensor on x's device``; NumPy results (e.g.
    :func:`heatlab.explain.explain_func`) are converted."""
    if explain_func is None:
        raise HeatlabError(f"{name} re-explains the model; pass explain_func=(model, x, y) -> heatmaps, e.g. "
                           "heatlab.explain.explain_func.")

    def run(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        out = explain_func(model, x, y)
        out = torch.from_numpy(np.asarray(out)) if not torch.is_tensor(out) else out.detach()
        return out.to(x.device)

    return run


def rows(t: Tensor) -> Tensor:
    """``N×...`` -> ``N×D``."""
    return t.reshape(t.shape[0], -1)


def row_norms64(t: Tensor, minus: Tensor | None = None, over: Tensor | None = None, block: int = 1 << 18) -> Tensor:
    """Euclidean norm of each row of ``(t − minus) / over`` (N×..., both optional, same shape as
    ``t``), the arithmetic in ``t``'s dtype, the sum of squares in float64: float64 N. By blocks of
    ``block`` values through reused buffers: a whole float64 copy (or difference) of a large
    float32 ``t`` costs more in the fresh memory's page faults than the arithmetic (~20× on the CPU)."""
    if minus is not None and minus.shape != t.shape:  # broadcasting: the difference whole
        t, minus = t - minus, None
    dtype = t.dtype if minus is None else torch.result_type(t, minus)
    t, n = rows(t), t.shape[0]
    minus, over = (None if m is None else rows(m) for m in (minus, over))
    d = t.shape[1]
    c = max(1, block // n) if d * n > block else d
    tmp = torch.empty(n, min(c, d), dtype=dtype, device=t.device) if minus is not None else None
    wide = torch.empty(n, min(c, d), dtype=torch.float64, device=t.device)
    total = torch.zeros(n, dtype=torch.float64, device=t.device)
    for s in range(0, d, c):
        w = min(c, d - s)
        part = t[:, s : s + w] if minus is None else torch.sub(t[:, s : s + w], minus[:, s : s + w], out=tmp[:, :w])
        if over is not None:
            part = part.div_(over[:, s : s + w]) if minus is not None else part / over[:, s : s + w]
        sq = wide[:, :w].copy_(part)
        total += sq.mul_(sq).sum(1)
    return total.sqrt_()


def normalise_by_max(a: Tensor) -> Tensor:
    """Each heatmap divided by its maximum ``|a|`` (all-zero heatmaps unchanged)."""
    m = rows(a).abs().amax(1).view(-1, *[1] * (a.ndim - 1))
    return torch.where(m > 0, a / torch.where(m > 0, m, 1), a)


def normalise_by_second_moment(a: Tensor) -> Tensor:
    """Each heatmap divided by the square root of its mean square (Hedström et al. 2023)."""
    m = rows(a).square().mean(1).sqrt().view(-1, *[1] * (a.ndim - 1))
    return torch.where(m > 0, a / torch.where(m > 0, m, 1), a)


NORMALISERS = {"max": normalise_by_max, "second_moment": normalise_by_second_moment}


def prepare(a: Tensor, *, abs: bool, normalise: bool, how: str = "max") -> Tensor:
    """Quantus's order: normalise (per sample here, per batch in Quantus), then ``|a|``."""
    a = NORMALISERS[how](a) if normalise else a
    return a.abs() if abs else a


def predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x)


def average_ranks(v: Tensor) -> Tensor:
    """Ranks (1-based, float64) within each row of ``v`` (N×D), ties given their average rank as
    ``scipy.stats.rankdata``: one sort, then each tie group's first and last position by running
    maxima and minima (on the CPU: :func:`_average_ranks_numpy`, faster)."""
    if v.device.type == "cpu" and not v.requires_grad:
        return torch.from_numpy(_average_ranks_numpy(v.numpy()))
    s, order = v.sort(1)
    n, d = s.shape
    pos = torch.arange(d, device=v.device).expand(n, d)
    starts = torch.ones_like(s, dtype=torch.bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, pos, 0).cummax(1).values
    last = torch.where(ends, pos, d).flip(1).cummin(1).values.flip(1)
    ranks = (first + last).double() / 2 + 1
    return torch.empty_like(ranks).scatter_(1, order, ranks)


def radix_argsort(digits: list[np.ndarray]) -> np.ndarray:
    """Stable argsort along the last axis of keys given as uint16 ``digits`` (same shape, least
    significant first): one LSD pass per digit, each NumPy's radix sort of uint16 (``np.argsort``
    ``kind="stable"``), the next digit gathered in the order so far. int64 indices, ties by the lower index."""
    order = np.argsort(digits[0], axis=-1, kind="stable")
    if len(digits) == 1 or order.size == 0:
        return order
    d = order.shape[-1]
    flat_order = order.reshape(-1, d)
    off = np.arange(0, flat_order.size, d)[:, None]
    for digit in digits[1:]:
        step = np.argsort(np.take(digit.reshape(-1), flat_order + off), axis=1, kind="stable")
        flat_order = np.take(flat_order.reshape(-1), step + off)
    return flat_order.reshape(order.shape)


def stable_sort_float32(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable ascending sort of each row of float32 ``v`` (N×D, no NaN) by :func:`radix_argsort` of the
    values' order-preserving 32-bit keys (two 16-bit passes, ~2× faster than ``np.sort`` of int64
    keys): the order (N×D int64, ties by the lower index, -0.0 equal to 0.0 as
    ``torch.sort(stable=True)``) and the sorted keys (uint32, equal exactly where the values are)."""
    bits = (v + np.float32(0)).view(np.int32)  # + 0: -0.0 becomes 0.0, which it equals
    key = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).view(np.uint32) ^ np.uint32(1 << 31)
    order = radix_argsort([(key & 0xFFFF).astype(np.uint16), (key >> 16).astype(np.uint16)])
    n, d = v.shape
    return order, np.take(key.reshape(-1), order + np.arange(0, n * d, d)[:, None])


def _average_ranks_numpy(v: np.ndarray) -> np.ndarray:
    """:func:`average_ranks` in NumPy. float32 rows sort by :func:`stable_sort_float32`; the tie
    groups are found on all rows at once (a group start at every row start); a group of ``len``
    starting at row position ``p`` (0-based) has mean rank ``p + 1 + (len - 1) / 2``."""
    n, d = v.shape
    if v.size == 0:
        return np.empty((n, d))
    if v.dtype == np.float32 and np.isfinite(v).all():
        order, s = stable_sort_float32(v)
    else:
        order = np.argsort(v, axis=1)
        s = np.take_along_axis(v, order, 1)
    starts = np.ones((n, d), dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    first = np.flatnonzero(starts)
    mean_rank = np.tile(np.arange(1.0, d + 1), n)  # untied: row position + 1
    length = np.diff(first, append=n * d)
    tied = length > 1
    if length[tied].sum() * 4 > n * d:  # many ties: every group's mean rank, repeated
        mean_rank = np.repeat(mean_rank[first] + (length - 1) * 0.5, length)
    elif tied.any():  # few: overwrite only the tied slots
        start, length = first[tied], length[tied]
        slot = np.repeat(start - (np.cumsum(length) - length), length) + np.arange(length.sum())
        mean_rank[slot] = np.repeat(mean_rank[start] + (length - 1) * 0.5, length)
    ranks = np.empty(n * d)
    ranks[(order + np.arange(0, n * d, d)[:, None]).ravel()] = mean_rank
    return ranks.reshape(n, d)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of the rows of ``a`` and ``b`` (N×D), float64; NaN for a constant row."""
    a, b = a.double(), b.double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.square().sum(1).sqrt() * b.square().sum(1).sqrt())


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of the rows of ``a`` and ``b`` (N×D), float64 (``scipy.stats.spearmanr``)."""
    return pearson(average_ranks(rows(a)), average_ranks(rows(b)))


def ssim(a: Tensor, b: Tensor, win_size: int = 7) -> Tensor:
    """SSIM of the rows of ``a`` and ``b`` read as 1-D signals, as ``skimage.metrics.structural_similarity``
    with its defaults (uniform window of 7, sample covariance, K1=0.01, K2=0.03) and ``data_range`` the
    span of both rows (what Quantus passes)."""
    a, b = rows(a), rows(b)
    dtype = a.dtype if a.dtype == torch.float64 else torch.float32
    a, b = a.to(dtype), b.to(dtype)
    both = torch.cat([a, b], 1)
    span = (both.amax(1) - both.amin(1)).abs().double().to(dtype).unsqueeze(1)
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    # the window never reaches the padding in the part skimage averages, so a valid-mode mean is exact
    # (sums of unfolded windows: avg_pool1d is ~50x slower on CPU)
    mean = lambda t: t.unfold(1, win_size, 1).sum(-1) / win_size  # noqa: E731
    ux, uy = mean(a), mean(b)
    cov = win_size / (win_size - 1)
    vx, vy, vxy = cov * (mean(a * a) - ux * ux), cov * (mean(b * b) - uy * uy), cov * (mean(a * b) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.double().mean(1)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))
