"""Five-band metrics (paper 002, :mod:`heatlab.score.five_band`) as Quantus-style callables, and
:class:`Registered` for any entry of the metric registry. ``a_batch`` goes through paper 002's
``channel_adjust`` first (``clamp=`` for the clamp variant); ``stat="avg"`` or ``"best"`` over the
soft thresholds; a binary ``s_batch`` counts as the 0.9 level."""

from __future__ import annotations

import torch
from torch import Tensor

from heatlab.errors import HeatlabError
from heatlab.explain.postprocess import channel_adjust
from heatlab.score import five_band as fb
from heatlab.score import localisation as loc
from heatlab.score import metrics as reg
from heatlab.score.quantus._base import TruthMetric


class _FiveBand(TruthMetric):
    metric = "accuracy"

    def __init__(self, *, stat: str = "avg", variant: str = "standard", clamp: tuple[float, float] | None = None):
        if stat not in ("avg", "best"):
            raise HeatlabError(f"Unknown stat={stat!r}; pass stat='avg' or stat='best'.")
        fb.soft_thresholds(variant)  # validates the variant
        self.stat, self.variant, self.clamp = stat, variant, clamp

    def score(self, a: Tensor, s: Tensor) -> Tensor:
        a = a if a.is_floating_point() else a.float()
        if a.ndim == 3:
            a = a.unsqueeze(1)
        h = channel_adjust(a, clamp=self.clamp)
        result = fb.five_band(h, s.to(h.device), variant=self.variant)
        return getattr(result, self.stat)[self.metric]


class FiveBandAccuracy(_FiveBand):
    """Five-band accuracy (paper 002), per sample avg/best over soft thresholds. Higher is better."""

    metric = "accuracy"


class FiveBandPrecision(_FiveBand):
    """Five-band precision (paper 002). Higher is better."""

    metric = "precision"


class FiveBandRecall(_FiveBand):
    """Five-band recall (paper 002). Higher is better."""

    metric = "recall"


class FiveBandFPR(_FiveBand):
    """Five-band false-positive rate (paper 002); ``stat="best"`` is the minimum. Lower is better."""

    metric = "fpr"


class Registered(TruthMetric):
    """Any metric of :data:`heatlab.score.metrics.METRICS` by name, on channel-adjusted ``a_batch``.

    ``s_batch`` with the cells' levels uses ``truth_kind="levels"``, a bool/0-1 mask ``"mask"``.
    """

    def __init__(self, name: str):
        if name not in reg.available_metrics():  # the per-sample scores-table entries
            raise HeatlabError(f"Unknown metric {name!r}; pick one of heatlab.score.available_metrics().")
        self.name = name

    def score(self, a: Tensor, s: Tensor) -> Tensor:
        a = a if a.is_floating_point() else a.float()
        h = channel_adjust(a.unsqueeze(1) if a.ndim == 3 else a)
        s = loc._squeeze_channel(s.to(h.device), h, "s_batch")
        kind = "mask" if s.dtype == torch.bool or bool(((s == 0) | (s == 1)).all()) else "levels"
        if kind == "mask" and reg.METRICS[self.name].truth == "levels":
            raise HeatlabError(f"Metric {self.name!r} needs the cells' levels 0/0.4/0.9 as s_batch, not a binary mask.")
        return reg.per_sample_scores(h, s.float(), kind)[self.name]


__all__ = ["FiveBandAccuracy", "FiveBandFPR", "FiveBandPrecision", "FiveBandRecall", "Registered"]
