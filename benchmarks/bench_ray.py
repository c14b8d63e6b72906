"""The Ray backend against the local backend on the same evaluate units, and on training.

One run (cellcnn trained briefly on cells), one evaluate of the same units three times from a
clean copy, measured in the same process: the local backend, Ray with 1 worker, Ray with 2
workers (a local cluster, started once before timing). Two unit sizes: small units (Saliency, a
few ms of work per sample) and large units (IntegratedGradients, n_steps 32). Prints units per
second, the ratios to local, the seconds Ray's workers take to start (once per run: a fresh
process imports torch and heatlab) and Ray's extra time per unit after that ((Ray 1 worker −
start − local) / units): that overhead stops mattering where it is small against a unit's time.

``--train``: training instead (the base model, then ``--branches`` branch units, which Ray trains in
parallel): seconds for local, Ray x1 and Ray x2, and whether every weights file is byte-identical to
the local run's.

Run: ``.venv/bin/python benchmarks/bench_ray.py [--quick] [--train]`` (needs ``pip install 'heatlab[ray]'``).
With 2 CPU cores, 2 Ray workers compete with the driver; the speed-up needs more cores or nodes.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import timed  # noqa: E402

import ray  # noqa: E402

from heatlab.data.shards import write_cells  # noqa: E402
from heatlab.models.training import TrainConfig  # noqa: E402
from heatlab.run.evaluate import evaluate_run  # noqa: E402
from heatlab.run.runner import make_backend  # noqa: E402
from heatlab.run.training import train_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer and smaller shards")
    parser.add_argument("--train", action="store_true", help="time training (base + branches) instead of evaluate")
    parser.add_argument("--branches", type=int, default=4, help="branches to train (with --train)")
    args = parser.parse_args()
    if args.train:
        return bench_train(args.branches, args.quick)
    shards, shard_size = (4, 10) if args.quick else (8, 25)
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        write_cells(root / "data", size=64, seed=0, shards={"train": 2, "val": 1, "test": shards}, shard_size=shard_size)
        train_run(root / "data", root / "run", TrainConfig(epochs=1, branches=1, branch_epochs=1, batch_size=10, n_l=1))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        for method in ("Saliency", "IntegratedGradients"):
            times, startup = {}, {}
            for name, backend in (("local", lambda: None), ("ray x1", lambda: make_backend("ray", workers=1)),
                                  ("ray x2", lambda: make_backend("ray", workers=2))):
                run = root / f"run-{method}-{name.replace(' ', '')}"
                shutil.copytree(root / "run", run)
                b = backend()
                times[name] = timed(lambda: evaluate_run(run, methods=method, batch_size=25, backend=b))
                startup[name] = b.summary()["startup_seconds"] if b is not None else 0.0
            local = times["local"]
            print(f"{method}: {shards} units of {shard_size} samples")
            for name, t in times.items():
                print(f"  {name:7s} {t:6.2f} s  {shards / t:6.2f} units/s  {t / local:5.2f}x local")
            per_unit = local / shards
            per_unit_extra = (times["ray x1"] - startup["ray x1"] - local) / shards
            print(f"  local {per_unit:.3f} s per unit; Ray x1: {startup['ray x1']:.2f} s to start the worker (once "
                  f"per run), then {per_unit_extra:+.3f} s per unit ({per_unit_extra / per_unit:+.0%} of a unit)")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def bench_train(branches: int, quick: bool) -> None:
    import hashlib

    config = TrainConfig(epochs=1, branches=branches, branch_epochs=2 if quick else 5, batch_size=10, eval_every=100, n_l=1)
    root = Path(tempfile.mkdtemp(prefix="bench-ray-train-"))
    try:
        write_cells(root / "data", size=64, seed=0, shards={"train": 4, "val": 1, "test": 1}, shard_size=25)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        times, sums = {}, {}
        for name, backend in (("local", lambda: None), ("ray x1", lambda: make_backend("ray", workers=1)),
                              ("ray x2", lambda: make_backend("ray", workers=2))):
            run = root / name.replace(" ", "")
            b = backend()
            times[name] = timed(lambda: train_run(root / "data", run, config, backend=b))
            sums[name] = {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.glob("model/*/weights.safetensors")}
            start = f", workers started in {b.summary()['startup_seconds']:.1f} s" if b is not None else ""
            print(f"train {1 + branches} units ({branches} branches): {name:7s} {times[name]:6.2f} s "
                  f"{times[name] / times['local']:5.2f}x local{start}; weights identical to local: {sums[name] == sums['local']}")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
