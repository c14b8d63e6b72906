"""Benchmark of heatlab's no-truth metrics against Quantus 0.6 (or Captum) and against their floor.

One list of rows ``(name, heatlab metric, reference callable or None, needs, note)``; the metric is
``(model, explain_func) -> per-sample scores``. The floor is the forward/backward passes the metric
needs, batched, on the same model. It is measured by **replay**: each metric runs once while a
:class:`Recorder` logs the passes it makes (every forward of the model outside an explanation: its
input batch; every explanation: a copy of the model it was given, x and y), then the floor replays
exactly those passes (no_grad forwards of the recorded batches, the recorded explanations through
the same Saliency call), without the perturbation, imputation and ranking work around them. Why
replay: on the CPU the small CNN's forward time depends on the input's content (max-pooling is data
dependent; 48 forwards of perturbed images took 2.2 to 3.2 s where 48 of the originals took 2.8 s),
so forwards of the original ``x`` are not the passes the metric makes. ``needs`` states what the
metric should need (forwards and Saliency explanations of the N images); a metric that makes more
is flagged (``WASTE``) and its floor replays only the first ``needs`` passes, so the floor never
hides waste. The old nominal floor (``needs`` forwards/explanations of the original ``x``) stays as
a column. Without a floor (``needs`` all zero): pure array work.

Data: a small CNN (two conv layers, 10 classes) at 3×64×64, N=64 smooth random images (``--quick``:
N=16); the faithfulness rows score random N×1×64×64 attributions, the rows that re-explain
(randomisation, robustness, axiomatic, complexity) score Saliency, which Quantus recomputes with
``heatlab.explain.explain_func``; robustness uses 10 noise draws. Timing: per row the metric and
both floors alternate ``--repeats`` times (default 5) and the minimum of each is kept (the least
disturbed run on a shared machine), in this process's CPU seconds (``--clock wall``: wall-clock),
which time-slicing with other processes does not inflate (at one thread on an idle machine the two
agree); the load average is printed in the header, per row and at the end. Prints seconds, the ratio to each floor (goal <= 1.2 against replay), the seconds above the
replay floor (non-pass work), the speed-up over the reference and the max |difference| of their
per-sample scores where both exist. To add a metric, append a row. Run:
``OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_no_truth.py [--quick] [--only mprt,road_morf]``.
Quantus is a benchmark-only dependency: without it the reference column is empty.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from common import timed
from heatlab.explain import attribute, explain_func
from heatlab.score import axiomatic as ax, complexity as cx, faithfulness as fa, randomisation as rz, robustness as rb
from heatlab.score import perturb as P

GOAL = 1.2
DRAWS = 10


class Needs(NamedTuple):
    """The passes a metric needs, in passes of the N images: forwards and Saliency explanations."""

    forwards: float = 0  # IROF: 1 + the mean number of superpixels
    explanations: int = 0


class Row(NamedTuple):
    name: str
    metric: Callable  # (model, explain_func) -> per-sample scores
    ref: Callable | None  # () -> per-sample scores, or None
    needs: Needs
    note: str


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()


def saliency(model, x, y):
    return attribute(model, x, "Saliency", target=y)


class Recorder:
    """Logs the passes a metric makes on ``self.model`` (a copy of ``model``) and ``self.explain``.

    ``forwards``: input batches of the model's forwards outside an explanation (detached clones);
    ``explanations``: ``(model copy, x, y)`` per call of ``self.explain``; ``grad_forwards``: forwards
    outside explanations made with autograd on. The hook is a plain function and the log a closure,
    so the model copies a metric makes (``copy.deepcopy``: MPRT's randomised models) log to the same
    place; a hook, not a wrapper module, so the metrics see the model's own layers (input invariance
    shifts the first one, RRS picks layers by index).
    """

    def __init__(self, model: nn.Module, explain: Callable):
        log = self.log = SimpleNamespace(on=False, depth=0, forwards=[], explanations=[], grad_forwards=0)

        def hook(_module, args):
            if log.on and log.depth == 0:
                log.forwards.append(args[0].detach().clone())
                log.grad_forwards += torch.is_grad_enabled()

        def recording_explain(m, x, y):
            if log.on and log.depth == 0:
                log.explanations.append((copy.deepcopy(m), x.detach().clone(), y.detach().clone()))
            log.depth += 1  # the explanation's own forwards are part of it
            try:
                return explain(m, x, y)
            finally:
                log.depth -= 1

        self.model = copy.deepcopy(model)
        self.model.register_forward_pre_hook(hook)
        self.explain = recording_explain

    def record(self, metric: Callable):
        """``metric(model, explain)`` once, logging its passes; returns its result."""
        self.log.on = True
        try:
            return metric(self.model, self.explain)
        finally:
            self.log.on = False  # replayed copies keep the hook, which then returns at once


def _first(items: list, samples: int, size: Callable) -> list:
    """The first ``samples`` samples of ``items`` (batches), the last one cut to fit."""
    out = []
    for item in items:
        if samples <= 0:
            break
        out.append(item if size(item) <= samples else _cut(item, samples))
        samples -= size(item)
    return out


def _cut(item, k: int):
    return item[:k] if torch.is_tensor(item) else (item[0], item[1][:k], item[2][:k])


def replay_floor(model, explain, log, needs: Needs, n: int) -> tuple[Callable, str, str]:
    """``(floor, passes, flags)``: the floor replays the recorded passes, at most ``needs``' worth;
    ``passes`` says what was recorded (F forwards, E explanations, in passes of the N images) and
    ``flags`` what differs from ``needs``."""
    fw, ex = sum(b.shape[0] for b in log.forwards), sum(e[1].shape[0] for e in log.explanations)  # in samples
    need_fw, need_ex = round(needs.forwards * n), needs.explanations * n
    flags = []
    for what, got, need in (("F", fw, need_fw), ("E", ex, need_ex)):
        if got > need:
            flags.append(f"WASTE +{(got - need) / n:.3g}{what}")
        elif got < need:
            flags.append(f"fewer {what} than stated ({got / n:.3g}<{need / n:.3g})")
    if log.grad_forwards:
        flags.append(f"{log.grad_forwards} forwards with autograd on")
    batches = _first(log.forwards, need_fw, lambda b: b.shape[0])
    explanations = _first(log.explanations, need_ex, lambda e: e[1].shape[0])

    def run():
        with torch.no_grad():
            for b in batches:
                model(b)
        for m, xx, yy in explanations:
            explain(m, xx, yy)

    passes = " ".join(f"{v / n:.3g}{w}" for v, w in ((ex, "E"), (fw, "F")) if v) or "-"
    return run, passes, ", ".join(flags)


def nominal_floor(model, explain, x, y, needs: Needs) -> Callable:
    """The old floor: ``needs`` forwards and explanations of the original ``x``."""
    def run():
        with torch.no_grad():
            for _ in range(round(needs.forwards)):
                model(x)
        for _ in range(needs.explanations):
            explain(model, x, y)
    return run


def rows(model, x, y, a, quick: bool) -> list[Row]:
    """The benchmark's rows; a reference returns per-sample scores or None."""
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

    segments = P.superpixel_groups(x)[1]  # IROF needs a forward per superpixel of each image (and of x)
    steps = 12 if quick else 48  # features_in_step must divide H·W for Quantus: 1024 or 256 values
    fis = d // steps
    out = [
        Row("pixel_flipping", lambda m, e: fa.pixel_flipping(m, x, y, a, features_in_step=fis),
            q("PixelFlipping", features_in_step=fis, return_auc_per_sample=True), Needs(steps), f"{steps} steps"),
        Row("region_perturbation", lambda m, e: fa.region_perturbation(m, x, y, a, patch_size=8, regions_evaluation=20),
            None, Needs(21), "20 regions of 8x8"),
        Row("selectivity", lambda m, e: fa.selectivity(m, x, y, a, patch_size=16), None, Needs(16),
            "16 patches of 16x16"),
        Row("deletion", lambda m, e: fa.deletion(m, x, y, a, n_steps=steps), None, Needs(steps + 1), f"{steps} steps"),
        Row("insertion", lambda m, e: fa.insertion(m, x, y, a, n_steps=steps), None, Needs(steps + 1),
            f"{steps} steps, blur"),
        Row("road_morf", lambda m, e: fa.road(m, x, y, a, percentages=range(10, 100, 20)), None, Needs(5),
            "5 percentages; the noisy linear imputation (a CG solve) is non-pass work by design; "
            "Quantus's ROAD fails on RGB"),
        Row("faithfulness_correlation", lambda m, e: fa.faithfulness_correlation(m, x, y, a, nr_runs=20),
            q("FaithfulnessCorrelation", nr_runs=20, return_aggregate=False), Needs(21),
            "20 runs, random subsets (values differ)"),
        Row("monotonicity_correlation", lambda m, e: fa.monotonicity_correlation(
            m, x, y, a, features_in_step=fis, nr_samples=1, perturb_baseline="black"),
            q("MonotonicityCorrelation", features_in_step=fis, nr_samples=1, perturb_baseline="black"),
            Needs(steps + 1), f"{steps} steps, black"),
        Row("irof", lambda m, e: fa.irof(m, x, y, a), None, Needs(1 + segments.double().mean().item()),
            f"SLIC ({int(segments.min())}-{int(segments.max())} segments, included); Quantus's IROF fails on RGB"),
        Row("infidelity_patches", lambda m, e: fa.infidelity_patches(m, x, y, a, perturb_patch_sizes=[16]),
            q("Infidelity", perturb_patch_sizes=[16], n_perturb_samples=1), Needs(17), "16 patches"),
        Row("non_sensitivity", lambda m, e: fa.non_sensitivity(m, x, y, a, features_in_step=fis), None,
            Needs(steps + 1), f"{steps} steps; Quantus runs only features_in_step=1"),
    ]
    try:
        from captum.metrics import infidelity as captum_infidelity

        noise = 0.1 * torch.randn(10, *x.shape, generator=torch.Generator().manual_seed(0))
        flat = noise.transpose(0, 1).reshape(-1, *x.shape[1:])
        ref = lambda: captum_infidelity(model, lambda inp: (flat, inp - flat), x, a.expand_as(x), target=y,  # noqa: E731
                                        n_perturb_samples=10, max_examples_per_batch=n * 10).numpy()
        out.append(Row("infidelity (Captum)", lambda m, e: fa.infidelity(m, x, y, a, noise=noise), ref, Needs(11),
                       "10 Gaussian draws, same noise"))
    except ImportError:
        pass
    return out + explaining_rows(model, x, y, q)


def explaining_rows(model, x, y, q) -> list[Row]:
    """Rows of the metrics that re-explain (or only read) Saliency heatmaps ``s``."""
    s = saliency(model, x, y)

    def qe(cls, **kw):  # Quantus re-explaining with heatlab's explain_func, on the same Saliency heatmaps
        return q(cls, call_kw={"explain_func": explain_func, "explain_func_kwargs": {"method": "Saliency"}},
                 a_batch=s.numpy(), **kw)

    def draws(fn, k=DRAWS):
        return lambda m, e: fn(m, x, y, s, explain_func=e, nr_samples=k)

    also = f"{DRAWS} draws"
    # the prediction-change check (on by default) needs a forward of x and of each draw
    stable, checked = also + " + forwards (values differ)", Needs(DRAWS + 1, DRAWS)
    return [
        Row("sparseness", lambda m, e: cx.sparseness(m, x, y, s), qe("Sparseness"), Needs(), "array work"),
        Row("complexity", lambda m, e: cx.complexity(m, x, y, s), qe("Complexity"), Needs(), "array work"),
        Row("effective_complexity", lambda m, e: cx.effective_complexity(m, x, y, s), qe("EffectiveComplexity"),
            Needs(), "array work; Quantus normalises per batch"),
        Row("completeness", lambda m, e: ax.completeness(m, x, y, s), qe("Completeness"), Needs(2),
            "x and its baseline; gap vs Quantus's bool"),
        Row("input_invariance", lambda m, e: ax.input_invariance(m, x, y, s, explain_func=e), qe("InputInvariance"),
            Needs(0, 1), "gap vs Quantus's bool"),
        Row("mprt", lambda m, e: rz.mprt(m, x, y, s, explain_func=e), qe("MPRT"), Needs(0, 1),
            "last layer (one explanation) vs Quantus's dict of all"),
        Row("emprt", lambda m, e: rz.emprt(m, x, y, s, explain_func=e, seed=42), qe("EfficientMPRT"), Needs(0, 1),
            "seed 42, as Quantus"),
        Row("smprt", lambda m, e: rz.smprt(m, x, y, s, explain_func=e, nr_samples=5), None, Needs(0, 5 * 2),
            "5 draws, original and last layer"),
        Row("random_logit", lambda m, e: rz.random_logit(m, x, y, s, explain_func=e, num_classes=10), qe("RandomLogit", num_classes=10),
            Needs(0, 1), "other draws of the class; num_classes given, as to Quantus"),
        Row("max_sensitivity", draws(rb.max_sensitivity), qe("MaxSensitivity", nr_samples=DRAWS), Needs(0, DRAWS),
            also + " (values differ)"),
        Row("avg_sensitivity", draws(rb.avg_sensitivity), qe("AvgSensitivity", nr_samples=DRAWS), Needs(0, DRAWS),
            also + " (values differ)"),
        Row("local_lipschitz_estimate", draws(rb.local_lipschitz_estimate),
            qe("LocalLipschitzEstimate", nr_samples=DRAWS), Needs(0, DRAWS), also + " (values differ)"),
        Row("relative_input_stability", draws(rb.relative_input_stability),
            qe("RelativeInputStability", nr_samples=DRAWS), checked, stable),
        Row("relative_output_stability", draws(rb.relative_output_stability),
            qe("RelativeOutputStability", nr_samples=DRAWS), checked, stable),
        Row("relative_representation_stability", draws(rb.relative_representation_stability),
            qe("RelativeRepresentationStability", nr_samples=DRAWS), checked, stable + "; layer outputs 16x the input"),
    ]


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (16 images, 12 steps)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="alternating timed runs of each metric and its floors (the minimum is kept)")
    parser.add_argument("--only", default="", help="comma-separated metric names (default: all rows)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu: this process's CPU time (default; other processes' load barely changes it, and "
                             "at 1 thread on an idle machine it is the wall time); wall: wall-clock time")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    np.trapz = getattr(np, "trapz", np.trapezoid)  # Quantus 0.6 needs np.trapz (gone in NumPy 2.4)
    np.seterr(all="ignore")
    n = 16 if args.quick else 64
    g = torch.Generator().manual_seed(0)
    model = small_cnn()
    x = nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=64, mode="bilinear")  # smooth: SLIC finds segments
    a = torch.randn(n, 1, 64, 64, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    print(f"small CNN, {n} images 3x64x64, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"load average {load()}")
    print(f"{args.clock} seconds: min of {args.repeats} alternating runs of metric, replay floor and nominal floor; "
          f"ratio = heatlab / floor (goal <= {GOAL} against replay); over = heatlab - replay (non-pass work); "
          "passes: recorded E explanations and F forwards of the N images")
    print(f"{'metric':34s} {'heatlab':>8s} {'replay':>7s} {'ratio':>6s} {'over':>6s} {'nominal':>7s} {'ratio':>6s} "
          f"{'ref s':>7s} {'speed-up':>8s} {'max|diff|':>9s} {'passes':>9s} {'load1':>5s}  note")
    above, worst = [], 0.0
    only = set(filter(None, args.only.split(",")))
    for row in rows(model, x, y, a, args.quick):
        if only and row.name not in only:
            continue
        result = {}
        recorder = Recorder(model, saliency)
        recorder.record(row.metric)  # also the warm-up
        replay, passes, flags = replay_floor(model, saliency, recorder.log, row.needs, n)
        nominal = nominal_floor(model, saliency, x, y, row.needs)
        del recorder
        # alternate the three, min of each: a load that changes during the row hits all alike
        times = np.array([(timed(lambda: result.__setitem__("h", row.metric(model, saliency)), clock),
                            timed(replay, clock), timed(nominal, clock)) for _ in range(args.repeats)])
        ours_s, replay_s, nominal_s = times.min(0)
        has_floor = any(row.needs)
        ratio = ours_s / replay_s if has_floor else float("nan")
        nominal_ratio = ours_s / nominal_s if has_floor else float("nan")
        over = ours_s - replay_s if has_floor else ours_s
        if has_floor:
            worst = max(worst, ratio)
            if ratio > GOAL:
                above.append(f"{row.name} {ratio:.2f}x, {over:.2f} s of non-pass work")
        ref_s, speed, diff = float("nan"), float("nan"), float("nan")
        if row.ref is not None:
            ref_s = timed(lambda: result.__setitem__("r", row.ref()), clock)
            speed = ref_s / ours_s
            r, h = result["r"], result["h"].numpy()
            r = np.asarray(r, dtype=np.float64) if isinstance(r, (list, np.ndarray)) else None
            if r is not None and r.shape == h.shape and " vs " not in row.note:  # "vs": other kinds of value
                diff = float(np.nanmax(np.abs(r - h)))
        note = "; ".join(filter(None, (flags, row.note)))
        print(f"{row.name:34s} {ours_s:8.3f} {replay_s:7.3f} {ratio:6.2f} {over:6.2f} {nominal_s:7.3f} "
              f"{nominal_ratio:6.2f} {ref_s:7.2f} {speed:8.1f} {diff:9.1e} {passes:>9s} {os.getloadavg()[0]:5.2f}  "
              f"{note}", flush=True)
    print(f"worst ratio to the replay floor {worst:.2f} (goal {GOAL})", "PASS" if worst <= GOAL else "ABOVE GOAL",
          f"; load average {load()}")
    for line in above:
        print("  above goal:", line)


if __name__ == "__main__":
    main()
