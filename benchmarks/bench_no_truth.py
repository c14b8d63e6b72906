"""Benchmark of heatlab's no-truth metrics against Quantus 0.6 (or Captum) and against their floor.

One table of rows ``(name, heatlab callable, reference callable or None, floor callable or None,
note)``: the floor is the batched passes the metric needs (``k`` forwards of the N images, batch N, or
``k`` Saliency explanations for the metrics that re-explain, plus a forward per draw where the metric
checks the prediction; None: pure array work), timed on the same model. Data: a small CNN (two conv
layers, 10 classes) at 3×64×64, N=64 smooth random images
(``--quick``: N=16); the faithfulness rows score random N×1×64×64 attributions, the rows that
re-explain (randomisation, robustness, axiomatic, complexity) score Saliency, which Quantus recomputes
with ``heatlab.explain.explain_func``; robustness uses 10 noise draws. Prints seconds, the ratio to the
floor (goal <= 1.2) and the speed-up over the reference, plus the max |difference| of their
per-sample scores where both exist.
To add a metric, append a row to ``rows()``. Run:
``OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_no_truth.py [--quick] [--only mprt,road_morf]``.
Quantus is a benchmark-only dependency: without it the reference column is empty.
"""

from __future__ import annotations

import argparse
import copy
import warnings

import numpy as np
import torch
from torch import nn

from common import timed
from heatlab.explain import attribute, explain_func
from heatlab.score import axiomatic as ax, complexity as cx, faithfulness as fa, randomisation as rz, robustness as rb

GOAL = 1.2
DRAWS = 10


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

    def q(cls, call_kw=None, a_batch=A, **kw):
        if quantus is None:
            return None

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return quantus.__dict__[cls](disable_warnings=True, display_progressbar=False, **kw)(
                    model=model, x_batch=X, y_batch=Y, a_batch=a_batch, channel_first=True, device="cpu",
                    **(call_kw or {}))
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
    return out + explaining_rows(model, x, y, q)


def explaining_rows(model, x, y, q):
    """Rows of the metrics that re-explain (or only read) Saliency heatmaps ``s``."""
    sal = lambda m, xx, yy: attribute(m, xx, "Saliency", target=yy)  # noqa: E731
    s = sal(model, x, y)
    rand = copy.deepcopy(model)

    def explains(k, m=model, and_forwards=0):
        more = forwards(model, x, and_forwards)
        return lambda: ([sal(m, x, y) for _ in range(k)], more())

    def qe(cls, **kw):  # Quantus re-explaining with heatlab's explain_func, on the same Saliency heatmaps
        return q(cls, call_kw={"explain_func": explain_func, "explain_func_kwargs": {"method": "Saliency"}},
                 a_batch=s.numpy(), **kw)

    def draws(fn, k=DRAWS):
        return lambda: fn(model, x, y, s, explain_func=sal, nr_samples=k)

    also = f"{DRAWS} draws"
    # the prediction-change check (on by default) needs a forward of x and of each draw
    stable = also + " + forwards (values differ)"
    return [
        ("sparseness", lambda: cx.sparseness(model, x, y, s), qe("Sparseness"), None, "array work"),
        ("complexity", lambda: cx.complexity(model, x, y, s), qe("Complexity"), None, "array work"),
        ("effective_complexity", lambda: cx.effective_complexity(model, x, y, s), qe("EffectiveComplexity"), None,
         "array work; Quantus normalises per batch"),
        ("completeness", lambda: ax.completeness(model, x, y, s), qe("Completeness"), forwards(model, torch.cat([x, x]), 1),
         "gap vs Quantus's bool"),
        ("input_invariance", lambda: ax.input_invariance(model, x, y, s, explain_func=sal), qe("InputInvariance"),
         explains(1), "gap vs Quantus's bool"),
        ("mprt", lambda: rz.mprt(model, x, y, s, explain_func=sal), qe("MPRT"), explains(1, rand),
         "last layer (one explanation) vs Quantus's dict of all"),
        ("emprt", lambda: rz.emprt(model, x, y, s, explain_func=sal, seed=42), qe("EfficientMPRT"), explains(1, rand),
         "seed 42, as Quantus"),
        ("smprt", lambda: rz.smprt(model, x, y, s, explain_func=sal, nr_samples=5), None,
         explains(5 * 2), "5 draws, original and last layer"),
        ("random_logit", lambda: rz.random_logit(model, x, y, s, explain_func=sal), qe("RandomLogit", num_classes=10),
         explains(1), "other draws of the class"),
        ("max_sensitivity", draws(rb.max_sensitivity), qe("MaxSensitivity", nr_samples=DRAWS), explains(DRAWS),
         also + " (values differ)"),
        ("avg_sensitivity", draws(rb.avg_sensitivity), qe("AvgSensitivity", nr_samples=DRAWS), explains(DRAWS),
         also + " (values differ)"),
        ("local_lipschitz_estimate", draws(rb.local_lipschitz_estimate), qe("LocalLipschitzEstimate", nr_samples=DRAWS),
         explains(DRAWS), also + " (values differ)"),
        ("relative_input_stability", draws(rb.relative_input_stability), qe("RelativeInputStability", nr_samples=DRAWS),
         explains(DRAWS, and_forwards=DRAWS + 1), stable),
        ("relative_output_stability", draws(rb.relative_output_stability),
         qe("RelativeOutputStability", nr_samples=DRAWS), explains(DRAWS, and_forwards=DRAWS + 1), stable),
        ("relative_representation_stability", draws(rb.relative_representation_stability),
         qe("RelativeRepresentationStability", nr_samples=DRAWS), explains(DRAWS, and_forwards=DRAWS + 1),
         stable + "; layer outputs 16x the input"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (16 images, 12 steps)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each metric and floor (best kept)")
    parser.add_argument("--only", default="", help="comma-separated metric names (default: all rows)")
    args = parser.parse_args()
    np.trapz = getattr(np, "trapz", np.trapezoid)  # Quantus 0.6 needs np.trapz (gone in NumPy 2.4)
    np.seterr(all="ignore")
    n = 16 if args.quick else 64
    g = torch.Generator().manual_seed(0)
    model = small_cnn()
    x = nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=64, mode="bilinear")  # smooth: SLIC finds segments
    a = torch.randn(n, 1, 64, 64, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    print(f"small CNN, {n} images 3x64x64, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"{'metric':34s} {'heatlab s':>9s} {'floor s':>8s} {'ratio':>6s} {'ref s':>7s} {'speed-up':>8s} {'max|diff|':>9s}  note")
    worst = 0.0
    only = set(filter(None, args.only.split(",")))
    for name, ours, ref, floor, note in rows(model, x, y, a, args.quick):
        if only and name not in only:
            continue
        result = {}
        ours()  # warm-up
        # alternate the two, best of each: a load that changes during the row hits both alike
        times = [(timed(lambda: result.__setitem__("h", ours())), timed(floor) if floor else float("nan"))
                 for _ in range(args.repeats)]
        ours_s, floor_s = min(t[0] for t in times), min(t[1] for t in times)
        ratio = ours_s / floor_s
        worst = max(worst, ratio) if floor else worst
        ref_s, speed, diff = float("nan"), float("nan"), float("nan")
        if ref is not None:
            ref_s = timed(lambda: result.__setitem__("r", ref()))
            speed = ref_s / ours_s
            r, h = result["r"], result["h"].numpy()
            r = np.asarray(r, dtype=np.float64) if isinstance(r, (list, np.ndarray)) else None
            if r is not None and r.shape == h.shape and " vs " not in note:  # "vs": other kinds of value
                diff = float(np.nanmax(np.abs(r - h)))
        print(f"{name:34s} {ours_s:9.3f} {floor_s:8.3f} {ratio:6.2f} {ref_s:7.2f} {speed:8.1f} {diff:9.1e}  {note}",
              flush=True)
    print(f"worst ratio to floor {worst:.2f} (goal {GOAL})", "PASS" if worst <= GOAL else "ABOVE GOAL")


if __name__ == "__main__":
    main()
