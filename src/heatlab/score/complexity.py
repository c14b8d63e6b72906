"""Complexity metrics: how concentrated a heatmap is (no model needed).

Each metric has the no-truth signature ``fn(model, x, y, a, *, ..., seed=0) -> float64 N`` and
ignores ``model``, ``x``, ``y`` and ``seed``. ``a``: ``N×...`` heatmaps. As Quantus, ``|a|`` is
taken and each heatmap divided by its maximum first (``abs``, ``normalise``); heatlab normalises
per sample, Quantus per batch, which changes none of the scores but effective complexity's.
"""

from __future__ import annotations


import torch
from torch import Tensor

from heatlab.score._no_truth import check_heatmaps, prepare, rows
from heatlab.score.metric_info import MetricInfo


def sparseness(model, x, y, a: Tensor, *, abs: bool = True, normalise: bool = True, seed: int = 0) -> Tensor:
    """Gini index of the heatmap (Chalasani et al. 2020), in [0, 1): 0 for a uniform map, (d-1)/d for a
    one-hot map of d features. Higher is better (sparser). ``1e-7`` is added as Quantus does."""
    a = check_heatmaps(a)
    v = rows(prepare(a, abs=abs, normalise=normalise)).sort(1).values.double() + 1e-7  # sort before widening
    d = v.shape[1]
    k = torch.arange(1, d + 1, dtype=v.dtype, device=v.device)
    return ((2 * k - d - 1) * v).sum(1) / (d * v.sum(1))


def complexity(model, x, y, a: Tensor, *, abs: bool = True, normalise: bool = True, seed: int = 0) -> Tensor:
    """Entropy of the heatmap's share per feature, ``-Σ p log p`` with ``p = a / Σ|a|`` (Bhatt et al.
    2020); ``log d`` for a uniform map of d features, 0 for a one-hot map. Lower is better."""
    a = check_heatmaps(a)
    v = rows(prepare(a, abs=abs, normalise=normalise)).double()
    p = v / v.abs().sum(1, keepdim=True)
    return -(p * torch.log(p + 1e-12)).sum(1)


def effective_complexity(model, x, y, a: Tensor, *, eps: float = 1e-5, abs: bool = True, normalise: bool = True,
                         seed: int = 0) -> Tensor:
    """Number of features whose (normalised, absolute) relevance exceeds ``eps`` (Nguyen & Martinez 2020).
    Lower is better."""
    a = check_heatmaps(a)
    return (rows(prepare(a, abs=abs, normalise=normalise)) > eps).sum(1).double()


COMPLEXITY = (
    MetricInfo("sparseness", sparseness, True, "complexity", (), "Chalasani et al. 2020"),
    MetricInfo("complexity", complexity, False, "complexity", (), "Bhatt et al. 2020"),
    MetricInfo("effective_complexity", effective_complexity, False, "complexity", (), "Nguyen & Martinez 2020"),
)

__all__ = ["COMPLEXITY", "complexity", "effective_complexity", "sparseness"]
