"""Benchmark of the randomisation, robustness, complexity and axiomatic metrics: heatlab against
Quantus 0.6 and against the floor, the batched forward/backward passes a metric needs.

Same inputs for all three: a small CNN on 64-pixel RGB images, a batch of 64, Saliency
(``heatlab.explain.explain_func``) as the explanation Quantus re-computes, 10 noise draws for the
robustness metrics. ``rows()`` is the table ``(name, heatlab, quantus, floor)`` (the ``faith``
helper's ``bench_no_truth.py`` has the same shape; floor ``None``: pure array work). Run with
``OMP_NUM_THREADS=1 python benchmarks/bench_no_truth_nt2.py``; Quantus is a benchmark-only
dependency (without it the Quantus column is skipped).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn

from common import timed
from heatlab.explain import attribute, explain_func
from heatlab.score import axiomatic as ax, complexity as cx, randomisation as rz, robustness as rb

N, SIZE, CLASSES, DRAWS = 64, 64, 10, 10
QKW = dict(disable_warnings=True, display_progressbar=False)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 16 * 16, CLASSES)).eval()


def rows():
    """``(name, heatlab, quantus, floor)``: zero-argument callables on one shared set of inputs."""
    try:
        import quantus
    except ImportError:  # pragma: no cover
        quantus = None
    m = model()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(N, 3, SIZE, SIZE, generator=g), torch.randint(CLASSES, (N,), generator=g)
    xn, yn = x.numpy(), y.numpy()
    sal = lambda mm, xx, yy: attribute(mm, xx, "Saliency", target=yy)  # noqa: E731
    a = sal(m, x, y)
    an = a.numpy()
    n_layers = sum(1 for _, mod in m.named_modules() if hasattr(mod, "reset_parameters"))

    def forward(k=1, xx=x):
        with torch.no_grad():
            for _ in range(k):
                m(xx)

    def explains(k, mm=m):
        for _ in range(k):
            sal(mm, x, y)

    def q(cls, **kw):
        if quantus is None:
            return None
        metric = getattr(quantus, cls)(**kw, **QKW)
        call = dict(model=m, x_batch=xn, y_batch=yn, a_batch=an, explain_func=explain_func)

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                metric(**call)
        return run

    rand = copy.deepcopy(m)
    return [
        ("sparseness", lambda: cx.sparseness(m, x, y, a), q("Sparseness"), None),
        ("complexity", lambda: cx.complexity(m, x, y, a), q("Complexity"), None),
        ("effective_complexity", lambda: cx.effective_complexity(m, x, y, a), q("EffectiveComplexity"), None),
        ("completeness", lambda: ax.completeness(m, x, y, a), q("Completeness"), lambda: forward(1, torch.cat([x, x]))),
        ("input_invariance", lambda: ax.input_invariance(m, x, y, a, explain_func=sal), q("InputInvariance"),
         lambda: explains(1)),
        ("mprt", lambda: rz.mprt(m, x, y, a, explain_func=sal), q("MPRT"), lambda: explains(n_layers + 1)),
        ("emprt", lambda: rz.emprt(m, x, y, a, explain_func=sal), q("EfficientMPRT"), lambda: explains(1, rand)),
        ("smprt (5 draws)", lambda: rz.smprt(m, x, y, a, explain_func=sal, nr_samples=5), None,
         lambda: explains(5 * (n_layers + 1))),
        ("random_logit", lambda: rz.random_logit(m, x, y, a, explain_func=sal), q("RandomLogit", num_classes=CLASSES),
         lambda: explains(1)),
        ("max_sensitivity", lambda: rb.max_sensitivity(m, x, y, a, explain_func=sal, nr_samples=DRAWS),
         q("MaxSensitivity", nr_samples=DRAWS), lambda: explains(DRAWS)),
        ("avg_sensitivity", lambda: rb.avg_sensitivity(m, x, y, a, explain_func=sal, nr_samples=DRAWS),
         q("AvgSensitivity", nr_samples=DRAWS), lambda: explains(DRAWS)),
        ("local_lipschitz_estimate", lambda: rb.local_lipschitz_estimate(m, x, y, a, explain_func=sal, nr_samples=DRAWS),
         q("LocalLipschitzEstimate", nr_samples=DRAWS), lambda: explains(DRAWS)),
        ("relative_input_stability", lambda: rb.relative_input_stability(m, x, y, a, explain_func=sal, nr_samples=DRAWS),
         q("RelativeInputStability", nr_samples=DRAWS), lambda: (explains(DRAWS), forward(DRAWS + 1))),
        ("relative_output_stability",
         lambda: rb.relative_output_stability(m, x, y, a, explain_func=sal, nr_samples=DRAWS),
         q("RelativeOutputStability", nr_samples=DRAWS), lambda: (explains(DRAWS), forward(DRAWS + 1))),
        ("relative_representation_stability",
         lambda: rb.relative_representation_stability(m, x, y, a, explain_func=sal, nr_samples=DRAWS),
         q("RelativeRepresentationStability", nr_samples=DRAWS), lambda: (explains(DRAWS), forward(DRAWS + 1))),
    ]


def main() -> None:
    torch.set_num_threads(1)
    print(f"{'metric':36s} {'heatlab s':>10s} {'floor s':>9s} {'quantus s':>10s} {'hl/floor':>9s} {'q/hl':>7s}")
    for name, heatlab, quantus, floor in rows():
        heatlab()  # warm-up
        h = min(timed(heatlab) for _ in range(2))
        f = min(timed(floor) for _ in range(2)) if floor else float("nan")
        qs = timed(quantus) if quantus else float("nan")
        print(f"{name:36s} {h:10.4f} {f:9.4f} {qs:10.4f} {h / f:9.2f} {qs / h:7.1f}", flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
