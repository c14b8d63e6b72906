"""Axiomatic metrics as Quantus 0.6 returns them: whether the axiom holds per sample (heatlab's
:mod:`heatlab.score.axiomatic` gives the gap, from the same computations)."""

from __future__ import annotations

import numpy as np
import torch

from heatlab.score import axiomatic as _axiomatic
from heatlab.score.quantus._base import QuantusMetric


class Completeness(QuantusMetric):
    """Whether Σa equals ``output_func(f_y(x) − f_y(x̄))`` exactly, as Quantus compares (Sundararajan
    et al. 2017); :func:`heatlab.score.axiomatic.completeness` gives the gap instead. True is better."""

    options = {"output_func": None, "perturb_baseline": "black"}
    heatmap_dtype = np.float32
    perturb_func_hint = "replaces the whole input by perturb_baseline; pass perturb_func=None"

    def configure(self) -> None:
        _axiomatic.baseline(torch.zeros(1, 1), self.kw["perturb_baseline"])  # validates it

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        total, diff = _axiomatic.completeness_gap(model, x, y, a, **self.kw)
        return [bool(v) for v in (total.float() == diff.float()).cpu()]


class InputInvariance(QuantusMetric):
    """Whether the explanation of the mean-shifted model for the shifted input is close to ``a``
    (``np.isclose``, atol 1e-4) everywhere (Kindermans et al. 2017). True is better."""

    options = {"input_shift": -1}
    normalise_default = False
    heatmap_dtype = np.float32
    needs_explain = True

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        shift = self.kw["input_shift"]
        shifted = explain(_axiomatic.shifted_model(model, x, shift), x + shift, y)
        close = torch.isclose(a.double(), shifted.double(), rtol=1e-5, atol=1e-4)
        return [bool(v) for v in close.reshape(len(a), -1).all(1).cpu()]


__all__ = ["Completeness", "InputInvariance"]
