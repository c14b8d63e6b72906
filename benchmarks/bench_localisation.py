"""Benchmark of heatlab's localisation metrics against Quantus's, on the same heatmaps and masks.

Data as in ``bench_five_band.py`` (cells' truth, channel-adjusted random attributions). heatlab:
one ``localisation_metrics(h, truth)`` call (all four metrics × feature and cell masks, truth
validation included). Quantus: its ``PointingGame``, ``RelevanceMassAccuracy``,
``RelevanceRankAccuracy`` and ``AUC`` with default settings, called once per mask, on a subset
and extrapolated to N (printed as such). Prints the max |difference| per metric on samples where
both are finite, NaN disagreements, and the speed ratio against the goal of 20×.
Quantus is a benchmark-only dependency: without it this prints a message and exits 0.
Single process; set OMP_NUM_THREADS to control threads. ``--quick`` for a smoke run.
"""

import argparse
import time
import warnings

import numpy as np
import torch

from bench_five_band import best_of, make_data
from heatlab.score.localisation import MASKS, localisation_metrics

GOAL = 20.0
QUANTUS_CLASSES = {
    "pointing_game": "PointingGame",
    "relevance_mass_accuracy": "RelevanceMassAccuracy",
    "relevance_rank_accuracy": "RelevanceRankAccuracy",
    "auc": "AUC",
}


def quantus_scores(quantus, h: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Quantus's default metrics on N×1×H×W arrays; one call per metric and mask."""
    out = {}
    y = np.zeros(len(h), dtype=np.int64)
    for name, cls in QUANTUS_CLASSES.items():
        for mask_name, mask in masks.items():
            metric = getattr(quantus, cls)(disable_warnings=True, display_progressbar=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # empty masks and undefined AUCs warn per sample
                scores = metric(
                    model=None, x_batch=h, y_batch=y, a_batch=h, s_batch=mask, channel_first=True,
                    explain_func=None, explain_func_kwargs=None, model_predict_kwargs=None, softmax=None,
                )
            out[f"{name}/{mask_name}"] = np.asarray(scores, dtype=np.float64)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--n", type=int, default=1600, help="heatmaps (default 1600)")
    parser.add_argument("--quantus-subset", type=int, default=320, help="heatmaps for Quantus")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        import quantus
    except ImportError:
        print("Quantus is not installed; this benchmark needs it (pip install quantus). Skipping.")
        return
    n, subset = (160, 32) if args.quick else (args.n, min(args.quantus_subset, args.n))
    print(f"torch {torch.__version__}, quantus {quantus.__version__}, {torch.get_num_threads()} thread(s)")
    h, truth = make_data(n, args.size, args.seed)
    print(f"data: {n} heatmaps {args.size}x{args.size}, {int((truth.flatten(1) > 0).any(1).sum())} with a cell")

    ours_s, ours_cpu, ours = best_of(3, lambda: localisation_metrics(h, truth))
    sub_h = h[:subset].unsqueeze(1).numpy()
    sub_masks = {"feature": (truth[:subset] == 0.9), "cell": (truth[:subset] > 0)}
    sub_masks = {k: v.unsqueeze(1).numpy().astype(np.float32) for k, v in sub_masks.items()}
    theirs_s, theirs_cpu, theirs = best_of(1, lambda: quantus_scores(quantus, sub_h, sub_masks))
    theirs_total = theirs_s / subset * n

    print(f"{'metric/mask':34s} {'max |diff|':>11s} {'max rel diff':>12s} {'NaN disagree':>12s}  note")
    for key in (f"{name}/{m}" for m in MASKS for name in QUANTUS_CLASSES):
        a, b = ours[key][:subset].numpy(), theirs[key]
        both = np.isfinite(a) & np.isfinite(b)
        diff = float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0
        rel = float((np.abs(a[both] - b[both]) / np.maximum(np.abs(a[both]), 1e-12)).max()) if both.any() else 0.0
        disagree = int((np.isnan(a) != np.isnan(b)).sum())
        note = "Quantus: empty mask -> 1.0 (NaN written into a bool array)" if disagree and "pointing" in key else ""
        print(f"{key:34s} {diff:11.2e} {rel:12.2e} {disagree:12d}  {note}")
    ratio = theirs_total / ours_s
    print(
        f"heatlab localisation_metrics: {ours_s:.3f} s for {n} (8 scores each); Quantus: {theirs_s:.2f} s "
        f"for {subset}, extrapolated to {theirs_total:.1f} s for {n}; ratio {ratio:.1f}x vs goal {GOAL:.0f}x "
        f"(CPU-time ratio {theirs_cpu / subset * n / ours_cpu:.1f}x)"
    )
    print("relevance_mass_accuracy: Quantus sums in float32, heatlab in float64; the ratio amplifies")
    print("  that rounding where the total relevance is near 0.")
    print("PASS" if ratio >= GOAL else "BELOW GOAL")


if __name__ == "__main__":
    main()
