"""Randomisation metrics (:mod:`heatlab.score.randomisation`) as Quantus 0.6 calls them. The layers
are randomised with Quantus's draws (``seed``), so MPRT and eMPRT equal Quantus's."""

from __future__ import annotations

import numpy as np
import torch

from heatlab.errors import HeatlabError
from heatlab.score import randomisation as _randomisation
from heatlab.score.quantus._base import QuantusMetric, floats, np_normalise_by_second_moment, similarity


class _Randomisation(QuantusMetric):
    heatmap_dtype = np.float32
    needs_explain = True

    def configure(self) -> None:
        order = self.kw["layer_order"]
        if order not in _randomisation.LAYER_ORDERS:
            raise HeatlabError(f"Unknown layer_order={order!r}; pass one of {', '.join(_randomisation.LAYER_ORDERS)}.")


class MPRT(_Randomisation):
    """Model parameter randomisation test (Adebayo et al. 2018). By default, as Quantus, a dict
    ``{"original": [...], layer name: [...]}`` of per-sample similarities; a list with
    ``return_last_correlation`` or ``return_average_correlation`` (the mean over all entries,
    ``"original"`` included, as Quantus 0.6 computes it). Lower is better."""

    options = {"similarity_func": None, "layer_order": "top_down", "seed": 42, "return_sample_correlation": None,
               "return_average_correlation": False, "return_last_correlation": False, "skip_layers": False}
    abs_default = True

    def configure(self) -> None:
        super().configure()
        kw = self.kw
        sample = kw["return_sample_correlation"]
        self.average = sample if sample is not None else kw["return_average_correlation"]
        if self.average and (kw["return_last_correlation"] or kw["skip_layers"]):
            raise HeatlabError("return_average_correlation=True needs every layer; pass return_last_correlation=False "
                               "and skip_layers=False.")

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        kw = self.kw
        layers = _randomisation.mprt_layers(model, x, y, a, explain=explain, layer_order=kw["layer_order"],
                                            similarity_func=similarity(kw["similarity_func"]), abs=False,
                                            normalise=False, skip_layers=kw["skip_layers"], seed=kw["seed"])
        if self.average:
            return floats(torch.stack(list(layers.values()), 1).mean(1))
        if kw["return_last_correlation"]:
            return floats(list(layers.values())[-1])
        return {k: floats(v) for k, v in layers.items()}


class EfficientMPRT(_Randomisation):
    """eMPRT (Hedström et al. 2023): relative rise of the explanation's discrete entropy once all layers
    are randomised; ``complexity_func_kwargs={"n_bins": ...}`` (default 100). The original model's
    explanation is recomputed with ``explain_func``, as Quantus does. Higher is better."""

    options = {"complexity_func": None, "complexity_func_kwargs": None, "similarity_func": None,
               "layer_order": "bottom_up", "seed": 42, "compute_extra_scores": False, "skip_layers": True}
    normalise_default = False
    default_normalise = staticmethod(np_normalise_by_second_moment)

    def configure(self) -> None:
        bins = self.kw["complexity_func_kwargs"] or {}
        if self.kw["complexity_func"] is not None or set(bins) - {"n_bins"}:
            raise HeatlabError("EfficientMPRT supports Quantus's default complexity (discrete entropy); pass "
                               "complexity_func=None and at most complexity_func_kwargs={'n_bins': ...}.")
        super().configure()
        self.n_bins = bins.get("n_bins", 100)

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        return floats(_randomisation.emprt(model, x, y, explain(model, x, y), explain_func=explain, n_bins=self.n_bins,
                                           layer_order=self.kw["layer_order"], seed=self.kw["seed"]))


class SmoothMPRT(_Randomisation):
    """sMPRT (Hedström et al. 2023) with ``explain_func`` smoothed by heatlab's seeded noise
    (:func:`heatlab.score.randomisation.smprt`); Quantus's own draws unseeded noise and calls
    ``quantus.explain`` instead of ``explain_func``, so the two agree only in distribution. A list of
    per-sample similarities after the last layer (or their mean with
    ``return_average_correlation``). Lower is better."""

    options = {"similarity_func": None, "layer_order": "bottom_up", "seed": 42, "nr_samples": 50,
               "noise_magnitude": 0.1, "return_average_correlation": False, "return_last_correlation": False,
               "skip_layers": False}
    abs_default = True
    default_normalise = staticmethod(np_normalise_by_second_moment)

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        kw = {k: v for k, v in self.kw.items() if k not in ("return_last_correlation", "skip_layers")}
        kw["similarity_func"] = similarity(kw["similarity_func"])
        return floats(_randomisation.smprt(model, x, y, a, explain_func=explain, abs=False, normalise=False, **kw))


class RandomLogit(QuantusMetric):
    """Random logit (Sixt et al. 2020): SSIM between ``a`` and the explanation of a random other class,
    drawn as Quantus draws it (``np.random.seed(seed)`` per batch of ``batch_size``, here from a private
    ``RandomState``). Lower is better."""

    options = {"similarity_func": None, "num_classes": 1000, "seed": 42}
    heatmap_dtype = np.float32
    needs_explain = True

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        n, kw = len(y), self.kw
        draws = np.concatenate([np.random.RandomState(kw["seed"]).randint(0, kw["num_classes"] - 1,
                                                                         len(range(i, n)[:batch_size]))
                                for i in range(0, n, batch_size)])
        d = torch.as_tensor(draws, device=y.device)
        y_off = d + (d >= y).long()  # the draw-th class among the others
        return floats(_randomisation.random_logit(model, x, y, a, explain_func=explain, abs=False, normalise=False,
                                                  similarity_func=similarity(kw["similarity_func"]), y_off=y_off))


__all__ = ["EfficientMPRT", "MPRT", "RandomLogit", "SmoothMPRT"]
