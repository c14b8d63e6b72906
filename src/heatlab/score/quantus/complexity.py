"""Complexity metrics (:mod:`heatlab.score.complexity`) as Quantus 0.6 calls them; no model needed."""

from __future__ import annotations

import numpy as np

from heatlab.score import complexity as _complexity
from heatlab.score.quantus._base import QuantusMetric, floats


class _Complexity(QuantusMetric):
    fn = staticmethod(_complexity.sparseness)
    abs_default = True
    heatmap_dtype = np.float32
    needs_model = False

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        return floats(type(self).fn(None, None, None, a, abs=False, normalise=False, **self.kw))


class Sparseness(_Complexity):
    """Gini index of |a| (Chalasani et al. 2020). Higher is better."""

    fn = staticmethod(_complexity.sparseness)


class Complexity(_Complexity):
    """Entropy of the relevance shares (Bhatt et al. 2020). Lower is better."""

    fn = staticmethod(_complexity.complexity)


class EffectiveComplexity(_Complexity):
    """Number of features above ``eps`` (Nguyen & Martinez 2020). Lower is better."""

    options = {"eps": 1e-5}

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        return [int(v) for v in _complexity.effective_complexity(None, None, None, a, abs=False, normalise=False,
                                                                  **self.kw)]


__all__ = ["Complexity", "EffectiveComplexity", "Sparseness"]
