"""What the metric registry needs to know about one no-truth metric.

The ``faith`` helper defines the same dataclass in :mod:`heatlab.score.perturb`; the two are to be
merged into one (this module has no imports from the rest of heatlab so either side can keep it).
"""

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
    needs: tuple[str, ...]
    source: str
