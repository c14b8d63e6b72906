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
# ---------------------------------------------------------------------------------------------
# No-truth metrics (issue 22, helper nt2): randomisation, robustness, complexity, axiomatic.
#
# Called as Quantus 0.6 calls them, ``metric(model=, x_batch=, y_batch=, a_batch=, explain_func=,
# explain_func_kwargs=, device=)``, with Quantus 0.6's constructor arguments and defaults. As in
# Quantus, heatmaps are post-processed before scoring: ``normalise_func`` (default: divide by the
# maximum |a| of the whole batch) when ``normalise``, then ``|a|`` when ``abs``; a given ``a_batch``
# is normalised as one batch, and each re-explained batch as one batch (Quantus re-explains in
# chunks of ``batch_size``; heatlab explains the whole ``x_batch`` at once, the same when
# ``len(x_batch) <= batch_size``). ``explain_func`` is called as Quantus calls it, with NumPy
# ``inputs``/``targets``. Robustness metrics also take ``noise=`` (``K×N×...`` draws, e.g. the
# ones given to Quantus through ``perturb_func``) and ``seed=`` (heatlab's own draws otherwise).
# ---------------------------------------------------------------------------------------------

from heatlab.score import axiomatic as _axiomatic  # noqa: E402
from heatlab.score import complexity as _complexity  # noqa: E402
from heatlab.score import randomisation as _randomisation  # noqa: E402
from heatlab.score import robustness as _robustness  # noqa: E402
from heatlab.score._no_truth import check_heatmaps as _check_heatmaps  # noqa: E402


def _np_normalise_by_max(a: np.ndarray) -> np.ndarray:
    """Quantus's ``normalise_by_max``: ``a / max |a|`` over the whole batch."""
    return a if np.all(a == 0) else a / np.max(np.abs(a))


def _np_normalise_by_second_moment(a: np.ndarray) -> np.ndarray:
    """Quantus's ``normalise_by_average_second_moment_estimate`` over the whole batch."""
    m = np.sqrt(np.sum(a**2) / a.size)
    return a if np.all(a == 0) or m == 0 else a / m


class _NoTruth:
    """Shared ``__call__`` of the no-truth wrappers: tensors on the model's device, Quantus's
    post-processing, then :meth:`compute` with heatlab's function."""

    _default_normalise = staticmethod(_np_normalise_by_max)
    needs_explain = True

    def __init__(self, *, abs: bool = False, normalise: bool = True, normalise_func=None,
                 normalise_func_kwargs: dict | None = None, **kwargs):
        self.abs, self.normalise = abs, normalise
        func = normalise_func or type(self)._default_normalise
        self.normalise_func = (lambda a: func(a, **normalise_func_kwargs)) if normalise_func_kwargs else func
        self.kwargs = kwargs

    def _post(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32 if np.asarray(a).dtype != np.float64 else np.float64)
        a = self.normalise_func(a.copy()) if self.normalise else a
        return np.abs(a) if self.abs else a

    def __call__(self, model=None, x_batch=None, y_batch=None, a_batch=None, s_batch=None, channel_first=None,
                 explain_func=None, explain_func_kwargs=None, model_predict_kwargs=None, softmax=False, device=None,
                 batch_size: int = 64, **kwargs):
        from heatlab.models.state import model_device

        if model is not None and not isinstance(model, torch.nn.Module):
            raise HeatlabError(f"{type(self).__name__} needs a torch nn.Module as model, got {type(model).__name__}.")
        dev = model_device(model) if model is not None else torch.device("cpu")
        x = _tensor(x_batch, "x_batch").float().to(dev) if x_batch is not None else None
        y = _tensor(y_batch, "y_batch").long().reshape(-1).to(dev) if y_batch is not None else None
        explain = None
        if explain_func is not None:
            def explain(m, xx, yy):  # noqa: E306 - Quantus's call: NumPy in, post-processed NumPy out
                out = explain_func(model=m, inputs=xx.detach().cpu().numpy(), targets=yy.detach().cpu().numpy(),
                                   **(explain_func_kwargs or {}))
                out = np.asarray(out.detach().cpu() if torch.is_tensor(out) else out)
                if out.ndim == xx.ndim - 1:
                    out = out[:, None]
                return torch.from_numpy(self._post(out)).to(xx.device)
        elif self.needs_explain or a_batch is None:
            raise HeatlabError(f"{type(self).__name__} needs explain_func (e.g. heatlab.explain.explain_func)"
                               f"{'' if self.needs_explain else ' or a_batch'}.")
        if a_batch is None:
            a = explain(model, x, y)
        else:
            a = _tensor(a_batch, "a_batch").float()
            if x is not None and a.ndim == x.ndim - 1:
                a = a.unsqueeze(1)
            _check_heatmaps(x, a, "a_batch")
            a = torch.from_numpy(self._post(a.cpu().numpy())).to(dev)
        return self.compute(model, x, y, a, explain, batch_size=batch_size)

    def compute(self, model, x, y, a, explain, *, batch_size: int):  # pragma: no cover - abstract
        raise NotImplementedError


def _floats(t: Tensor) -> list[float]:
    return [float(v) for v in t.double().cpu()]


class _Complexity(_NoTruth):
    fn = staticmethod(_complexity.sparseness)
    needs_explain = False

    def __init__(self, abs: bool = True, normalise: bool = True, normalise_func=None, normalise_func_kwargs=None,
                 **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, **kwargs)

    def compute(self, model, x, y, a, explain, *, batch_size):
        extra = {k: v for k, v in self.kwargs.items() if k == "eps"}
        return _floats(type(self).fn(None, None, None, a, abs=False, normalise=False, **extra))


class Sparseness(_Complexity):
    """Gini index of |a| (Chalasani et al. 2020). Higher is better."""

    fn = staticmethod(_complexity.sparseness)


class Complexity(_Complexity):
    """Entropy of the relevance shares (Bhatt et al. 2020). Lower is better."""

    fn = staticmethod(_complexity.complexity)


class EffectiveComplexity(_Complexity):
    """Number of features above ``eps`` (Nguyen & Martinez 2020). Lower is better."""

    fn = staticmethod(_complexity.effective_complexity)

    def __init__(self, eps: float = 1e-5, abs: bool = True, normalise: bool = True, normalise_func=None,
                 normalise_func_kwargs=None, **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, eps=eps, **kwargs)

    def compute(self, model, x, y, a, explain, *, batch_size):
        return [int(v) for v in _complexity.effective_complexity(None, None, None, a, eps=self.kwargs["eps"],
                                                                  abs=False, normalise=False)]


class Completeness(_NoTruth):
    """Whether Σa equals ``output_func(f_y(x) − f_y(x̄))`` exactly, as Quantus compares (Sundararajan
    et al. 2017); :func:`heatlab.score.axiomatic.completeness` gives the gap instead. True is better."""

    needs_explain = False

    def __init__(self, abs: bool = False, normalise: bool = True, normalise_func=None, normalise_func_kwargs=None,
                 output_func=None, perturb_baseline: str = "black", perturb_func=None, perturb_func_kwargs=None,
                 **kwargs):
        if perturb_func is not None:
            raise HeatlabError("Completeness replaces the whole input by perturb_baseline; pass perturb_func=None.")
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs)
        _axiomatic.baseline(torch.zeros(1, 1), perturb_baseline)  # validates it
        self.output_func, self.perturb_baseline = output_func, perturb_baseline

    def compute(self, model, x, y, a, explain, *, batch_size):
        total, diff = _axiomatic.completeness_gap(model, x, y, a, perturb_baseline=self.perturb_baseline,
                                                  output_func=self.output_func)
        return [bool(v) for v in (total.float() == diff.float()).cpu()]


class InputInvariance(_NoTruth):
    """Whether the explanation of the mean-shifted model for the shifted input is close to ``a``
    (``np.isclose``, atol 1e-4) everywhere (Kindermans et al. 2017). True is better."""

    def __init__(self, abs: bool = False, normalise: bool = False, input_shift: float = -1, perturb_func=None,
                 perturb_func_kwargs=None, **kwargs):
        super().__init__(abs=abs, normalise=normalise)
        self.input_shift = input_shift

    def compute(self, model, x, y, a, explain, *, batch_size):
        shifted = explain(_axiomatic.shifted_model(model, x, self.input_shift), x + self.input_shift, y)
        close = torch.isclose(a.double(), shifted.double(), rtol=1e-5, atol=1e-4)
        return [bool(v) for v in close.reshape(len(a), -1).all(1).cpu()]


def _similarity(func):
    """A Quantus similarity function ``(a, b, batched=True)`` on NumPy rows as heatlab's torch one."""
    if func is None:
        return None
    return lambda a, b: torch.as_tensor(np.asarray(func(a.cpu().numpy(), b.cpu().numpy(), batched=True),
                                                   dtype=np.float64))


class MPRT(_NoTruth):
    """Model parameter randomisation test (Adebayo et al. 2018). By default, as Quantus, a dict
    ``{"original": [...], layer name: [...]}`` of per-sample similarities; a list with
    ``return_last_correlation`` or ``return_average_correlation`` (the mean over all entries,
    ``"original"`` included, as Quantus 0.6 computes it). Lower is better."""

    def __init__(self, similarity_func=None, layer_order: str = "top_down", seed: int = 42,
                 return_sample_correlation=None, return_average_correlation: bool = False,
                 return_last_correlation: bool = False, skip_layers: bool = False, abs: bool = True,
                 normalise: bool = True, normalise_func=None, normalise_func_kwargs=None, **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs)
        if layer_order not in _randomisation.LAYER_ORDERS:
            raise HeatlabError(f"Unknown layer_order={layer_order!r}; pass one of {', '.join(_randomisation.LAYER_ORDERS)}.")
        average = return_sample_correlation if return_sample_correlation is not None else return_average_correlation
        if average and (return_last_correlation or skip_layers):
            raise HeatlabError("return_average_correlation=True needs every layer; pass return_last_correlation=False "
                               "and skip_layers=False.")
        self.similarity_func, self.layer_order, self.seed = similarity_func, layer_order, seed
        self.average, self.last, self.skip_layers = average, return_last_correlation, skip_layers

    def compute(self, model, x, y, a, explain, *, batch_size):
        layers = _randomisation.mprt_layers(model, x, y, a, explain=explain, layer_order=self.layer_order,
                                            similarity_func=_similarity(self.similarity_func), abs=False,
                                            normalise=False, skip_layers=self.skip_layers, seed=self.seed)
        if self.average:
            return _floats(torch.stack(list(layers.values()), 1).mean(1))
        if self.last:
            return _floats(list(layers.values())[-1])
        return {k: _floats(v) for k, v in layers.items()}


class EfficientMPRT(_NoTruth):
    """eMPRT (Hedström et al. 2023): relative rise of the explanation's discrete entropy once all layers
    are randomised; ``complexity_func_kwargs={"n_bins": ...}`` (default 100). The original model's
    explanation is recomputed with ``explain_func``, as Quantus does. Higher is better."""

    _default_normalise = staticmethod(_np_normalise_by_second_moment)

    def __init__(self, complexity_func=None, complexity_func_kwargs=None, similarity_func=None,
                 layer_order: str = "bottom_up", seed: int = 42, compute_extra_scores: bool = False,
                 skip_layers: bool = True, abs: bool = False, normalise: bool = False, normalise_func=None,
                 normalise_func_kwargs=None, **kwargs):
        if complexity_func is not None or set(complexity_func_kwargs or {}) - {"n_bins"}:
            raise HeatlabError("EfficientMPRT supports Quantus's default complexity (discrete entropy); pass "
                               "complexity_func=None and at most complexity_func_kwargs={'n_bins': ...}.")
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs)
        if layer_order not in _randomisation.LAYER_ORDERS:
            raise HeatlabError(f"Unknown layer_order={layer_order!r}; pass one of {', '.join(_randomisation.LAYER_ORDERS)}.")
        self.n_bins = (complexity_func_kwargs or {}).get("n_bins", 100)
        self.layer_order, self.seed = layer_order, seed

    def compute(self, model, x, y, a, explain, *, batch_size):
        return _floats(_randomisation.emprt(model, x, y, explain(model, x, y), explain_func=explain,
                                            n_bins=self.n_bins, layer_order=self.layer_order, seed=self.seed))


class SmoothMPRT(_NoTruth):
    """sMPRT (Hedström et al. 2023) with ``explain_func`` smoothed by heatlab's seeded noise
    (:func:`heatlab.score.randomisation.smprt`); Quantus's own draws unseeded noise and calls
    ``quantus.explain`` instead of ``explain_func``, so the two agree only in distribution. A list of
    per-sample similarities after the last layer (or their mean with
    ``return_average_correlation``). Lower is better."""

    _default_normalise = staticmethod(_np_normalise_by_second_moment)

    def __init__(self, similarity_func=None, layer_order: str = "bottom_up", seed: int = 42, nr_samples: int = 50,
                 noise_magnitude: float = 0.1, return_average_correlation: bool = False,
                 return_last_correlation: bool = False, skip_layers: bool = False, abs: bool = True,
                 normalise: bool = True, normalise_func=None, normalise_func_kwargs=None, **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs)
        if layer_order not in _randomisation.LAYER_ORDERS:
            raise HeatlabError(f"Unknown layer_order={layer_order!r}; pass one of {', '.join(_randomisation.LAYER_ORDERS)}.")
        self.kw = dict(similarity_func=_similarity(similarity_func), layer_order=layer_order, seed=seed,
                       nr_samples=nr_samples, noise_magnitude=noise_magnitude,
                       return_average_correlation=return_average_correlation)

    def compute(self, model, x, y, a, explain, *, batch_size):
        return _floats(_randomisation.smprt(model, x, y, a, explain_func=explain, abs=False, normalise=False, **self.kw))


class RandomLogit(_NoTruth):
    """Random logit (Sixt et al. 2020): SSIM between ``a`` and the explanation of a random other class,
    drawn as Quantus draws it (``np.random.seed(seed)`` per batch of ``batch_size``, here from a private
    ``RandomState``). Lower is better."""

    def __init__(self, similarity_func=None, num_classes: int = 1000, seed: int = 42, abs: bool = False,
                 normalise: bool = True, normalise_func=None, normalise_func_kwargs=None, **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs)
        self.similarity_func, self.num_classes, self.seed = similarity_func, num_classes, seed

    def compute(self, model, x, y, a, explain, *, batch_size):
        n = len(y)
        draws = np.concatenate([np.random.RandomState(self.seed).randint(0, self.num_classes - 1, len(range(i, n)[:batch_size]))
                                for i in range(0, n, batch_size)])
        d = torch.as_tensor(draws, device=y.device)
        y_off = d + (d >= y).long()  # the draw-th class among the others
        return _floats(_randomisation.random_logit(model, x, y, a, explain_func=explain, abs=False, normalise=False,
                                                   similarity_func=_similarity(self.similarity_func), y_off=y_off))


class _Robustness(_NoTruth):
    fn = staticmethod(_robustness.max_sensitivity)
    _names = ()

    def __init__(self, *, abs: bool, normalise: bool, normalise_func=None, normalise_func_kwargs=None,
                 perturb_func=None, noise: Tensor | None = None, seed: int = 0, **kwargs):
        if perturb_func is not None:
            raise HeatlabError(f"{type(self).__name__} draws Quantus's default noise; pass perturb_func=None "
                               "(and noise= to give the draws).")
        unsupported = [k for k in ("similarity_func", "norm_numerator", "norm_denominator") if kwargs.get(k) is not None]
        if unsupported:
            raise HeatlabError(f"{type(self).__name__} uses Quantus's default {unsupported[0]}; pass {unsupported[0]}=None.")
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs)
        self.options = {k: v for k, v in kwargs.items() if k in self._names}
        self.noise, self.seed = noise, seed

    def compute(self, model, x, y, a, explain, *, batch_size):
        return _floats(type(self).fn(model, x, y, a, explain_func=explain, abs=False, normalise=False, noise=self.noise,
                                     seed=self.seed, **self.options))


class _Sensitivity(_Robustness):
    _names = ("nr_samples", "lower_bound", "upper_bound", "return_nan_when_prediction_changes")

    def __init__(self, similarity_func=None, norm_numerator=None, norm_denominator=None, nr_samples: int = 200,
                 abs: bool = False, normalise: bool = False, normalise_func=None, normalise_func_kwargs=None,
                 perturb_func=None, lower_bound: float = 0.2, upper_bound: float | None = None,
                 perturb_func_kwargs=None, return_nan_when_prediction_changes: bool = False, noise=None, seed: int = 0,
                 **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, perturb_func=perturb_func, noise=noise,
                         seed=seed, similarity_func=similarity_func, norm_numerator=norm_numerator,
                         norm_denominator=norm_denominator, nr_samples=nr_samples,
                         lower_bound=(perturb_func_kwargs or {}).get("lower_bound", lower_bound),
                         upper_bound=(perturb_func_kwargs or {}).get("upper_bound", upper_bound),
                         return_nan_when_prediction_changes=return_nan_when_prediction_changes)


class MaxSensitivity(_Sensitivity):
    """Max-sensitivity (Yeh et al. 2019). Lower is better."""

    fn = staticmethod(_robustness.max_sensitivity)


class AvgSensitivity(_Sensitivity):
    """Avg-sensitivity (Yeh et al. 2019). Lower is better."""

    fn = staticmethod(_robustness.avg_sensitivity)


class LocalLipschitzEstimate(_Robustness):
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018). Lower is better."""

    fn = staticmethod(_robustness.local_lipschitz_estimate)
    _names = ("nr_samples", "perturb_mean", "perturb_std", "return_nan_when_prediction_changes")

    def __init__(self, similarity_func=None, norm_numerator=None, norm_denominator=None, nr_samples: int = 200,
                 abs: bool = False, normalise: bool = True, normalise_func=None, normalise_func_kwargs=None,
                 perturb_func=None, perturb_mean: float = 0.0, perturb_std: float = 0.1, perturb_func_kwargs=None,
                 return_nan_when_prediction_changes: bool = False, noise=None, seed: int = 0, **kwargs):
        kw = perturb_func_kwargs or {}
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, perturb_func=perturb_func, noise=noise,
                         seed=seed, similarity_func=similarity_func, norm_numerator=norm_numerator,
                         norm_denominator=norm_denominator, nr_samples=nr_samples,
                         perturb_mean=kw.get("perturb_mean", perturb_mean), perturb_std=kw.get("perturb_std", perturb_std),
                         return_nan_when_prediction_changes=return_nan_when_prediction_changes)


class _Stability(_Robustness):
    _default_normalise = staticmethod(_np_normalise_by_second_moment)
    _names = ("nr_samples", "eps_min", "perturb_func_kwargs", "return_nan_when_prediction_changes", "layer_names",
              "layer_indices")

    def __init__(self, nr_samples: int = 200, abs: bool = False, normalise: bool = False, normalise_func=None,
                 normalise_func_kwargs=None, perturb_func=None, perturb_func_kwargs=None, eps_min: float = 1e-6,
                 return_nan_when_prediction_changes: bool = True, noise=None, seed: int = 0, **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, perturb_func=perturb_func, noise=noise,
                         seed=seed, nr_samples=nr_samples, perturb_func_kwargs=perturb_func_kwargs, eps_min=eps_min,
                         return_nan_when_prediction_changes=return_nan_when_prediction_changes,
                         **{k: kwargs[k] for k in ("layer_names", "layer_indices") if kwargs.get(k) is not None})


class RelativeInputStability(_Stability):
    """RIS (Agarwal et al. 2022). Lower is better."""

    fn = staticmethod(_robustness.relative_input_stability)


class RelativeOutputStability(_Stability):
    """ROS (Agarwal et al. 2022). Lower is better."""

    fn = staticmethod(_robustness.relative_output_stability)


class RelativeRepresentationStability(_Stability):
    """RRS (Agarwal et al. 2022). Lower is better."""

    fn = staticmethod(_robustness.relative_representation_stability)


__all__ += ["AvgSensitivity", "Complexity", "Completeness", "EffectiveComplexity", "EfficientMPRT", "InputInvariance",
            "LocalLipschitzEstimate", "MPRT", "MaxSensitivity", "RandomLogit", "RelativeInputStability",
            "RelativeOutputStability", "RelativeRepresentationStability", "SmoothMPRT", "Sparseness"]
