"""Batched GAX against the original one-image-at-a-time loop, and against the forward+backward floor.

Same model (``cellcnn``, 3×128×128, eval mode), same 32 synthetic cells, same number of steps
(the target is unreachable, so every sample runs all of them), measured in the same run:

1. heatlab: ``gax`` on the 32 images at once (frozen classifier, one forward and one backward per
   step for the whole batch), once storing every step's heatmap and once storing none.
2. original style: one image at a time, a generator module with ``W`` and ``b``, ``torch.optim.Adam``,
   ``loss.backward()`` with the classifier's parameters still collecting gradients, and the
   heatmap copied to NumPy every step (as the original code did).
3. floor: ``steps`` × one forward + backward (to the input, parameters frozen) of the model on the
   same batch of 32: what any GAX must at least cost.

Prints the speed-up (goal ≥ 1.5×) and GAX / floor (goal ≤ 1.2×). GAX also runs the baseline pass
f(x) and a last forward to score the final heatmap, two forwards the floor does not have: with
``--quick`` (3 steps) they dominate the ratio, which is only meaningful at the default 20 steps. Run:
``.venv/bin/python benchmarks/bench_gax.py [--quick]`` (threads from OMP_NUM_THREADS). Re-executes
itself with glibc's allocator tuned (DESIGN §5); every variant runs under the same setting.
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
from torch import nn  # noqa: E402

from heatlab.data.cells import generate  # noqa: E402
from heatlab.improve.gax import gax  # noqa: E402
from heatlab.models.zoo import create  # noqa: E402

UNREACHABLE = 1e9


class _Generator(nn.Module):
    """The original's per-image heatmap generator: h = tanh(W⊙x + b)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.W = nn.Parameter(torch.ones(shape))
        self.b = nn.Parameter(torch.full(shape, 0.01))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.W * x + self.b)


def original_style(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int) -> None:
    """The original loop, one image at a time (classifier parameters left requiring gradients)."""
    eps, lam = 1e-4, 100.0
    for i in range(images.shape[0]):
        x = images[i : i + 1]
        with torch.no_grad():
            y = model(x)
        k = torch.full_like(y, -1.0 / (y.shape[1] - 1))
        k[0, labels[i]] = 1.0
        gen = _Generator(tuple(x.shape[1:]))
        opt = torch.optim.Adam(gen.parameters(), lr=0.1, betas=(0.9, 0.999))
        kept = []
        for t in range(steps + 1):
            gen.zero_grad()
            h = gen(x)
            co = ((model(x + h) - y) * k).sum()
            kept.append(h.detach().cpu().numpy())
            if co.item() >= UNREACHABLE or t == steps:
                break
            loss = -co + lam / torch.mean((h - x + eps) ** 2 / (x + eps))
            loss.backward()
            opt.step()


def floor(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int) -> None:
    """``steps`` bare forward+backward passes to the input on the whole batch, parameters frozen."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    x = images.clone().requires_grad_(True)
    for _ in range(steps):
        out = model(x)
        (grad,) = torch.autograd.grad(out.gather(1, labels.view(-1, 1)).sum(), x)
    for p, f in zip(model.parameters(), flags):
        p.requires_grad_(f)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (8 images, 3 steps, 1 repeat)")
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps per image (default 20, quick 3)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3, quick 1)")
    args = parser.parse_args()
    n = 8 if args.quick else 32
    steps = args.steps or (3 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 3)

    torch.manual_seed(0)
    model = create("cellcnn", num_classes=10, in_channels=3).eval()
    cells = generate(n, size=128, seed=0)
    images, labels = cells.images, cells.labels
    print(f"cellcnn, {n} cells of 3x128x128, {steps} steps, {repeats} repeat(s), torch threads {torch.get_num_threads()}, "
          f"GLIBC_TUNABLES set: {os.environ.get('GLIBC_TUNABLES') == _GLIBC}")

    variants = {
        "heatlab gax, batch of all, every step stored": lambda: gax(model, images, labels, target_co=UNREACHABLE,
                                                                    max_steps=steps, snapshot_every=1),
        "heatlab gax, batch of all, no step stored": lambda: gax(model, images, labels, target_co=UNREACHABLE,
                                                                 max_steps=steps, snapshot_every=steps + 1),
        "original style, one at a time": lambda: original_style(model, images, labels, steps),
        "floor: steps x forward+backward": lambda: floor(model, images, labels, steps),
    }
    floor(model, images[:2], labels[:2], 1)  # warm-up
    times = {name: [] for name in variants}
    for r in range(repeats):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            times[name].append(timed(variants[name]))
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in med.items():
        print(f"  {name:<48s} {t:8.2f} s   ({n * steps / t:6.1f} image-steps/s)")
    base = med["original style, one at a time"]
    fl = med["floor: steps x forward+backward"]
    for name in list(variants)[:2]:
        print(f"{name}: speed-up over the original style {base / med[name]:.2f}x (goal >= 1.5x); "
              f"cost / floor {med[name] / fl:.2f}x (goal <= 1.2x)")


if __name__ == "__main__":
    main()
