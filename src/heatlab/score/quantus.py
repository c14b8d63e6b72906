"""heatlab's metrics as Quantus-style callables: ``metric(model=, x_batch=, y_batch=, a_batch=, s_batch=)``.

Each class is configured once and called like a Quantus metric; it returns one float per sample
(a list, as Quantus does; NaN where the score is undefined). Inputs are NumPy arrays or torch
tensors as Quantus passes them: ``x_batch`` N×C×H×W, ``a_batch`` N×1×H×W, N×C×H×W or N×H×W,
``s_batch`` N×1×H×W or N×H×W (bool or 0/1, or the cells' levels 0/0.4/0.9 for five-band). When
``a_batch`` is None, ``explain_func(model=, inputs=x_batch, targets=y_batch, **explain_func_kwargs)``
computes it (e.g. ``heatlab.explain.explain_func``). ``model`` and ``x_batch`` are only used then.

- Localisation (:mod:`heatlab.score.localisation`): :class:`PointingGame`,
  :class:`RelevanceMassAccuracy`, :class:`RelevanceRankAccuracy`, :class:`AUC`; channels of a
  4-D ``a_batch`` are reduced by ``channels=`` (default ``"sum"``).
- Five-band (:mod:`heatlab.score.five_band`): :class:`FiveBandAccuracy`, :class:`FiveBandPrecision`,
  :class:`FiveBandRecall`, :class:`FiveBandFPR`; ``a_batch`` goes through paper 002's
  ``channel_adjust`` first (``clamp=`` for the clamp variant); ``stat="avg"`` or ``"best"``
  over the soft thresholds; a binary ``s_batch`` counts as the 0.9 level.
- :class:`Registered`: any entry of the metric registry by name (e.g. ``"auc/cell"``).

Quantus's own mass/rank accuracy use signed relevance; heatlab's use its positive part (CLEVR-XAI),
so they agree on ``max(a, 0)``.
"""

from __future__ import annotations


import numpy as np
import torch
from torch import Tensor

from heatlab.errors import HeatlabError
from heatlab.explain.postprocess import channel_adjust
from heatlab.score import five_band as fb
from heatlab.score import localisation as loc
from heatlab.score import metrics as reg


class _Base:
    """Shared ``__call__``: get ``a_batch`` (given or from ``explain_func``), score it, return floats."""

    name = ""

    def __call__(self, model=None, x_batch=None, y_batch=None, a_batch=None, s_batch=None, *,
                 explain_func=None, explain_func_kwargs=None, **kwargs) -> list[float]:
        if s_batch is None:
            raise HeatlabError(f"{type(self).__name__} needs ground truth; pass s_batch (N×1×H×W masks).")
        if a_batch is None:
            if explain_func is None:
                raise HeatlabError(f"{type(self).__name__} needs attributions; pass a_batch, or explain_func "
                                   "(e.g. heatlab.explain.explain_func) with model, x_batch and y_batch.")
            a_batch = explain_func(model=model, inputs=x_batch, targets=y_batch, **(explain_func_kwargs or {}))
        scores = self.score(_tensor(a_batch, "a_batch"), _tensor(s_batch, "s_batch"))
        return [float(v) for v in scores.double().cpu()]

    def score(self, a: Tensor, s: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class _Localisation(_Base):
    fn = staticmethod(loc.auc)

    def __init__(self, *, channels: str = "sum"):
        if channels not in loc.CHANNEL_RULES:
            raise HeatlabError(f"Unknown channel rule channels={channels!r}; pass one of {sorted(loc.CHANNEL_RULES)}.")
        self.channels = channels

    def score(self, a: Tensor, s: Tensor) -> Tensor:
        a = a if a.is_floating_point() else a.float()
        return type(self).fn(a, s.to(a.device), channels=self.channels)


class PointingGame(_Localisation):
    """Pointing game (Zhang et al. 2018); 1 if the maximum lies in the mask. Higher is better."""

    fn = staticmethod(loc.pointing_game)


class RelevanceMassAccuracy(_Localisation):
    """Share of positive relevance inside the mask, in [0, 1] (Arras et al. 2022). Higher is better."""

    fn = staticmethod(loc.relevance_mass_accuracy)


class RelevanceRankAccuracy(_Localisation):
    """Share of the mask among the K highest positive relevances (Arras et al. 2022). Higher is better."""

    fn = staticmethod(loc.relevance_rank_accuracy)


class AUC(_Localisation):
    """ROC-AUC of the heatmap as a mask-membership score (Fawcett 2006). Higher is better."""

    fn = staticmethod(loc.auc)


class _FiveBand(_Base):
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


class Registered(_Base):
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


def _tensor(x, what: str) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        if x.dtype == object or x.dtype.kind not in "biuf":
            raise HeatlabError(f"{what} must hold bool or real numbers, got NumPy dtype {x.dtype}.")
        return torch.from_numpy(np.ascontiguousarray(x))
    raise HeatlabError(f"{what} must be a NumPy array or torch tensor, got {type(x).__name__}.")


__all__ = ["AUC", "FiveBandAccuracy", "FiveBandFPR", "FiveBandPrecision", "FiveBandRecall", "PointingGame",
           "Registered", "RelevanceMassAccuracy", "RelevanceRankAccuracy"]
