"""Training-loop overhead: continuous-mode samples/s on cellcnn at 128 px versus a bare loop.

The bare loop does only forward + backward + Adam step on batches already in memory (the floor).
The candidates are :func:`heatlab.models.training.train_continuous` fed (a) an in-memory tensor
pair (shuffled gather per batch) and (b) a CellSplit on disk (shard decode + gather). Rounds are
interleaved (order rotated) and the printed ratios are medians of per-round ratios, by wall time and
by process CPU time (the latter is less disturbed by other processes sharing the cores).

    .venv/bin/python benchmarks/bench_training.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

# glibc returns blocks over 32 MiB to the kernel on every free; run everything with the same setting.
TUNABLES = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295"
if os.environ.get("GLIBC_TUNABLES") != TUNABLES and not os.environ.get("HEATLAB_BENCH_CHILD"):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": TUNABLES, "HEATLAB_BENCH_CHILD": "1"})

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from heatlab.data.shards import open_split, write_cells  # noqa: E402
from heatlab.models.training import TrainConfig, create_model, train_continuous  # noqa: E402


def bare_loop(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], cfg: TrainConfig) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``; CPU time is less disturbed by other processes."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    shard_size, shards, rounds = (64, 1, 3) if args.quick else (200, 1, 9)
    cfg = TrainConfig(epochs=1, batch_size=32, seed=0)

    with tempfile.TemporaryDirectory() as root:
        write_cells(root, size=128, seed=0, shards={"train": shards}, shard_size=shard_size)
        split = open_split(root, "train")
        n = len(split)
        loaded = [split.load_shard(k) for k in range(split.num_shards)]
        x = torch.cat([s["images"] for s in loaded])
        y = torch.cat([s["labels"] for s in loaded])
        batches = [(x[i : i + cfg.batch_size].clone(), y[i : i + cfg.batch_size].clone()) for i in range(0, n, cfg.batch_size)]
        model = create_model(cfg, num_classes=len(split.class_names))

        candidates = {
            "bare loop (batches in memory)": lambda: bare_loop(model, batches, cfg),
            "train_continuous on tensors": lambda: train_continuous(model, (x, y), cfg),
            "train_continuous on CellSplit": lambda: train_continuous(model, split, cfg),
        }
        bare_loop(model, batches[:2], cfg)  # warm-up
        names = list(candidates)
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotate to avoid order bias
                w, c = timed(candidates[name])
                wall[name].append(w)
                cpu[name].append(c)

    bare = names[0]
    print(f"cellcnn, 128 px, batch {cfg.batch_size}, {n} samples/epoch, {rounds} rounds, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"  {'':32s} {'samples/s (best wall)':>22s} {'ratio to bare: wall':>20s} {'cpu-time':>9s}")
    for name in names:
        ratio_wall = statistics.median(b / w for b, w in zip(wall[bare], wall[name]))
        ratio_cpu = statistics.median(b / c for b, c in zip(cpu[bare], cpu[name]))
        print(f"  {name:32s} {n / min(wall[name]):22.1f} {ratio_wall:20.3f} {ratio_cpu:9.3f}")
    print("  (ratios are medians over rounds of bare time / candidate time: 1.0 = no overhead)")


if __name__ == "__main__":
    main()
