"""Paper 003's Mixer: IG cache build and Mixer training against bare forward+backward passes.

Same model (``cellcnn``, 3×128×128, eval mode), same synthetic cells, measured in the same run:

1. IG cache: ``all_mixer_attributions`` for the three settings (true-class, predicted, expected)
   against its floor: as many bare forward+backward passes (to the input, C frozen) of C on the
   same batch as IG needs (n_steps per pass; "predicted" only for the misclassified samples).
2. Mixer training: ``train_mixer`` for a few epochs (hold-out evaluation included) against a plain
   loop of the same networks on the same batches: Mixer forward, C(x⊙M), cross-entropy, backward,
   Adam step, nothing else.

Prints each time and the ratio (goal ≤ 1.3× for both). Run:
``.venv/bin/python benchmarks/bench_mixer.py [--quick]`` (threads from OMP_NUM_THREADS).
Re-executes itself with glibc's allocator tuned (DESIGN §5).
"""

from __future__ import annotations

import argparse
import os
import sys

from common import timed  # noqa: E402

_GLIBC = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295"
if os.environ.get("GLIBC_TUNABLES") is None:
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": _GLIBC})

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from heatlab.data.cells import generate  # noqa: E402
from heatlab.improve.mixer import Mixer, MixerConfig, all_mixer_attributions, holdout_split, train_mixer  # noqa: E402
from heatlab.models.zoo import create  # noqa: E402


def ig_floor(model, x, labels, passes: int, n_steps: int, batch_size: int) -> None:
    """``passes`` × ``n_steps`` forward+backward passes to the input, in IG's chunks."""
    for p in model.parameters():
        p.requires_grad_(False)
    for _ in range(passes * n_steps):
        for lo in range(0, len(x), batch_size):
            xb = x[lo:lo + batch_size].clone().requires_grad_(True)
            torch.autograd.grad(model(xb).gather(1, labels[lo:lo + batch_size, None]).sum(), xb)


def plain_training(model, x, a, y, config: MixerConfig, epochs: int) -> None:
    """The same networks trained with nothing around them: no hold-out pass, no early stopping."""
    mixer = Mixer(tuple(x.shape[1:]))
    opt = torch.optim.Adam(mixer.parameters(), lr=config.lr)
    fit, _ = holdout_split(len(y), config.holdout, config.seed)
    a = a / a.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    for _ in range(epochs):
        for lo in range(0, len(fit), config.batch_size):
            idx = fit[lo:lo + config.batch_size]
            loss = F.cross_entropy(model(x[idx] * mixer(x[idx], a[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (32 cells, 4 IG steps, 1 epoch)")
    args = parser.parse_args()
    n, n_steps, epochs = (32, 4, 1) if args.quick else (200, 16, 3)
    torch.manual_seed(0)
    model = create("cellcnn", num_classes=10, in_channels=3).eval()
    cells = generate(n, size=128, seed=0)
    x, y = cells.images, cells.labels
    print(f"cellcnn, {n} cells of 3x128x128, IG {n_steps} steps, {epochs} Mixer epoch(s), "
          f"torch threads {torch.get_num_threads()}")
    with torch.no_grad():
        wrong = int((model(x).argmax(1) != y).sum())
    found = {}
    t_ig = timed(lambda: found.update(all_mixer_attributions(model, x, y, ["true-class", "predicted", "expected"],
                                                             n_steps=n_steps, batch_size=25)))
    passes = 2 + wrong / n
    t_floor = timed(lambda: ig_floor(model, x, y, 1, n_steps, 25)) * passes
    print(f"  IG cache, 3 settings          {t_ig:7.2f} s   floor ({passes:.2f} passes) {t_floor:7.2f} s   "
          f"ratio {t_ig / t_floor:.2f}x (goal <= 1.3x)")
    config = MixerConfig(epochs=epochs, patience=epochs, batch_size=64)
    a = found["true-class"]
    t_train = timed(lambda: train_mixer(model, x, a, y, config))
    t_plain = timed(lambda: plain_training(model, x, a, y, config, epochs))
    print(f"  Mixer training                {t_train:7.2f} s   plain loop          {t_plain:7.2f} s   "
          f"ratio {t_train / t_plain:.2f}x (goal <= 1.3x); {len(holdout_split(n, 0.3, 0)[0]) * epochs / t_train:.1f} "
          "samples/s")


if __name__ == "__main__":
    main()
