"""Benchmark of ROAD's noisy linear imputation (``heatlab.score.perturb.noisy_linear_imputation``).

Solvers of the same sparse system (each removed pixel = the weighted mean of its 8 neighbours, 1/6
sideways, 1/12 diagonally), without noise: heatlab's (float32 conjugate gradients in float64 iterative
refinement, preconditioned by a multigrid V-cycle where removed regions are large), the previous
heatlab solver (plain conjugate gradients only, rounds of 100-fold, copied below as the baseline) and scipy's ``spsolve`` per image and channel, as Quantus and
the ROAD authors do it. Images N×3×S×S (smooth random images), MoRF removal of 10, 30, …, 90% of the
pixels by (a) random heatmaps, (b) smooth heatmaps (bilinear-upsampled 8×8 noise: contiguous removed
regions, the hard case), at S = 64 (N=64) and S = 224 (N=8). Prints seconds over the 5 percentages,
ratios, the conjugate-gradient iteration counts (summed over the refinement rounds, per percentage)
and the max |difference| of the imputed images. Run:
``OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_road.py [--quick] [--no-scipy]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F
from common import timed
from torch import Tensor

from heatlab.score import perturb as P

PERCENTAGES = (10, 30, 50, 70, 90)
COUNTS = {"old": [], "new": []}


# --- the previous solver (heatlab before the multigrid preconditioner), the baseline ---------------
def _old_box121(v: Tensor) -> Tensor:
    p = F.pad(v, (1, 1, 1, 1))
    r = (p[:, :, :-2] + p[:, :, 2:]).add_(p[:, :, 1:-1], alpha=2)
    return (r[:, :-2] + r[:, 2:]).add_(r[:, 1:-1], alpha=2)


def _old_neighbour_sum(v: Tensor) -> Tensor:
    return _old_box121(v).mul_(1 / 12).sub_(v, alpha=1 / 3)


def _old_conjugate_gradients(op, b: Tensor, u: Tensor, stop: Tensor, max_iter: int) -> Tensor:
    dims, tiny = (1, 2), torch.finfo(b.dtype).tiny
    r = b - op(u)
    p = r.clone()
    rs = r.square().sum(dims, keepdim=True)
    for it in range(max_iter):
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
    COUNTS["old"][-1] += it
    return u


def old_imputation(x: Tensor, removed: Tensor, tol: float = 1e-10, max_iter: int = 5000) -> Tensor:
    n, c, h, w = x.shape
    xd = x.double().reshape(n * c, h, w)
    keep = (~removed.to(x.device)).unsqueeze(1).expand(n, c, h, w).reshape(n * c, h, w)
    diag = _old_neighbour_sum(torch.ones(1, h, w, dtype=torch.float64, device=x.device))
    b = _old_neighbour_sum(xd * keep).masked_fill_(keep, 0)
    centre = {torch.float64: diag + 1 / 3, torch.float32: (diag + 1 / 3).float()}

    def op(v: Tensor) -> Tensor:
        return torch.addcmul(_old_box121(v).mul_(-1 / 12), centre[v.dtype], v).masked_fill_(keep, 0)

    dims = (1, 2)
    stop = (tol * b.square().sum(dims, keepdim=True).sqrt()).square()
    u = xd.masked_fill(keep, 0).mul_(stop > 0)
    for _ in range(max_iter):
        r = b - op(u)
        rs = r.square().sum(dims, keepdim=True)
        if bool((rs <= stop).all()):
            break
        r32, stop32 = r.float(), torch.maximum(1e-4 * rs, stop).float()
        u += _old_conjugate_gradients(op, r32, torch.zeros_like(r32), stop32, max_iter).double()
    return torch.where(keep, xd, u).view(n, c, h, w).to(x.dtype)


# --- scipy, per image and channel ------------------------------------------------------------------
def scipy_imputation(x: Tensor, removed: Tensor) -> Tensor:
    """The ROAD system per image as a scipy sparse matrix, ``spsolve`` per channel."""
    out = x.double().numpy().copy()
    n, c, h, w = x.shape
    offsets = [(di, dj, 1 / 6 if di == 0 or dj == 0 else 1 / 12) for di in (-1, 0, 1) for dj in (-1, 0, 1)
               if (di, dj) != (0, 0)]
    for s in range(n):
        rem = removed[s].numpy()
        ii, jj = np.nonzero(rem)
        k = len(ii)
        if k == 0:
            continue
        at = -np.ones((h, w), dtype=np.int64)
        at[ii, jj] = np.arange(k)
        rows, cols, vals, diag = [], [], [], np.zeros(k)
        rhs = np.zeros((k, c))
        for di, dj, wt in offsets:
            ni, nj = ii + di, jj + dj
            ok = (ni >= 0) & (ni < h) & (nj >= 0) & (nj < w)
            diag[ok] += wt
            unk = ok.copy()
            unk[ok] = rem[ni[ok], nj[ok]]
            rows.append(np.nonzero(unk)[0]), cols.append(at[ni[unk], nj[unk]]), vals.append(np.full(unk.sum(), -wt))
            known = ok & ~unk
            rhs[known] += wt * out[s][:, ni[known], nj[known]].T
        a = sp.csc_matrix((np.concatenate(vals + [diag]),
                           (np.concatenate(rows + [np.arange(k)]), np.concatenate(cols + [np.arange(k)]))), shape=(k, k))
        for ch in range(c):
            out[s, ch, ii, jj] = spla.spsolve(a, rhs[:, ch])
    return torch.from_numpy(out).to(x.dtype)


# --- data ------------------------------------------------------------------------------------------
def data(n: int, size: int, smooth: bool, seed: int = 0) -> tuple[Tensor, Tensor]:
    """N×3×S×S smooth float64 images and an N×S×S ranking (0 = removed first) of the pixels by a heatmap."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size), mode="bilinear", align_corners=False)
    x = (x + 0.05 * torch.randn(x.shape, generator=g)).double()  # float64: differences show the solvers
    a = torch.rand(n, 1, 8, 8, generator=g) if smooth else torch.rand(n, 1, size, size, generator=g)
    a = F.interpolate(a, size=(size, size), mode="bilinear", align_corners=False).flatten(1)
    rank = a.argsort(1, descending=True).argsort(1).view(n, size, size)
    return x, rank


def run(name: str, fn, x: Tensor, rank: Tensor) -> tuple[float, list[Tensor]]:
    outs = []

    def go():
        for p in PERCENTAGES:
            if name in COUNTS:
                COUNTS[name].append(0)
            outs.append(fn(x, rank < int(rank[0].numel() * p / 100)))

    return timed(go), outs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="N=16 at 64 px, N=2 at 224 px")
    ap.add_argument("--no-scipy", action="store_true", help="skip the (slow) scipy spsolve column")
    args = ap.parse_args()
    torch.set_num_threads(1)
    new_pcg = P._preconditioned_cg

    def counted_pcg(*a, **kw):
        u, it = new_pcg(*a, **kw)
        COUNTS["new"][-1] += it
        return u, it

    P._preconditioned_cg = counted_pcg
    new = lambda x, removed: P.noisy_linear_imputation(x, removed, noise=0.0)
    print(f"{'case':<18}{'heatlab s':>10}{'old s':>9}{'scipy s':>9}{'old/new':>9}{'scipy/new':>10}"
          f"{'max|new-old|':>14}{'max|new-scipy|':>16}  CG iterations new | old (per percentage)")
    for size, n in ((64, 16 if args.quick else 64), (224, 2 if args.quick else 8)):
        for smooth in (False, True):
            x, rank = data(n, size, smooth)
            for counts in COUNTS.values():
                counts.clear()
            t_new, o_new = run("new", new, x, rank)
            t_old, o_old = run("old", old_imputation, x, rank)
            t_sp, o_sp = (float("nan"), None) if args.no_scipy else run("scipy", scipy_imputation, x, rank)
            d_old = max(float((a - b).abs().max()) for a, b in zip(o_new, o_old))
            d_sp = float("nan") if o_sp is None else max(float((a - b).abs().max()) for a, b in zip(o_new, o_sp))
            case = f"{size}px {'smooth' if smooth else 'random'} N={n}"
            print(f"{case:<18}{t_new:>10.3f}{t_old:>9.3f}{t_sp:>9.3f}{t_old / t_new:>9.1f}{t_sp / t_new:>10.1f}"
                  f"{d_old:>14.1e}{d_sp:>16.1e}  {COUNTS['new']} | {COUNTS['old']}", flush=True)


if __name__ == "__main__":
    main()
