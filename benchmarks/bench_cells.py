"""Benchmark of the cell generator: batched ``generate(n)`` against one sample at a time.

Prints cells per second at 128 and 512 px for ``generate(n)`` and for ``generate(1)`` called n
times with the same mix of classes and backgrounds (the same code, no batching), their ratio, and the time for the paper's full split
(6,400 + 1,600 + 1,600 = 9,600 cells at 128 px, as 48 shards of 200) against the 60 s goal.
Single process; set OMP_NUM_THREADS to control threads. Batched and one-at-a-time runs alternate
and the best of a few repeats is kept, since the machine is shared. ``--quick`` for a smoke run.
"""

import argparse

import torch

from heatlab.data import cells
from common import timed  # noqa: E402

GOAL_SECONDS = 60.0
SPLIT_SHARDS, SHARD = 48, 200
MIN = cells.MIN_SIZE



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    cells.generate(4, size=128)  # warm up

    counts = {128: 40, 512: 6} if args.quick else {128: 400, 512: 40}
    repeats = 2 if args.quick else 3  # alternate and keep the best: the machine is shared
    for size, n in counts.items():
        mix = cells.generate(n, size=MIN, seed=1)  # the loop draws the same classes and backgrounds
        one_each = [dict(classes=[int(c)], backgrounds=[int(b)]) for c, b in zip(mix.labels, mix.backgrounds)]
        batched, single = float("inf"), float("inf")
        for _ in range(repeats):
            batched = min(batched, timed(lambda: cells.generate(n, size=size, seed=1)))
            single = min(single, timed(lambda: [cells.generate(1, size=size, seed=i, **kw)
                                                for i, kw in enumerate(one_each)]))
        print(f"{size:4d} px, n={n:4d}: batched {n / batched:8.1f} cells/s, one at a time "
              f"{n / single:8.1f} cells/s, speed-up {single / batched:5.2f}x")

    shards = 4 if args.quick else SPLIT_SHARDS
    seconds = timed(lambda: [cells.generate(SHARD, size=128, seed=s) for s in range(shards)])
    full = seconds * SPLIT_SHARDS / shards
    note = f" (extrapolated from {shards * SHARD} cells)" if shards != SPLIT_SHARDS else ""
    ratio = GOAL_SECONDS / full
    verdict = f"{ratio:.2f}x under it" if ratio >= 1 else f"MISSED by {1 / ratio:.2f}x"
    print(f"full split, {SPLIT_SHARDS * SHARD} cells at 128 px: {full:.1f} s{note}; "
          f"goal {GOAL_SECONDS:.0f} s, {verdict}")

if __name__ == "__main__":
    main()
