"""What the perturbation methods (Occlusion, FeatureAblation, KernelShap, Lime) share.

Default features, sized for 2 CPU cores:

- images (``N×C×H×W``): square patches of side ``patch_size`` (default ``ceil(min(H, W) / 8)``,
  an 8×8 grid on a square image), all channels of a patch together; Occlusion slides a
  ``C×s×s`` window with stride ``ceil(s / 2)``;
- any other ``N×...`` (tables ``N×F``): one feature per element (Occlusion: a window of one
  element, stride 1).

KernelShap and Lime draw their perturbations from the global torch RNG inside Captum; heatlab runs
them one sample at a time inside ``torch.random.fork_rng`` after ``torch.manual_seed(seed)``, so
every sample gets the draws Captum makes for it alone with that seed, a sample's result does not
depend on its batch, and the global RNG is left as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from heatlab.errors import HeatlabError
from heatlab.explain.methods.common import Options, per_sample

#: An image of side S is cut into a grid of about this many patches per side by default.
GRID = 8


def is_image(x: Tensor) -> bool:
    return x.ndim == 4


def patch_side(inputs: Tensor, patch_size: int | None) -> int:
    """The patch (or window) side for ``N×C×H×W`` ``inputs``: ``patch_size`` checked, or the default."""
    h, w = inputs.shape[2:]
    if patch_size is None:
        return max(1, math.ceil(min(h, w) / GRID))
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise HeatlabError(f"patch_size must be a positive integer, got {patch_size!r}; pass e.g. patch_size=8.")
    if patch_size > min(h, w):
        raise HeatlabError(f"patch_size {patch_size} is larger than the {h}×{w} image; pass patch_size <= {min(h, w)}.")
    return patch_size


def default_mask(inputs: Tensor, patch_size: int | None) -> Tensor | None:
    """``1×C×H×W`` LongTensor of patch ids (row-major) for images; ``None`` (Captum's one feature per
    element) otherwise."""
    if not is_image(inputs):
        if patch_size is not None:
            raise HeatlabError("patch_size applies to N×C×H×W images only; drop it for this input.")
        return None
    c, h, w = inputs.shape[1:]
    s = patch_side(inputs, patch_size)
    rows, cols = torch.arange(h) // s, torch.arange(w) // s
    ids = rows[:, None] * (int(cols[-1]) + 1) + cols[None, :]
    return ids.expand(1, c, h, w).contiguous().to(inputs.device)


def check_mask(mask: Tensor, inputs: Tensor) -> Tensor:
    """A user's ``feature_mask``: integer, broadcastable to one sample (``1×...``) or ``N×...``."""
    if mask.is_floating_point() or mask.dtype == torch.bool:
        raise HeatlabError(f"feature_mask must hold integer feature ids, got dtype {mask.dtype}; pass mask.long().")
    if mask.ndim != inputs.ndim or mask.shape[0] not in (1, inputs.shape[0]) or any(
            m not in (1, s) for m, s in zip(mask.shape[1:], inputs.shape[1:])):
        raise HeatlabError(f"feature_mask of shape {tuple(mask.shape)} does not fit inputs of shape "
                           f"{tuple(inputs.shape)}; pass a mask of 1 or N rows that broadcasts to the inputs.")
    return mask


def rows(value, i: int, n: int):
    """Sample ``i``'s row of a per-sample tensor (``n×...``); anything else as it is."""
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == n and n > 1:
        return value[i : i + 1]
    return value


def seeded_per_sample(fn: Callable[[Tensor, Tensor, int], Tensor], x: Tensor, target: Tensor, seed: int) -> Tensor:
    """``cat_i fn(x[i:i+1], target[i:i+1], i)``, each call after ``torch.manual_seed(seed)`` inside a
    forked RNG (the global CPU RNG is restored afterwards)."""
    out = []
    for i in range(x.shape[0]):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out.append(fn(x[i : i + 1], target[i : i + 1], i))
    return torch.cat(out)


def check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HeatlabError(f"{name} must be a positive integer, got {value!r}; pass e.g. {name}=16.")


@dataclass(frozen=True)
class SurrogateOptions(Options):
    """Options of the surrogate-model methods (KernelShap, Lime): ``feature_mask`` (integer ids,
    ``1×...`` or ``N×...``; default patches of side ``patch_size`` on images, one per element
    otherwise); ``baselines`` of absent features (default 0); ``n_samples`` perturbations
    (``attribute``'s argument; default 128); ``perturbations_per_eval`` per forward pass; ``seed``."""

    patch_size: int | None = None
    feature_mask: Tensor | None = per_sample()
    baselines: Tensor | float | None = per_sample()
    n_samples: int = 128
    perturbations_per_eval: int = 16
    seed: int = 0


def surrogate_build(make):
    """``build`` for Captum's KernelShap or Lime, ``make(model, options)`` (options: ``patch_size``,
    ``feature_mask``, ``baselines``, ``n_samples``, ``perturbations_per_eval``, ``seed``), seeded per sample."""
    from contextlib import contextmanager

    @contextmanager
    def build(model, options, inputs: Tensor):
        check_count("n_samples", options.n_samples)
        check_count("perturbations_per_eval", options.perturbations_per_eval)
        default = default_mask(inputs, options.patch_size) if options.feature_mask is None else None
        if options.feature_mask is not None:
            check_mask(options.feature_mask, inputs)
        method = make(model, options)

        def run(x: Tensor, target: Tensor, o) -> Tensor:
            n = x.shape[0]
            mask = default if o.feature_mask is None else o.feature_mask

            def one(xi: Tensor, ti: Tensor, i: int) -> Tensor:
                return method.attribute(xi, baselines=rows(o.baselines, i, n), target=ti,
                                        feature_mask=rows(mask, i, n), n_samples=o.n_samples,
                                        perturbations_per_eval=o.perturbations_per_eval)

            return seeded_per_sample(one, x, target, o.seed)

        yield run

    return build
