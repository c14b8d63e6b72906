"""LRP (Zennit rules through heatlab) against one plain gradient on the same model and batch.

A plain gradient (one forward and one backward pass of the target logits, what Saliency costs)
is the floor LRP's one modified backward pass can reach. Measured on ``cellcnn`` at 3×128×128 and
on SmallNet at 1×28×28 (paper 004), batch 16: the same LRP written against Zennit directly
(what Zennit's rules cost by themselves); LRP ``epsilon_plus``; the same with the paper's
filters at three layers; the same recording the relevance at those three layers. Goal (issue 9):
LRP within 1.5× of the gradient, filters adding under 20%.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_lrp.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from common import timed  # noqa: E402

_GLIBC = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295"
if os.environ.get("GLIBC_TUNABLES") is None:
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": _GLIBC})

import torch  # noqa: E402

from heatlab.explain import attribute  # noqa: E402
from heatlab.explain.methods.lrp import RelevanceRecorder  # noqa: E402
from heatlab.models.zoo import create  # noqa: E402


def gradient(model, x, t):
    z = x.detach().requires_grad_()
    out = model(z)
    (g,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), z)
    return g


def zennit_direct(model, x, t):
    """The same LRP written against Zennit directly, as a Zennit user would (no heatlab)."""
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlus

    with EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]).context(model) as modified:
        z = x.detach().requires_grad_()
        out = modified(z)
        start = torch.zeros_like(out).scatter_(1, t[:, None], out.detach().gather(1, t[:, None]))
        (r,) = torch.autograd.grad(out, z, start)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 2, 1 repeat")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    batch, repeats = (2, 1) if args.quick else (16, args.repeats)
    print(f"threads={torch.get_num_threads()} batch={batch} repeats={repeats} (median seconds, ratio to the gradient)")
    for name, shape in (("cellcnn", (3, 128, 128)), ("smallnet", (1, 28, 28))):
        model = create(name, num_classes=10, in_channels=shape[0], seed=0).eval()
        x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(1))
        t = torch.arange(batch) % 10
        convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)][-3:]
        calls = {
            "gradient": lambda: gradient(model, x, t),
            "Zennit directly": lambda: zennit_direct(model, x, t),
            "LRP": lambda: attribute(model, x, "LRP", target=t),
            "LRP + 3 filters": lambda: attribute(model, x, "LRP", target=t, filters={c: "c0.2" for c in convs}),
            "LRP + record 3": lambda: attribute(model, x, "LRP", target=t, record=RelevanceRecorder(convs)),
        }
        for fn in calls.values():
            fn()  # warm-up
        times = {k: [] for k in calls}
        for r in range(repeats):
            for k in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
                times[k].append(timed(calls[k]))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name} {shape}:")
        for k, v in med.items():
            print(f"  {k:<18} {v:8.4f}  {v / med['gradient']:5.2f}x" + (
                f"  (+{100 * (v / med['LRP'] - 1):.0f}% over LRP)" if k.startswith("LRP +") else ""))


if __name__ == "__main__":
    main()
