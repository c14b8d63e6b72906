"""Overhead of ``heatlab.explain.attribute`` over calling the Captum class directly.

For every method, on a small CNN (``cellcnn``) at 3×128×128, batch 16, both calls get the same
arguments (explicit targets, the same SHAP baselines); repeats are interleaved (alternating which
goes first) and the median time is compared. The heatlab time includes validation, the
eval-mode/hook bookkeeping and, for the hook-based methods, the attribution-safe model copy.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_attribute.py [--quick]``.
Re-executes itself with glibc's allocator tuned (DESIGN §5) so large frees are not returned to
the kernel on every call; both sides run under the same setting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings
from common import timed  # noqa: E402

_GLIBC = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295"
if os.environ.get("GLIBC_TUNABLES") is None:
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": _GLIBC})

import torch  # noqa: E402
from captum.attr import (  # noqa: E402
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Saliency,
)

from heatlab.explain.attribution import METHODS, attribute  # noqa: E402
from heatlab.explain.methods import shap_baselines  # noqa: E402


def _model(num_classes: int = 10) -> torch.nn.Module:
    try:
        from heatlab.models.zoo import create

        return create("cellcnn", num_classes=num_classes)
    except ImportError:
        from heatlab.models.cellcnn import CellCNN

        return CellCNN(num_classes=num_classes)


def _captum_calls(model, x, t, layer, baselines, n_samples, n_steps, ibs):
    """Method name -> zero-argument call of the Captum class, as a user would write it."""
    size = tuple(x.shape[2:])
    return {
        "Saliency": lambda: Saliency(model).attribute(x, target=t),
        "InputXGradient": lambda: InputXGradient(model).attribute(x, target=t),
        "DeepLift": lambda: DeepLift(model).attribute(x, target=t),
        "DeepLiftShap": lambda: DeepLiftShap(model).attribute(x, baselines=baselines, target=t),
        "GradientShap": lambda: GradientShap(model).attribute(x, baselines=baselines, n_samples=n_samples, target=t),
        "GuidedBackprop": lambda: GuidedBackprop(model).attribute(x, target=t),
        "Deconvolution": lambda: Deconvolution(model).attribute(x, target=t),
        "GuidedGradCam": lambda: GuidedGradCam(model, layer).attribute(x, target=t),
        "LayerGradCam": lambda: LayerAttribution.interpolate(LayerGradCam(model, layer).attribute(x, target=t), size),
        "IntegratedGradients": lambda: IntegratedGradients(model).attribute(
            x, target=t, n_steps=n_steps, internal_batch_size=ibs
        ),
    }



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (batch 2, 32 px, 1 repeat)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # Captum warns on every direct call; printing would be timed
    batch, size, repeats = (2, 32, 1) if args.quick else (16, 128, args.repeats)
    n_baselines = n_samples = 8
    n_steps, ibs = 32, 64

    torch.manual_seed(0)
    model = _model().eval()
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    t = torch.arange(batch) % 10
    layer_name = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))
    layer = dict(model.named_modules())[layer_name]
    baselines = shap_baselines((3, size, size), n_baselines, seed=0)
    direct = _captum_calls(model, x, t, layer, baselines, n_samples, n_steps, ibs)
    extra = {"IntegratedGradients": {"internal_batch_size": ibs}}

    def ours(method):
        return lambda: attribute(
            model, x, method, target=t, n_baselines=n_baselines, n_samples=n_samples, n_steps=n_steps,
            **extra.get(method, {}),
        )

    print(f"threads={torch.get_num_threads()} batch={batch} size={size} repeats={repeats} (median seconds)")
    print(f"{'method':<20} {'captum':>8} {'heatlab':>8} {'overhead':>9}")
    for method in args.methods:
        if method not in direct:
            print(f"{method:<20} (no Captum class to compare with; see bench_lrp.py)")
            continue
        base_fn, our_fn = direct[method], ours(method)
        base_fn(), our_fn()  # warm-up
        base, mine = [], []
        for r in range(repeats):
            pair = [(base, base_fn), (mine, our_fn)]
            for store, fn in pair if r % 2 == 0 else pair[::-1]:
                store.append(timed(fn))
        b, m = statistics.median(base), statistics.median(mine)
        print(f"{method:<20} {b:8.3f} {m:8.3f} {100 * (m / b - 1):+8.1f}%", flush=True)


if __name__ == "__main__":
    main()
