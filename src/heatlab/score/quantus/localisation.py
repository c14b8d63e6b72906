"""Localisation metrics (:mod:`heatlab.score.localisation`) as Quantus-style callables; channels of a
4-D ``a_batch`` are reduced by ``channels=`` (default ``"sum"``). Quantus's mass/rank accuracy use
signed relevance; heatlab's use its positive part (CLEVR-XAI), so they agree on ``max(a, 0)``."""

from __future__ import annotations

from torch import Tensor

from heatlab.errors import HeatlabError
from heatlab.score import localisation as loc
from heatlab.score.quantus._base import TruthMetric


class _Localisation(TruthMetric):
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


__all__ = ["AUC", "PointingGame", "RelevanceMassAccuracy", "RelevanceRankAccuracy"]
