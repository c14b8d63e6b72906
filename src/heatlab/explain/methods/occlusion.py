"""Occlusion: the drop of the target logit when a sliding window is set to the baseline (Captum ``Occlusion``).

Defaults (see :mod:`heatlab.explain.methods._perturbation`): images slide a ``C×s×s`` window,
``s = ceil(min(H, W) / 8)``, with stride ``ceil(s / 2)`` (225 forward passes per 128-px image);
other inputs occlude one element at a time. Deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from captum.attr import Occlusion
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.explain.methods._perturbation import check_count, is_image, patch_side
from heatlab.explain.methods.common import MethodSpec, Options, Run, per_sample


@dataclass(frozen=True)
class OcclusionOptions(Options):
    """``patch_size``: the image window side (default ``ceil(min(H, W) / 8)``); Captum's
    ``sliding_window_shapes`` and ``strides`` override it (shapes of one sample, e.g. ``(3, 16, 16)``);
    ``baselines`` the occluding value (default 0; broadcastable or ``N×...``);
    ``perturbations_per_eval`` windows per forward pass."""

    patch_size: int | None = None
    sliding_window_shapes: tuple[int, ...] | None = None
    strides: int | tuple[int, ...] | None = None
    baselines: Tensor | float | None = per_sample()
    perturbations_per_eval: int = 16


def window(inputs: Tensor, o: OcclusionOptions) -> tuple[tuple[int, ...], int | tuple[int, ...]]:
    """``(sliding_window_shapes, strides)`` for ``inputs`` (checked against one sample's shape)."""
    shape = tuple(inputs.shape[1:])
    if o.sliding_window_shapes is not None:
        win = tuple(o.sliding_window_shapes)
        if len(win) != len(shape) or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in win):
            raise HeatlabError(f"sliding_window_shapes must be {len(shape)} positive integers (one sample's "
                               f"dims {shape}), got {o.sliding_window_shapes!r}.")
        if any(w > s for w, s in zip(win, shape)):
            raise HeatlabError(f"sliding_window_shapes {win} is larger than one sample {shape}; pass a window "
                               "that fits inside it.")
        return win, 1 if o.strides is None else o.strides
    if not is_image(inputs):
        if o.patch_size is not None:
            raise HeatlabError("patch_size applies to N×C×H×W images only; pass sliding_window_shapes instead.")
        return (1,) * len(shape), 1 if o.strides is None else o.strides
    s = patch_side(inputs, o.patch_size)
    return (shape[0], s, s), (1, math.ceil(s / 2), math.ceil(s / 2)) if o.strides is None else o.strides


@contextmanager
def build(model: nn.Module, options: OcclusionOptions, inputs: Tensor) -> Iterator[Run]:
    check_count("perturbations_per_eval", options.perturbations_per_eval)
    win, strides = window(inputs, options)
    occ = Occlusion(model)

    def run(x: Tensor, target: Tensor, o: OcclusionOptions) -> Tensor:
        return occ.attribute(x, sliding_window_shapes=win, strides=strides, baselines=o.baselines, target=target,
                             perturbations_per_eval=o.perturbations_per_eval)

    yield run


SPEC = MethodSpec("Occlusion", build, OcclusionOptions)
