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
        if name not in reg.METRICS:
            raise HeatlabError(f"Unknown metric {name!r}; pick one of heatlab.score.available_metrics().")
        self.name = name

    def score(self, a: Tensor, s: Tensor) -> Tensor:
        a = a if a.is_floating_point() else a.float()
        h = channel_adjust(a.unsqueeze(1) if a.ndim == 3 else a)
        s = loc._squeeze_channel(s.to(h.device), h, "s_batch")
        kind = "mask" if s.dtype == torch.bool or bool(((s == 0) | (s == 1)).all()) else "levels"
        if kind == "mask" and reg.METRICS[self.name].needs == "levels":
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


# --- No-truth metrics (faithfulness and non-sensitivity, heatlab.score.faithfulness) -------------------------------

from heatlab.score import faithfulness as fa  # noqa: E402  (kept with the classes it serves)

_QUANTUS_COMMON = ("return_aggregate", "aggregate_func", "default_plot_func", "disable_warnings",
                   "display_progressbar", "perturb_func_kwargs", "normalise_func_kwargs")


class _NoTruth:
    """Quantus-style faithfulness metric: ``metric(model=, x_batch=, y_batch=, a_batch=, explain_func=, device=)``.

    Constructor arguments are Quantus 0.6's (``options`` lists each class's own with its defaults).
    ``abs``/``normalise`` act as in Quantus: ``a_batch`` is divided by its max |value| over the batch
    (``normalise_by_max``), then made absolute. A custom ``perturb_func`` is not supported. Returns
    per-sample floats (curves, as lists, for the curve metrics), or ``[aggregate]`` with
    ``return_aggregate=True``.
    """

    options: dict = {}
    abs_default, normalise_default, softmax_default, aggregate_default = False, True, True, False

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(self.options) - set(_QUANTUS_COMMON) - {"abs", "normalise", "normalise_func",
                                                                                "perturb_func"}
        if unknown:
            raise HeatlabError(f"{type(self).__name__} got unknown argument(s) {sorted(unknown)}; "
                               f"it takes {sorted(self.options)} and Quantus's common ones.")
        if kwargs.get("perturb_func") is not None:
            raise HeatlabError(f"{type(self).__name__} does not take a custom perturb_func; pick perturb_baseline instead.")
        self.abs = kwargs.get("abs", self.abs_default)
        self.normalise = kwargs.get("normalise", self.normalise_default)
        self.normalise_func = kwargs.get("normalise_func")
        self.normalise_func_kwargs = kwargs.get("normalise_func_kwargs") or {}
        self.return_aggregate = kwargs.get("return_aggregate", self.aggregate_default)
        self.aggregate_func = kwargs.get("aggregate_func") or np.mean
        self.kw = {k: kwargs.get(k, v) for k, v in self.options.items()}

    def __call__(self, model=None, x_batch=None, y_batch=None, a_batch=None, s_batch=None, channel_first=None,
                 explain_func=None, explain_func_kwargs=None, model_predict_kwargs=None, softmax=None, device=None,
                 batch_size: int = 64, **kwargs):
        if model is None or x_batch is None or y_batch is None:
            raise HeatlabError(f"{type(self).__name__} needs model, x_batch and y_batch.")
        if getattr(model, "training", False):
            raise HeatlabError(f"{type(self).__name__} needs the model in evaluation mode; call model.eval() first.")
        if a_batch is None:
            if explain_func is None:
                raise HeatlabError(f"{type(self).__name__} needs attributions; pass a_batch, or explain_func "
                                   "(e.g. heatlab.explain.explain_func).")
            a_batch = explain_func(model=model, inputs=x_batch, targets=y_batch, **(explain_func_kwargs or {}))
        if device is not None:
            model = model.to(device)
        x = _tensor(x_batch, "x_batch").float()
        y = _tensor(y_batch, "y_batch").long()
        a = _tensor(a_batch, "a_batch").double()
        if torch.isnan(a).any():
            raise HeatlabError("a_batch holds NaN attributions; recompute or clean the heatmaps first.")
        if self.normalise:
            if self.normalise_func is not None:
                a = torch.from_numpy(np.asarray(self.normalise_func(a.numpy(), **self.normalise_func_kwargs))).double()
            elif bool((a != 0).any()):
                a = a / a.abs().max()
        if self.abs:
            a = a.abs()
        soft = self.softmax_default if softmax is None else softmax
        out = self.compute(model, x, y, a, soft, max(batch_size, 1))
        if self.return_aggregate:
            return [float(self.aggregate_func(out))]
        return out

    def compute(self, model, x, y, a, softmax, batch_size):  # pragma: no cover - abstract
        raise NotImplementedError


def _floats(t: Tensor) -> list:
    return t.double().cpu().tolist()


class PixelFlipping(_NoTruth):
    """Pixel flipping (Bach et al. 2015) as Quantus 0.6: per-sample curves, or their AUC with
    ``return_auc_per_sample=True``."""

    options = {"features_in_step": 1, "perturb_baseline": "black", "return_auc_per_sample": False}

    def compute(self, model, x, y, a, softmax, batch_size):
        kw = dict(self.kw)
        auc = kw.pop("return_auc_per_sample")
        c = fa.pixel_flipping_curve(model, x, y, a, softmax=softmax, batch_size=batch_size, **kw)
        return _floats(torch.trapezoid(c, dim=1) if auc else c)


class RegionPerturbation(_NoTruth):
    """Region perturbation (Samek et al. 2017) as Quantus 0.6: per-sample curves of ``f(x) - f(x_k)``."""

    options = {"patch_size": 8, "order": "morf", "regions_evaluation": 100, "perturb_baseline": "black"}

    def compute(self, model, x, y, a, softmax, batch_size):
        return _floats(fa.region_perturbation_curve(model, x, y, a, softmax=softmax, batch_size=batch_size, **self.kw))


class Selectivity(_NoTruth):
    """Selectivity (Montavon et al. 2018) as Quantus 0.6: per-sample curves of the target score."""

    options = {"patch_size": 8, "perturb_baseline": "black"}

    def compute(self, model, x, y, a, softmax, batch_size):
        return _floats(fa.selectivity_curve(model, x, y, a, softmax=softmax, batch_size=batch_size, **self.kw))


class FaithfulnessCorrelation(_NoTruth):
    """Faithfulness correlation (Bhatt et al. 2020) as Quantus 0.6 (subsets drawn from ``seed``, or fixed
    by ``indices``)."""

    options = {"similarity_func": None, "nr_runs": 100, "subset_size": 224, "perturb_baseline": "black",
               "seed": 0, "indices": None}
    softmax_default = False

    def compute(self, model, x, y, a, softmax, batch_size):
        kw = dict(self.kw)
        if kw.pop("similarity_func") is not None:
            raise HeatlabError("FaithfulnessCorrelation uses Pearson correlation; leave similarity_func=None.")
        return _floats(fa.faithfulness_correlation(model, x, y, a, softmax=softmax, batch_size=batch_size, **kw))


class MonotonicityCorrelation(_NoTruth):
    """Monotonicity correlation (Nguyen & Martinez 2020) as Quantus 0.6 (Spearman). ``"uniform"`` is
    heatlab's per-value seeded noise, not Quantus's one value per sample."""

    options = {"similarity_func": None, "eps": 1e-5, "nr_samples": 100, "features_in_step": 1,
               "perturb_baseline": "uniform", "seed": 0}
    abs_default = True

    def compute(self, model, x, y, a, softmax, batch_size):
        kw = dict(self.kw)
        if kw.pop("similarity_func") is not None:
            raise HeatlabError("MonotonicityCorrelation uses Spearman correlation; leave similarity_func=None.")
        return _floats(fa.monotonicity_correlation(model, x, y, a, abs=False, softmax=softmax, batch_size=batch_size, **kw))


class IROF(_NoTruth):
    """IROF (Rieger & Hansen 2020) as Quantus 0.6 (SLIC superpixels). Quantus's baselines here are
    taken over the whole batch: ``"black"`` its minimum (equal), ``"mean"`` its mean, which Quantus
    recomputes after every step and heatlab takes once from the input."""

    options = {"segmentation_method": "slic", "perturb_baseline": "mean", "segments": None}
    aggregate_default = True

    def compute(self, model, x, y, a, softmax, batch_size):
        kw = dict(self.kw)
        base = kw["perturb_baseline"]
        if isinstance(base, str) and base in ("black", "white", "mean"):
            kw["perturb_baseline"] = {"black": x.min, "white": x.max, "mean": x.mean}[base]().reshape(1)
        return _floats(fa.irof(model, x, y, a, softmax=softmax, batch_size=batch_size, **kw))


class ROAD(_NoTruth):
    """ROAD (Rong et al. 2022) as Quantus 0.6: a dict percentage -> accuracy over the batch (MoRF);
    ``order="lerf"`` for the least relevant first."""

    options = {"percentages": None, "noise": 0.01, "order": "morf", "seed": 0}

    def compute(self, model, x, y, a, softmax, batch_size):
        kw = dict(self.kw)
        pct = list(range(1, 100, 2)) if kw["percentages"] is None else list(kw["percentages"])
        c = fa.road_curve(model, x, y, a, batch_size=batch_size, **kw)
        return dict(zip(pct, _floats(c.mean(0))))


class Infidelity(_NoTruth):
    """Infidelity (Yeh et al. 2019) as Quantus 0.6 computes it (cumulative patches, mse);
    :func:`heatlab.score.faithfulness.infidelity` is Captum's Gaussian version."""

    options = {"loss_func": "mse", "perturb_patch_sizes": None, "n_perturb_samples": 10, "perturb_baseline": "black",
               "seed": 0}
    normalise_default, softmax_default = False, False

    def compute(self, model, x, y, a, softmax, batch_size):
        kw = dict(self.kw)
        if kw.pop("loss_func") != "mse":
            raise HeatlabError("Infidelity implements loss_func='mse' only.")
        kw["perturb_patch_sizes"] = kw["perturb_patch_sizes"] or [4]
        return _floats(fa.infidelity_patches(model, x, y, a, softmax=softmax, batch_size=batch_size, **kw))


class NonSensitivity(_NoTruth):
    """Non-sensitivity (Nguyen & Martinez 2020) as Quantus 0.6 (per-sample counts; Quantus itself
    only runs with ``features_in_step=1``)."""

    options = {"eps": 1e-5, "features_in_step": 1, "perturb_baseline": "black"}
    abs_default = True

    def compute(self, model, x, y, a, softmax, batch_size):
        return _floats(fa.non_sensitivity(model, x, y, a, abs=False, normalise=False, softmax=softmax,
                                          batch_size=batch_size, **self.kw))


__all__ += ["FaithfulnessCorrelation", "Infidelity", "IROF", "MonotonicityCorrelation", "NonSensitivity",
            "PixelFlipping", "RegionPerturbation", "ROAD", "Selectivity"]
