"""What the metric registry needs to know about one no-truth metric (each family module lists its
metrics as a tuple of :class:`MetricInfo`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    """One metric: ``fn(model, x, y, a, *, explain_func=None, ..., seed=0) -> float64 N``.

    ``higher_is_better``: the direction; ``family``: faithfulness, randomisation, robustness,
    complexity or axiomatic; ``needs``: what ``fn`` reads beyond the heatmaps (``"model"``,
    ``"explain"`` for an ``explain_func`` that re-explains); ``source``: the paper.
    """

    name: str
    fn: Callable
    higher_is_better: bool
    family: str
    needs: tuple[str, ...] = ("model",)
    source: str = ""
