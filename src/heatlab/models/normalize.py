"""Per-channel input standardisation carried by a model: ``Normalize`` and how a builder makes one.

A zoo model that standardises its input keeps a :class:`Normalize` in its ``normalize`` attribute
and applies it first in ``forward``; the buffers are not in the state dict, and the mean/std are in
the model's spec (``normalize=``), so a run rebuilds the same model. Specs (``normalize=``):

- ``None``: no standardisation (the model sees the data as stored);
- ``"imagenet"``: ImageNet's mean/std (what torchvision checkpoints expect; RGB only);
- ``{"mean": [...], "std": [...]}``: one value per input channel (``heatlab train`` computes
  them from the training split with ``--normalize data``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from heatlab.errors import HeatlabError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """(N, C, H, W) -> (x - mean[c]) / std[c]; mean and std are non-persistent buffers."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """The pixels a standardised tensor came from: ``z · std + mean``."""
        return z * self.std + self.mean


def make_normalize(spec: Any, in_channels: int) -> Normalize | None:
    """The :class:`Normalize` of ``spec`` (see the module docstring) for ``in_channels`` channels."""
    if spec is None:
        return None
    if spec == "imagenet":
        if in_channels != 3:
            raise HeatlabError(
                f"normalize='imagenet' needs in_channels=3, got {in_channels}; drop normalize or use RGB input."
            )
        return Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if isinstance(spec, dict) and set(spec) == {"mean", "std"}:
        mean, std = spec["mean"], spec["std"]
        ok = all(isinstance(v, (list, tuple)) and len(v) == in_channels for v in (mean, std)) and all(
            isinstance(a, (int, float)) and math.isfinite(a) for a in (*mean, *std)
        ) and all(s > 0 for s in std)
        if not ok:
            raise HeatlabError(f"normalize needs {in_channels} finite means and {in_channels} positive stds, "
                               f"got {spec!r}; pass e.g. {{'mean': [0.5] * {in_channels}, 'std': [0.25] * {in_channels}}}.")
        return Normalize(tuple(float(m) for m in mean), tuple(float(s) for s in std))
    raise HeatlabError(f"Unknown normalize={spec!r}; use None, 'imagenet' or {{'mean': [...], 'std': [...]}}.")
