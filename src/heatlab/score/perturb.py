"""Shared perturbation machinery of the no-truth metrics (:mod:`heatlab.score.faithfulness`).

Shapes: ``x`` is N×C×H×W images or N×F tables; attributions ``a`` N×C×H×W, N×1×H×W or N×H×W
(broadcast to ``x``'s shape as Quantus does) or N×F. Everything is batched over samples and runs on
the model's device.

- Ordering (:func:`order_groups`): features (or groups of them: patches, superpixels) by their
  summed attribution, most relevant first (``"morf"``) or least (``"lerf"``); ties keep the lower
  index first (a stable sort), so the order is deterministic.
- Groups: :func:`patch_groups` (a regular grid, Quantus's padding), :func:`superpixel_groups`
  (scikit-image SLIC per image), :func:`element_groups` (every value of ``x`` its own feature).
- Baselines (:func:`baseline`): what a removed feature becomes, stated and validated:
  ``"black"`` the sample's minimum (black whatever the normalisation; Quantus's meaning),
  ``"white"`` its maximum, ``"mean"`` the per-sample per-channel mean, ``"uniform"`` seeded
  uniform noise between the sample's minimum and maximum, ``"blur"`` a box blur of the image
  (``blur_kernel_size`` 15, images only), a number (e.g. ``0.0``), or a tensor broadcastable to ``x``.
"""

from __future__ import annotations


import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.score._no_truth import stable_sort_float32

BASELINES = ("black", "white", "mean", "uniform", "blur")
ORDERS = ("morf", "lerf")


def check_images(x: Tensor, metric: str) -> None:
    if x.ndim != 4:
        raise HeatlabError(f"{metric} needs N×C×H×W images, got x of shape {tuple(x.shape)}; tables have no pixels.")


def baseline(x: Tensor, kind="black", *, generator: torch.Generator | None = None, blur_kernel_size: int = 15) -> Tensor:
    """The values removed features take, shaped like ``x`` (see the module docstring for the kinds)."""
    flat = x.flatten(1)
    if isinstance(kind, Tensor):
        try:
            kind = kind.to(x.device, x.dtype)
            return (kind.view(-1, *[1] * (x.ndim - 1)) if kind.ndim == 1 else kind).expand_as(x).clone()
        except RuntimeError:
            raise HeatlabError(f"perturb_baseline tensor of shape {tuple(kind.shape)} does not broadcast to x {tuple(x.shape)}.") from None
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        return torch.full_like(x, float(kind))
    view = (-1,) + (1,) * (x.ndim - 1)
    if kind == "black":
        return flat.amin(1).view(view).expand_as(x).clone()
    if kind == "white":
        return flat.amax(1).view(view).expand_as(x).clone()
    if kind == "mean":
        m = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True) if x.ndim == 4 else flat.mean(1, keepdim=True)
        return m.expand_as(x).clone()
    if kind == "uniform":
        lo, hi = flat.amin(1).view(view), flat.amax(1).view(view)
        u = torch.rand(x.shape, generator=generator, dtype=torch.float64, device="cpu").to(x.device, x.dtype)
        return lo + u * (hi - lo)
    if kind == "blur":
        check_images(x, 'perturb_baseline="blur"')
        k = int(blur_kernel_size)
        # k×k box mean over the pixels inside the image, as two 1-D passes (the window is a rectangle)
        rows_ = F.avg_pool2d(x, (k, 1), stride=1, padding=(k // 2, 0), count_include_pad=False)
        return F.avg_pool2d(rows_, (1, k), stride=1, padding=(0, k // 2), count_include_pad=False)[..., : x.shape[2], : x.shape[3]]
    raise HeatlabError(f"Unknown perturb_baseline={kind!r}; pass one of {', '.join(BASELINES)}, a number or a tensor.")


def check_order(order: str) -> str:
    if order not in ORDERS:
        raise HeatlabError(f"Unknown order={order!r}; pass 'morf' (most relevant first) or 'lerf' (least relevant first).")
    return order


def order_groups(scores: Tensor, order: str = "morf") -> Tensor:
    """N×K group indices, first removed first; ties broken by the lower group index (stable sort).
    On the CPU, scores that float32 holds exactly (e.g. float32 heatmaps widened) sort as int64 keys
    (:func:`heatlab.score._no_truth.stable_sort_float32`, ~3× faster than a stable float sort)."""
    check_order(order)
    key = -scores if order == "morf" else scores
    if key.device.type == "cpu" and key.ndim == 2 and key.dtype in (torch.float32, torch.float64) and not key.requires_grad:
        v = key.numpy()
        v32 = v.astype(np.float32)
        keyed = stable_sort_float32(v32) if bool((v32 == v).all()) else None  # NaN != NaN: the torch sort
        if keyed is not None:
            return torch.from_numpy(keyed[0])
    return torch.sort(key, dim=1, stable=True).indices


def ranks_of(groups: Tensor, scores: Tensor, order: str = "morf") -> Tensor:
    """Per element (N×D) the removal rank of its group, from group ids ``groups`` N×D and scores N×K."""
    idx = order_groups(scores, order)
    rank = torch.empty_like(idx)
    rank.scatter_(1, idx, torch.arange(idx.shape[1], device=idx.device).expand_as(idx))
    return rank.gather(1, groups)


def group_sums(values: Tensor, groups: Tensor, k: int) -> Tensor:
    """N×K sums of ``values`` N×D over ``groups`` N×D (ids in [0, k))."""
    return torch.zeros(values.shape[0], k, dtype=values.dtype, device=values.device).scatter_add_(1, groups, values)


def element_groups(x: Tensor) -> tuple[Tensor, int]:
    """Every value of ``x`` its own feature: ids N×D, D."""
    d = x[0].numel()
    return torch.arange(d, device=x.device).expand(x.shape[0], d), d


def patch_groups(x: Tensor, patch_size: int) -> tuple[Tensor, int]:
    """Regular ``patch_size`` grid over H×W as Quantus lays it (the image centred in a grid padded to a
    multiple of the patch); ids N×(C·H·W) in raster order of the grid, and the number of patches."""
    check_images(x, "a patch metric")
    h, w = x.shape[2:]
    if not isinstance(patch_size, int) or patch_size < 1 or patch_size > min(h, w):
        raise HeatlabError(f"patch_size={patch_size} does not fit the {h}×{w} images; pass an integer from 1 to {min(h, w)}.")
    (top, ph), (left, pw) = _padding(h, patch_size), _padding(w, patch_size)
    gh, gw = (h + top + ph) // patch_size, (w + left + pw) // patch_size
    rows = (torch.arange(h, device=x.device) + top) // patch_size
    cols = (torch.arange(w, device=x.device) + left) // patch_size
    ids = (rows[:, None] * gw + cols[None, :]).expand(x.shape[0], x.shape[1], h, w)
    return ids.reshape(x.shape[0], -1), gh * gw


def _padding(dim: int, patch: int) -> tuple[int, int]:
    total = (-dim) % patch
    return total // 2, total - total // 2


def superpixel_groups(x: Tensor, segments: Tensor | None = None, *, n_segments: int = 100) -> tuple[Tensor, Tensor]:
    """Superpixels: ids N×(C·H·W) and the number of segments per sample (N).

    ``segments`` N×H×W integer labels 0..S-1 if given; otherwise scikit-image SLIC per image
    (``slic(img, start_label=0)``, Quantus's default; a CPU loop over images, the one place here).
    """
    check_images(x, "IROF")
    n, c, h, w = x.shape
    if segments is None:
        from skimage.segmentation import slic

        imgs = x.detach().double().cpu().permute(0, 2, 3, 1).numpy()
        segments = torch.stack([torch.from_numpy(slic(img, n_segments=n_segments, start_label=0)) for img in imgs])
    if not isinstance(segments, Tensor) or segments.shape != (n, h, w) or segments.is_floating_point():
        raise HeatlabError(f"segments must be N×H×W integer labels matching x {tuple(x.shape)}.")
    segments = segments.to(x.device, torch.int64)
    counts = segments.flatten(1).amax(1) + 1
    return segments.unsqueeze(1).expand(n, c, h, w).reshape(n, -1), counts


def predict(model: nn.Module, x: Tensor, y: Tensor, *, softmax: bool, batch_size: int) -> Tensor:
    """float64 score of target ``y`` for inputs ``x`` (M×...), M a multiple of len(y) in sample order."""
    reps = x.shape[0] // y.shape[0]
    yy = y.repeat(reps)
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            z = model(x[s : s + batch_size])
            if softmax:
                z = z.softmax(-1)
            out.append(z.gather(1, yy[s : s + batch_size, None])[:, 0])
    return torch.cat(out).double()


def removal_curve(model: nn.Module, x: Tensor, y: Tensor, rank: Tensor, thresholds: list[int], fill: Tensor, *,
                  softmax: bool, batch_size: int, insert: bool = False, window: bool = False) -> Tensor:
    """N×K target scores as features are removed in rank order: step k replaces every element with
    rank < ``thresholds[k]`` by ``fill`` (``insert``: starts from ``fill`` and puts ``x`` back;
    ``window``: only ranks from ``thresholds[k-1]`` (0 for k=0), each step from the original ``x``).
    Several steps share one forward pass, up to ``batch_size`` inputs. Each step edits one buffer at
    the elements whose state changes (:func:`rank_order`), O(changed) instead of O(N·D) per step."""
    n = x.shape[0]
    order, bounds = rank_order(rank.reshape(n, -1), thresholds)
    start, put = (fill, x) if insert else (x, fill)
    start, put = start.expand_as(x).reshape(-1), put.expand_as(x).reshape(-1)
    buf = start.clone()
    done = 0  # the elements order[:done] hold ``put`` (cumulative steps)
    per = max(1, batch_size // n)
    out = []
    for s in range(0, len(thresholds), per):
        chunk = buf.new_empty(min(per, len(thresholds) - s), buf.numel())
        for j, k in enumerate(range(s, s + chunk.shape[0])):
            if window:
                idx = order[bounds[k - 1] if k else 0 : bounds[k]]
                buf[idx] = put[idx]
                chunk[j] = buf
                buf[idx] = start[idx]
                continue
            lo, hi = sorted((done, bounds[k]))
            idx = order[lo:hi]
            buf[idx] = (put if bounds[k] > done else start)[idx]
            done = bounds[k]
            chunk[j] = buf
        out.append(predict(model, chunk.view(-1, *x.shape[1:]), y, softmax=softmax, batch_size=batch_size).view(-1, n))
    return torch.cat(out).T


def rank_order(rank: Tensor, thresholds: list[int]) -> tuple[Tensor, list[int]]:
    """Flat indices into ``rank`` (N×D integers) sorted by rank, and per threshold t how many
    elements have rank < t: the elements below ``thresholds[k]`` are ``order[:bounds[k]]``. On the
    CPU with ranks below 2¹⁶, NumPy's radix sort of uint16 (~10× faster than torch's sort)."""
    flat = rank.reshape(-1)
    if flat.device.type == "cpu" and flat.numel() and 0 <= int(flat.min()) and int(flat.max()) < 1 << 16:
        r16 = flat.numpy().astype(np.uint16)
        below = np.concatenate([[0], np.cumsum(np.bincount(r16))])  # below[t]: how many ranks < t
        return (torch.from_numpy(np.argsort(r16, kind="stable")),
                [int(below[min(max(math.ceil(t), 0), len(below) - 1)]) for t in thresholds])
    sorted_rank, order = torch.sort(flat)
    t = torch.tensor([math.ceil(t) for t in thresholds], dtype=sorted_rank.dtype, device=flat.device)
    return order, torch.searchsorted(sorted_rank, t).tolist()


def trapezoid(curve: Tensor, dx: float = 1.0) -> Tensor:
    """Row-wise trapezoidal area of N×K curves."""
    if curve.shape[1] < 2:
        return torch.zeros(curve.shape[0], dtype=curve.dtype, device=curve.device)
    return torch.trapezoid(curve, dx=dx, dim=1)


def _box121(v: Tensor) -> Tensor:
    """M×H×W sums of each value's 3×3 neighbourhood weighted by the separable [1, 2, 1]² (zero
    outside), by shifted slices (a float64 conv2d with one channel is ~10× slower on CPU). The 8
    neighbours' weighted mean of ROAD (1/6 sideways, 1/12 diagonally) is ``_box121(v) / 12 - v / 3``."""
    p = F.pad(v, (1, 1, 1, 1))
    r = (p[:, :, :-2] + p[:, :, 2:]).add_(p[:, :, 1:-1], alpha=2)
    return (r[:, :-2] + r[:, 2:]).add_(r[:, 1:-1], alpha=2)


def _neighbour_sum(v: Tensor) -> Tensor:
    return _box121(v).mul_(1 / 12).sub_(v, alpha=1 / 3)


def _conjugate_gradients(op, b: Tensor, u: Tensor, stop: Tensor, max_iter: int) -> Tensor:
    """Solves ``op(u) = b`` for M systems at once (M×H×W, ``op`` symmetric positive definite) from
    ``u`` (updated in place) until each system's squared residual is at most its ``stop`` (M×1×1)."""
    dims, tiny = (1, 2), torch.finfo(b.dtype).tiny
    r = b - op(u)
    p = r.clone()
    rs = r.square().sum(dims, keepdim=True)
    for _ in range(max_iter):
        done = rs <= stop
        if bool(done.all()):
            break
        ap = op(p)
        alpha = (rs / (p * ap).sum(dims, keepdim=True).clamp(min=tiny)).masked_fill_(done, 0)
        u.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        rs_new = r.square().sum(dims, keepdim=True)
        p = torch.addcmul(r, rs_new / rs.clamp(min=tiny), p)
        rs = rs_new
    return u


def noisy_linear_imputation(x: Tensor, removed: Tensor, *, noise: float = 0.01, generator: torch.Generator | None = None,
                            tol: float = 1e-10, max_iter: int = 5000) -> Tensor:
    """ROAD's imputation (Rong et al. 2022): each removed pixel becomes the weighted mean of its 8
    neighbours (1/6 sideways, 1/12 diagonally; removed neighbours are unknowns too), plus Gaussian
    noise of std ``noise``. ``x`` N×C×H×W, ``removed`` N×H×W bool. The sparse system (Quantus solves
    it per image with ``spsolve``) is solved for all samples and channels at once, until its float64
    residual is at most ``tol`` times the right-hand side's: starting from the input itself (exact
    where the image is locally linear), by mixed-precision iterative refinement (each round solves
    for the correction in float32 by conjugate gradients, cutting the residual 100-fold, at half
    float64's memory traffic). The system is symmetric positive definite where every removed region
    touches a kept pixel; an image with no kept pixel becomes 0 (noise aside)."""
    n, c, h, w = x.shape
    xd = x.double().reshape(n * c, h, w)
    keep = (~removed.to(x.device)).unsqueeze(1).expand(n, c, h, w).reshape(n * c, h, w)
    diag = _neighbour_sum(torch.ones(1, h, w, dtype=torch.float64, device=x.device))
    b = _neighbour_sum(xd * keep).masked_fill_(keep, 0)
    centre = {torch.float64: diag + 1 / 3, torch.float32: (diag + 1 / 3).float()}

    def op(v: Tensor) -> Tensor:  # diag·v − neighbour sum, on the unknowns
        return torch.addcmul(_box121(v).mul_(-1 / 12), centre[v.dtype], v).masked_fill_(keep, 0)

    dims = (1, 2)
    stop = (tol * b.square().sum(dims, keepdim=True).sqrt()).square()
    u = xd.masked_fill(keep, 0).mul_(stop > 0)  # b = 0: the solution 0 (or, all removed, singular)
    for _ in range(max_iter):
        r = b - op(u)
        rs = r.square().sum(dims, keepdim=True)
        if bool((rs <= stop).all()):
            break
        r32, stop32 = r.float(), torch.maximum(1e-4 * rs, stop).float()
        u += _conjugate_gradients(op, r32, torch.zeros_like(r32), stop32, max_iter).double()
    if noise:
        u = u + noise * torch.randn(u.shape, generator=generator, dtype=torch.float64).to(x.device).masked_fill_(keep, 0)
    out = torch.where(keep, xd, u)
    return out.view(n, c, h, w).to(x.dtype)
