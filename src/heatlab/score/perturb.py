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

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.score._no_truth import radix_argsort, stable_sort_float32

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
    (:func:`heatlab.score._no_truth.stable_sort_float32`, a radix sort, faster than a stable float sort)."""
    check_order(order)
    key = -scores if order == "morf" else scores
    if key.device.type == "cpu" and key.ndim == 2 and key.dtype in (torch.float32, torch.float64) and not key.requires_grad:
        v = key.numpy()
        v32 = v.astype(np.float32)
        if bool((v32 == v).all()):  # NaN != NaN: the torch sort
            return torch.from_numpy(stable_sort_float32(v32)[0])
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
                  softmax: bool, batch_size: int, insert: bool = False, window: bool = False,
                  lengths: Tensor | None = None) -> Tensor:
    """N×K target scores as features are removed in rank order: step k replaces every element with
    rank < ``thresholds[k]`` by ``fill`` (``insert``: starts from ``fill`` and puts ``x`` back;
    ``window``: only ranks from ``thresholds[k-1]`` (0 for k=0), each step from the original ``x``).
    ``lengths`` (N): sample i is forwarded at its first ``lengths[i]`` steps only, its later entries
    are 0. Whole steps share one forward pass, up to ``batch_size`` inputs. Each step edits one
    buffer at the elements whose state changes (:func:`rank_order`), O(changed) instead of O(N·D)."""
    n, steps = x.shape[0], len(thresholds)
    order, bounds = rank_order(rank.reshape(n, -1), thresholds)
    start, put = (fill, x) if insert else (x, fill)
    start, put = start.expand_as(x).reshape(-1), put.expand_as(x).reshape(-1)
    buf = start.clone()
    rows = buf.view(n, -1)
    active = [None] * steps if lengths is None else [(lengths.to(x.device) > k).nonzero()[:, 0] for k in range(steps)]
    out = torch.zeros(steps * n, dtype=torch.float64, device=x.device)
    chunk = buf.new_empty(max(batch_size, n), rows.shape[1])
    everyone = torch.arange(n, device=x.device)
    keys: list[Tensor] = []  # per chunk row: its flat index k·n + i into ``out``
    done = used = 0  # the elements order[:done] hold ``put`` (cumulative steps); chunk rows filled

    def flush():
        key = torch.cat(keys)
        out[key] = predict(model, chunk[:used].view(-1, *x.shape[1:]), y[key % n], softmax=softmax,
                           batch_size=batch_size)
        keys.clear()

    for k in range(steps):
        act = active[k]
        m = n if act is None else len(act)
        if used and used + m > batch_size:
            flush()
            used = 0
        if window:
            idx = order[bounds[k - 1] if k else 0 : bounds[k]]
            buf[idx] = put[idx]
        else:
            lo, hi = sorted((done, bounds[k]))
            idx = order[lo:hi]
            buf[idx] = (put if bounds[k] > done else start)[idx]
            done = bounds[k]
        if act is None:
            chunk[used : used + m] = rows
        else:
            torch.index_select(rows, 0, act, out=chunk[used : used + m])
        keys.append(k * n + (everyone if act is None else act))
        used += m
        if window:
            buf[idx] = start[idx]
    if keys:
        flush()
    return out.view(steps, n).T


def rank_order(rank: Tensor, thresholds: list[int]) -> tuple[Tensor, list[int]]:
    """Flat indices into ``rank`` (N×D integers) sorted by rank, and per threshold t how many
    elements have rank < t: the elements below ``thresholds[k]`` are ``order[:bounds[k]]``. On the
    CPU with ranks below 2¹⁶, NumPy's radix sort of uint16 (~10× faster than torch's sort)."""
    flat = rank.reshape(-1)
    if flat.device.type == "cpu" and flat.numel() and 0 <= int(flat.min()) and int(flat.max()) < 1 << 16:
        r16 = flat.numpy().astype(np.uint16)
        below = np.concatenate([[0], np.cumsum(np.bincount(r16))])  # below[t]: how many ranks < t
        return (torch.from_numpy(radix_argsort([r16])),
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
    """…×H×W sums of each value's 3×3 neighbourhood weighted by the separable [1, 2, 1]² (zero
    outside), by shifted slices (a float64 conv2d with one channel is ~10× slower on CPU). The 8
    neighbours' weighted mean of ROAD (1/6 sideways, 1/12 diagonally) is ``_box121(v) / 12 - v / 3``."""
    p = F.pad(v, (1, 1, 1, 1))
    r = (p[..., :-2] + p[..., 2:]).add_(p[..., 1:-1], alpha=2)
    return (r[..., :-2, :] + r[..., 2:, :]).add_(r[..., 1:-1, :], alpha=2)


def _neighbour_sum(v: Tensor) -> Tensor:
    return _box121(v).mul_(1 / 12).sub_(v, alpha=1 / 3)


_OFFSETS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)]


def _stencil_apply(coef: list[Tensor], v: Tensor) -> Tensor:
    """``sum_d coef[d] · v[· + d]`` over the 9 offsets ``_OFFSETS`` (zero outside); ``coef`` 9 of
    N×1×h×w (shared by the channels), ``v`` N×C×h×w."""
    h, w = v.shape[-2:]
    p = F.pad(v, (1, 1, 1, 1))
    out = coef[4] * v
    for k, (di, dj) in enumerate(_OFFSETS):
        if k != 4:
            out.addcmul_(coef[k], p[..., 1 + di : 1 + di + h, 1 + dj : 1 + dj + w])
    return out


def _prolong(c: Tensor, h: int, w: int) -> Tensor:
    """Bilinear prolongation …×⌈h/2⌉×⌈w/2⌉ → …×h×w: coarse point (I, J) sits on fine (2I, 2J); the
    fine points between take the mean of their 2 or 4 coarse neighbours; past the last coarse row
    or column (h or w even) they copy it, so that constants are reproduced up to the border (where
    the operator is Neumann-like)."""
    hc, wc = c.shape[-2:]
    t = c.new_zeros(*c.shape[:-1], w)  # along the columns
    t[..., 0::2] = c
    t[..., 1 : 2 * wc - 2 : 2] = c[..., :-1] + c[..., 1:]
    t[..., 1 : 2 * wc - 2 : 2].mul_(0.5)
    if w == 2 * wc:
        t[..., -1] = c[..., -1]
    f = c.new_zeros(*c.shape[:-2], h, w)  # along the rows
    f[..., 0::2, :] = t
    torch.add(t[..., :-1, :], t[..., 1:, :], out=f[..., 1 : 2 * hc - 2 : 2, :])
    f[..., 1 : 2 * hc - 2 : 2, :].mul_(0.5)
    if h == 2 * hc:
        f[..., -1, :] = t[..., -1, :]
    return f


def _restrict(f: Tensor) -> Tensor:
    """Full weighting …×h×w → …×⌈h/2⌉×⌈w/2⌉, the transpose of :func:`_prolong`."""
    h, w = f.shape[-2:]
    hc, wc = (h + 1) // 2, (w + 1) // 2
    t = f[..., 0::2, :].clone()  # along the rows
    odd = f[..., 1::2, :].mul(0.5)
    t[..., : hc - 1, :] += odd[..., : hc - 1, :]
    t[..., 1:, :] += odd[..., : hc - 1, :]
    if h == 2 * hc:
        t[..., -1, :] += f[..., -1, :]
    c = t[..., 0::2].clone()  # along the columns
    odd = t[..., 1::2].mul(0.5)
    c[..., : wc - 1] += odd[..., : wc - 1]
    c[..., 1:] += odd[..., : wc - 1]
    if w == 2 * wc:
        c[..., -1] += t[..., -1]
    return c


def _galerkin(apply, n: int, h: int, w: int, like: Tensor) -> list[Tensor]:
    """The 9 stencils (N×1×⌈h/2⌉×⌈w/2⌉ each) of the coarse operator Pᵀ·A·P, with ``apply`` A on N×1×h×w
    and P :func:`_prolong`: A has a 3×3 stencil and P a 3×3 support, so PᵀAP has a 3×3 stencil too, read
    off by probing with the coarse unit vectors 3 apart in each direction (9 probes, batched)."""
    hc, wc = (h + 1) // 2, (w + 1) // 2
    i = torch.arange(hc, device=like.device).view(hc, 1)
    j = torch.arange(wc, device=like.device).view(1, wc)
    colour = ((i % 3) * 3 + j % 3).expand(hc, wc)  # probe of each coarse point
    probes = (colour == torch.arange(9, device=like.device).view(9, 1, 1)).to(like.dtype)  # 9×hc×wc
    e = probes.unsqueeze(0).expand(n, 9, hc, wc)
    y = _restrict(apply(_prolong(e, h, w)))  # N×9×hc×wc: y[:, q, J] = A_c[J, the probe-q point next to J]
    coef = []
    for di, dj in _OFFSETS:  # the entry A_c[J, J + d] sits in the probe of colour(J + d)
        q = (((i + di) % 3) * 3 + (j + dj) % 3).expand(hc, wc)
        inside = ((i + di >= 0) & (i + di < hc) & (j + dj >= 0) & (j + dj < wc)).expand(hc, wc)
        coef.append(y.gather(1, q.expand(n, 1, hc, wc)).mul_(inside))
    return coef


def _dense_pinv(coef: list[Tensor]) -> Tensor:
    """N×1×K×K pseudo-inverse (computed in float64) of the symmetric operator with stencils ``coef``
    on h×w (K = h·w). A Galerkin operator PᵀAP is singular where P has more coarse points than the removed
    pixels it reaches; the restricted residual lies in its range, so the pseudo-inverse solves exactly."""
    n, _, h, w = coef[4].shape
    k = h * w
    idx = torch.arange(k, device=coef[4].device).view(h, w)
    i = torch.arange(h, device=idx.device).view(h, 1)
    j = torch.arange(w, device=idx.device).view(1, w)
    a = torch.zeros(n, k, k, dtype=coef[4].dtype, device=idx.device)
    for c, (di, dj) in zip(coef, _OFFSETS):
        inside = ((i + di >= 0) & (i + di < h) & (j + dj >= 0) & (j + dj < w)).expand(h, w)
        rows, cols = idx[inside], (idx + di * w + dj)[inside]
        a[:, rows, cols] += c.view(n, k)[:, rows]
    a = a.double()  # float32 stencils: null eigenvalues ~1e-7 relative, real ones far above 1e-5
    return torch.linalg.pinv((a + a.mT) / 2, rtol=1e-5, hermitian=True).to(coef[4].dtype).unsqueeze(1)


class _Multigrid:
    """A symmetric V-cycle for the masked ROAD operator, the preconditioner of conjugate gradients:
    one damped Jacobi sweep before and after the coarse correction, bilinear prolongation into the
    unknowns, Galerkin coarse operators (:func:`_galerkin`) down to at most ``coarsest`` pixels a side,
    a dense (pseudo-)inverse there. Set up and applied in float32. The coarse operators depend on the
    mask only: ``free`` (1 on the unknowns, 0 elsewhere) is N×1×H×W, so the C channels share them."""

    def __init__(self, op, diag: Tensor, free: Tensor, *, coarsest: int = 8, omega: tuple = (1.0, 0.9)):
        """``op`` the masked operator, ``diag`` its 1×1×H×W diagonal; ``omega`` the Jacobi damping on
        the finest grid and on the coarser ones."""
        self.free = free
        n, _, h, w = free.shape
        self.ops, self.shapes = [op], [(h, w)]
        self.dinv = [diag.reciprocal().mul_(omega[0]).mul(free)]  # damped Jacobi: ω / diagonal
        apply = lambda v: op(v * free)  # P maps into the unknowns only
        while len(self.ops) == 1 or min(h, w) > coarsest:
            coef = _galerkin(apply, n, h, w, diag)
            h, w = coef[4].shape[-2:]
            apply = functools.partial(_stencil_apply, coef)
            self.ops.append(apply)
            self.dinv.append(torch.where(coef[4] > 0, omega[1] / coef[4], torch.zeros_like(coef[4])))
            self.shapes.append((h, w))
        self.inverse = _dense_pinv(coef)

    def __call__(self, r: Tensor, level: int = 0) -> Tensor:
        """An approximation of the operator's inverse applied to ``r`` (N×C×h×w at ``level``)."""
        if level == len(self.ops) - 1:
            return (self.inverse @ r.flatten(-2).unsqueeze(-1)).view_as(r)
        op, dinv = self.ops[level], self.dinv[level]
        u = r * dinv
        e = _prolong(self(_restrict(r - op(u)), level + 1), *self.shapes[level])
        u += e.mul_(self.free) if level == 0 else e
        return u.addcmul_(dinv, r - op(u))


def _preconditioned_cg(op, prec, b: Tensor, stop: Tensor, max_iter: int) -> tuple[Tensor, int]:
    """Solves ``op(u) = b`` for N×C systems at once (N×C×H×W, ``op`` symmetric positive definite,
    ``prec`` a symmetric positive definite approximation of its inverse) from 0 until each system's
    squared residual is at most its ``stop`` (N×C×1×1); returns the solution and the iteration count."""
    dims, tiny = (2, 3), torch.finfo(b.dtype).tiny
    u, r = torch.zeros_like(b), b.clone()
    z = prec(r)
    p = z.clone()
    rs = r.square().sum(dims, keepdim=True)
    rz = rs if z is r else (r * z).sum(dims, keepdim=True)  # unpreconditioned: r·z is r·r
    for it in range(max_iter):
        done = rs <= stop
        if bool(done.all()):
            return u, it
        ap = op(p)
        alpha = (rz / (p * ap).sum(dims, keepdim=True).clamp(min=tiny)).masked_fill_(done, 0)
        u.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        rs = r.square().sum(dims, keepdim=True)
        z = prec(r)
        rz_new = rs if z is r else (r * z).sum(dims, keepdim=True)
        p = torch.addcmul(z, rz_new / rz.clamp(min=tiny), p)
        rz = rz_new
    return u, max_iter


_ROUND_REDUCTION = 1e-10  # of the squared residual per float32 round (1e-5 in norm: float32 reaches ~1e-6)
_PLAIN_CG_ITER = 30  # plain CG rounds longer than this switch to multigrid (large removed regions)
_PLAIN_CG_REACH = 4  # multigrid from the start where a removed pixel is farther from every kept one


def _far_from_kept(free: Tensor, reach: int) -> bool:
    """Whether some unknown of ``free`` (N×1×H×W, 1 on the unknowns) is more than ``reach`` pixels
    (in both directions) from every known pixel."""
    k = 2 * reach + 1
    near = F.max_pool2d(F.max_pool2d(1 - free, (1, k), 1, (0, reach)), (k, 1), 1, (reach, 0))
    return bool((near < 0.5).any())


def _identity(r: Tensor) -> Tensor:
    return r


def noisy_linear_imputation(x: Tensor, removed: Tensor, *, noise: float = 0.01, generator: torch.Generator | None = None,
                            tol: float = 1e-10, max_iter: int = 5000) -> Tensor:
    """ROAD's imputation (Rong et al. 2022): each removed pixel becomes the weighted mean of its 8
    neighbours (1/6 sideways, 1/12 diagonally; removed neighbours are unknowns too), plus Gaussian
    noise of std ``noise``. ``x`` N×C×H×W, ``removed`` N×H×W bool. The sparse system (Quantus solves
    it per image with ``spsolve``) is solved for all samples and channels at once, until its float64
    residual is at most ``tol`` times the right-hand side's: starting from the input itself (exact
    where the image is locally linear), by mixed-precision iterative refinement: each round solves
    for the correction in float32 by conjugate gradients, cutting the residual 1e5-fold; plain ones
    where every removed pixel is within ``_PLAIN_CG_REACH`` pixels of a kept one and while a round
    takes at most ``_PLAIN_CG_ITER`` iterations (scattered removed pixels), else preconditioned by
    a multigrid V-cycle (:class:`_Multigrid`), whose iteration count hardly grows
    with the size of the removed regions (MoRF on smooth heatmaps: 10-20 iterations where plain CG
    needs hundreds). The system is symmetric positive definite where the image keeps a pixel; an
    image with no kept pixel becomes 0 (noise aside)."""
    n, _, h, w = x.shape
    xd = x.double()
    kept = (~removed.to(x.device)).unsqueeze(1)  # N×1×H×W, shared by the channels
    keep1 = kept | ~kept.flatten(1).any(1).view(n, 1, 1, 1)  # nothing kept: a singular system, solved as 0
    diag = _neighbour_sum(torch.ones(1, 1, h, w, dtype=torch.float64, device=x.device))
    b = _neighbour_sum(xd * keep1).masked_fill_(keep1, 0)
    centre = {torch.float64: diag + 1 / 3, torch.float32: (diag + 1 / 3).float()}
    free = {dt: (~keep1).to(dt) for dt in centre}  # multiplying by it beats a broadcast masked_fill_ 10-fold

    def op(v: Tensor) -> Tensor:  # diag·v − neighbour sum, on the unknowns
        return torch.addcmul(_box121(v).mul_(-1 / 12), centre[v.dtype], v).mul_(free[v.dtype])

    plain = not _far_from_kept(free[torch.float32], _PLAIN_CG_REACH)  # cheaper where all are near a kept one
    prec = None
    dims = (2, 3)
    stop = (tol * b.square().sum(dims, keepdim=True).sqrt()).square()
    u = xd.masked_fill(keep1, 0).mul_(stop > 0)  # b = 0: the solution 0 (no kept pixel: 0 too)
    for _ in range(max_iter):
        r = b - op(u)
        rs = r.square().sum(dims, keepdim=True)
        if bool((rs <= stop).all()):
            break
        if not plain and prec is None:
            prec = _Multigrid(op, diag.float(), free[torch.float32])
        r32, stop32 = r.float(), torch.maximum(_ROUND_REDUCTION * rs, stop).float()
        du, it = _preconditioned_cg(op, prec or _identity, r32, stop32, _PLAIN_CG_ITER if plain else max_iter)
        plain = plain and it < _PLAIN_CG_ITER
        u += du.double()
    if noise:
        u = u + noise * torch.randn(u.shape, generator=generator, dtype=torch.float64).to(x.device).masked_fill_(kept, 0)
    return torch.where(kept, xd, u).to(x.dtype)
