"""Benchmark of heatlab's no-truth metrics against Quantus 0.6 (or Captum) and against their floor.

One table of rows ``(name, heatlab callable, reference callable or None, floor callable)``: the floor
is the batched forward passes the metric needs (``k`` forwards of the N images, batch N), timed on
the same model. Data: a small CNN (two conv layers, 10 classes) at 3×64×64, N=64 smooth random images and
attributions (``--quick``: N=16). Prints seconds, the ratio to the floor (goal <= 1.2) and the
speed-up over the reference, plus the max |difference| of their per-sample scores where both exist.
To add a metric, append a row to ``rows()``. Run:
``OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_no_truth.py [--quick]``.
Quantus is a benchmark-only dependency: without it the reference column is empty.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from torch import nn

from common import timed
from heatlab.score import faithfulness as fa

GOAL = 1.2


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()


def forwards(model, x, k):
    def run():
        with torch.no_grad():
            for _ in range(k):
                model(x)
    return run


def rows(model, x, y, a, quick: bool):
    """(name, heatlab, reference, floor, note) rows; reference returns per-sample scores or None."""
    try:
        import quantus
    except ImportError:
        quantus = None
    n, d = x.shape[0], x[0].numel()
    X, Y, A = x.numpy(), y.numpy(), a.numpy()

    def q(cls, call_kw=None, **kw):
        if quantus is None:
            return None

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return quantus.__dict__[cls](disable_warnings=True, **kw)(
                    model=model, x_batch=X, y_batch=Y, a_batch=A, channel_first=True, device="cpu", **(call_kw or {}))
        return run

    steps = 12 if quick else 48  # features_in_step must divide H·W for Quantus: 1024 or 256 values
    fis = d // steps
    out = [
        ("pixel_flipping", lambda: fa.pixel_flipping(model, x, y, a, features_in_step=fis),
         q("PixelFlipping", features_in_step=fis, return_auc_per_sample=True), forwards(model, x, steps), f"{steps} steps"),
        ("region_perturbation", lambda: fa.region_perturbation(model, x, y, a, patch_size=8, regions_evaluation=20),
         None, forwards(model, x, 21), "20 regions of 8x8"),
        ("selectivity", lambda: fa.selectivity(model, x, y, a, patch_size=16),
         None, forwards(model, x, 16), "16 patches of 16x16"),
        ("deletion", lambda: fa.deletion(model, x, y, a, n_steps=steps), None, forwards(model, x, steps + 1),
         f"{steps} steps"),
        ("insertion", lambda: fa.insertion(model, x, y, a, n_steps=steps), None, forwards(model, x, steps + 1),
         f"{steps} steps, blur"),
        ("road_morf", lambda: fa.road(model, x, y, a, percentages=range(10, 100, 20)), None, forwards(model, x, 5),
         "5 percentages; Quantus's ROAD fails on RGB"),
        ("faithfulness_correlation", lambda: fa.faithfulness_correlation(model, x, y, a, nr_runs=20),
         q("FaithfulnessCorrelation", nr_runs=20, return_aggregate=False), forwards(model, x, 21),
         "20 runs, random subsets (values differ)"),
        ("monotonicity_correlation", lambda: fa.monotonicity_correlation(
            model, x, y, a, features_in_step=fis, nr_samples=1, perturb_baseline="black"),
         q("MonotonicityCorrelation", features_in_step=fis, nr_samples=1, perturb_baseline="black"),
         forwards(model, x, steps + 1), f"{steps} steps, black"),
        ("irof", lambda: fa.irof(model, x, y, a), None, forwards(model, x, 100),
         "SLIC (<=100 segments, included); Quantus's IROF fails on RGB"),
        ("infidelity_patches", lambda: fa.infidelity_patches(model, x, y, a, perturb_patch_sizes=[16]),
         q("Infidelity", perturb_patch_sizes=[16], n_perturb_samples=1), forwards(model, x, 17), "16 patches"),
        ("non_sensitivity", lambda: fa.non_sensitivity(model, x, y, a, features_in_step=fis), None,
         forwards(model, x, steps + 1), f"{steps} steps; Quantus runs only features_in_step=1"),
    ]
    try:
        from captum.metrics import infidelity as captum_infidelity

        noise = 0.1 * torch.randn(10, *x.shape, generator=torch.Generator().manual_seed(0))
        flat = noise.transpose(0, 1).reshape(-1, *x.shape[1:])
        ref = lambda: captum_infidelity(model, lambda inp: (flat, inp - flat), x, a.expand_as(x), target=y,  # noqa: E731
                                        n_perturb_samples=10, max_examples_per_batch=n * 10).numpy()
        out.append(("infidelity (Captum)", lambda: fa.infidelity(model, x, y, a, noise=noise), ref,
                    forwards(model, x, 11), "10 Gaussian draws, same noise"))
    except ImportError:
        pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (16 images, 12 steps)")
    args = parser.parse_args()
    np.trapz = getattr(np, "trapz", np.trapezoid)  # Quantus 0.6 needs np.trapz (gone in NumPy 2.4)
    n = 16 if args.quick else 64
    g = torch.Generator().manual_seed(0)
    model = small_cnn()
    x = nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=64, mode="bilinear")  # smooth: SLIC finds segments
    a = torch.randn(n, 1, 64, 64, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    print(f"small CNN, {n} images 3x64x64, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"{'metric':26s} {'heatlab s':>9s} {'floor s':>8s} {'ratio':>6s} {'ref s':>7s} {'speed-up':>8s} {'max|diff|':>9s}  note")
    worst = 0.0
    for name, ours, ref, floor, note in rows(model, x, y, a, args.quick):
        floor_s = min(timed(floor) for _ in range(2))
        result = {}
        ours_s = min(timed(lambda: result.__setitem__("h", ours())) for _ in range(2))
        ratio = ours_s / floor_s
        worst = max(worst, ratio)
        ref_s, speed, diff = float("nan"), float("nan"), float("nan")
        if ref is not None:
            ref_s = timed(lambda: result.__setitem__("r", ref()))
            speed = ref_s / ours_s
            r, h = np.asarray(result["r"], dtype=np.float64), result["h"].numpy()
            if r.shape == h.shape:
                diff = float(np.nanmax(np.abs(r - h)))
        print(f"{name:26s} {ours_s:9.3f} {floor_s:8.3f} {ratio:6.2f} {ref_s:7.2f} {speed:8.1f} {diff:9.1e}  {note}")
    print(f"worst ratio to floor {worst:.2f} (goal {GOAL})", "PASS" if worst <= GOAL else "ABOVE GOAL")


if __name__ == "__main__":
    main()
