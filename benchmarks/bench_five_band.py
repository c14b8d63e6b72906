"""Benchmark of the five-band score: vectorised ``five_band`` against a per-sample NumPy loop.

Data: synthetic cells' ground truth (``heatlab.data.cells.generate``) and random attributions
that follow the cell loosely (signal + smooth and white noise + exact zeros), channel-adjusted
(``heatlab.explain.postprocess.channel_adjust``) to N×H×W in [-1, 1]. The baseline is the
straightforward loop of the original code: for each sample and each soft threshold, stratify
with ``np.where`` and count TP/FP/FN/TN. The loop runs on a subset and is extrapolated to N
(printed as such); counts and metrics on the subset must be identical. Goal: ≥ 25×.
Single process; set OMP_NUM_THREADS to control threads. ``--quick`` for a smoke run.
"""

import argparse
import time

import numpy as np
import torch

from heatlab.data.cells import generate
from heatlab.explain.postprocess import channel_adjust
from heatlab.score.five_band import METRICS, TRUTH_THRESHOLDS, five_band, soft_thresholds

GOAL = 25.0
COUNTS = ("tp", "fp", "fn", "tn")


def make_data(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(heatmaps N×H×W float32 in [-1, 1], truth N×H×W) for n cells, deterministic in seed."""
    truth = generate(n, size=size, seed=seed).truth
    g = torch.Generator().manual_seed(seed + 1)
    gain = torch.rand(n, 3, 1, 1, generator=g) * 2 - 0.5
    smooth = torch.nn.functional.avg_pool2d(torch.randn(n, 3, size, size, generator=g), 9, 1, 4)
    attr = truth.unsqueeze(1) * gain + 2 * smooth + 0.3 * torch.randn(n, 3, size, size, generator=g)
    attr[torch.rand(attr.shape, generator=g) < 0.2] = 0.0  # exact zeros, as in ReLU-like methods
    return channel_adjust(attr), truth


def numpy_loop(h: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """The straightforward reference: one sample, one threshold at a time."""

    def bands(x, t):
        t1, t2, t3, t4 = t.astype(x.dtype)
        return np.where(x > t4, 2, np.where(x > t3, 1, np.where(x > t2, 0, np.where(x > t1, -1, -2))))

    out = {k: np.zeros((len(h), len(thresholds)), dtype=np.int64) for k in COUNTS}
    out.update({k: np.zeros((len(h), len(thresholds))) for k in METRICS})
    for i in range(len(h)):
        g = bands(truth[i], np.asarray(TRUTH_THRESHOLDS))
        for j, t in enumerate(thresholds):
            b = bands(h[i], t)
            tp = np.sum((g != 0) & (b == g))
            fp = np.sum((g == 0) & (b != 0)) + np.sum((g != 0) & (b != 0) & (b != g))
            fn = np.sum((g != 0) & (b == 0))
            tn = np.sum((g == 0) & (b == 0))
            for k, v in zip(COUNTS, (tp, fp, fn, tn)):
                out[k][i, j] = v
            out["precision"][i, j] = tp / (tp + fp + 1e-6)
            out["recall"][i, j] = tp / (tp + fn + 1e-6)
            out["fpr"][i, j] = fp / (fp + tn + 1e-6)
            out["accuracy"][i, j] = np.mean(b == g)
    return out


def best_of(repeats: int, fn):
    """(best wall seconds, best CPU seconds of this process, result) over ``repeats`` runs."""
    wall, cpu, result = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--n", type=int, default=1600, help="heatmaps (default 1600)")
    parser.add_argument("--loop-subset", type=int, default=48, help="heatmaps for the NumPy loop")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n, subset = (160, 8) if args.quick else (args.n, min(args.loop_subset, args.n))
    print(f"torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} thread(s)")
    h, truth = make_data(n, args.size, args.seed)
    print(f"data: {n} heatmaps {args.size}x{args.size}, {int((truth.flatten(1) > 0).any(1).sum())} with a cell")

    ok = True
    for variant in ("standard", "clamp"):
        thresholds = soft_thresholds(variant)
        fast_s, fast_cpu, result = best_of(3, lambda: five_band(h, truth, variant=variant))
        loop_s, loop_cpu, ref = best_of(
            1, lambda: numpy_loop(h[:subset].numpy(), truth[:subset].numpy(), thresholds.numpy())
        )
        loop_total = loop_s / subset * n
        same_counts = all(np.array_equal(getattr(result, k)[:subset].numpy(), ref[k]) for k in COUNTS)
        max_diff = max(float(np.abs(getattr(result, k)[:subset].numpy() - ref[k]).max()) for k in METRICS)
        ratio = loop_total / fast_s
        ok &= same_counts and max_diff == 0.0 and ratio >= GOAL
        print(
            f"{variant:8s} T={len(thresholds)}: five_band {fast_s:7.3f} s for {n} "
            f"({fast_s / n * 1e3:6.3f} ms/heatmap); NumPy loop {loop_s / subset * 1e3:6.2f} ms/heatmap "
            f"(timed on {subset}, extrapolated to {loop_total:7.1f} s for {n}); ratio {ratio:6.1f}x "
            f"vs goal {GOAL:.0f}x (CPU-time ratio {loop_cpu / subset * n / fast_cpu:.1f}x); "
            f"counts identical: {same_counts}; metrics max |diff| {max_diff:.1e}"
        )
    print("PASS" if ok else "BELOW GOAL OR MISMATCH")


if __name__ == "__main__":
    main()
