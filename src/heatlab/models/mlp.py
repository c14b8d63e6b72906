"""Fully connected classifiers: paper 003's C for Fashion-MNIST.

``mlp``: Flatten → Linear(D, 128) → ReLU → Linear(128, 64) → ReLU → Linear(64, K) (paper 003,
Table 1), on images ``N×C×H×W`` or tables ``N×F``; ``D`` is the product of ``input_shape`` (one
sample's shape, which ``heatlab train`` fills in from the data and records in the model's spec).
``widths`` changes the hidden layers.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.models.zoo import ModelEntry


class MLP(nn.Module):
    """(N, *input_shape) -> (N, num_classes): Flatten, then Linear-ReLU per hidden width, then Linear."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int]):
        super().__init__()
        self.input_shape = tuple(int(d) for d in input_shape)
        d_in = math.prod(self.input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for w in widths:
            layers += [nn.Linear(d_in, w), nn.ReLU()]
            d_in = w
        layers.append(nn.Linear(d_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise HeatlabError(f"mlp was built for inputs of shape {self.input_shape} per sample, got "
                               f"{tuple(x.shape[1:])}; build it with input_shape= the data's shape.")
        return self.net(x)


def build_mlp(*, num_classes: int, in_channels: int, input_shape: Sequence[int] = (1, 28, 28),
              widths: Sequence[int] = (128, 64)) -> nn.Module:
    """Paper 003's Fashion-MNIST classifier FC128-ReLU-FC64-ReLU-FC(K) on the flattened input."""
    widths = [int(w) for w in widths]
    shape = [int(d) for d in input_shape]
    if not widths or any(w < 1 for w in widths):
        raise HeatlabError(f"widths must be one or more positive layer sizes, got {widths!r}; pass e.g. widths=[128, 64].")
    if not shape or any(d < 1 for d in shape) or (len(shape) == 3 and shape[0] != in_channels):
        raise HeatlabError(f"input_shape {shape} does not fit {in_channels} input channels; pass one sample's shape, "
                           "e.g. input_shape=[1, 28, 28] or [13] for a table.")
    return MLP(shape, num_classes, widths)


#: This family's models (collected by :func:`heatlab.models.zoo.builtin_models`).
MODELS = (
    ModelEntry("mlp", build_mlp),
)
