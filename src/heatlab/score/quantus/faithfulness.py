"""Faithfulness metrics and non-sensitivity (:mod:`heatlab.score.faithfulness`) as Quantus 0.6 calls
them. ``options`` lists each class's own arguments with Quantus's defaults; a custom ``perturb_func``
is not supported. Curve metrics return per-sample curves (lists), the others per-sample floats."""

from __future__ import annotations

import torch

from heatlab.errors import HeatlabError
from heatlab.score import faithfulness as fa
from heatlab.score.quantus._base import QuantusMetric, floats


class _FixedCorrelation(QuantusMetric):
    """A correlation metric with a fixed correlation: ``similarity_func`` must stay None."""

    correlation = "Pearson"

    def configure(self) -> None:
        if self.kw.pop("similarity_func") is not None:
            raise HeatlabError(f"{type(self).__name__} uses {self.correlation} correlation; leave similarity_func=None.")


class PixelFlipping(QuantusMetric):
    """Pixel flipping (Bach et al. 2015) as Quantus 0.6: per-sample curves, or their AUC with
    ``return_auc_per_sample=True``."""

    options = {"features_in_step": 1, "perturb_baseline": "black", "return_auc_per_sample": False}

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        kw = dict(self.kw)
        auc = kw.pop("return_auc_per_sample")
        c = fa.pixel_flipping_curve(model, x, y, a, softmax=softmax, batch_size=batch_size, **kw)
        return floats(torch.trapezoid(c, dim=1) if auc else c)


class RegionPerturbation(QuantusMetric):
    """Region perturbation (Samek et al. 2017) as Quantus 0.6: per-sample curves of ``f(x) - f(x_k)``."""

    options = {"patch_size": 8, "order": "morf", "regions_evaluation": 100, "perturb_baseline": "black"}

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        return floats(fa.region_perturbation_curve(model, x, y, a, softmax=softmax, batch_size=batch_size, **self.kw))


class Selectivity(QuantusMetric):
    """Selectivity (Montavon et al. 2018) as Quantus 0.6: per-sample curves of the target score."""

    options = {"patch_size": 8, "perturb_baseline": "black"}

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        return floats(fa.selectivity_curve(model, x, y, a, softmax=softmax, batch_size=batch_size, **self.kw))


class FaithfulnessCorrelation(_FixedCorrelation):
    """Faithfulness correlation (Bhatt et al. 2020) as Quantus 0.6 (subsets drawn from ``seed``, or fixed
    by ``indices``)."""

    options = {"similarity_func": None, "nr_runs": 100, "subset_size": 224, "perturb_baseline": "black",
               "seed": 0, "indices": None}
    softmax_default = False

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        return floats(fa.faithfulness_correlation(model, x, y, a, softmax=softmax, batch_size=batch_size, **self.kw))


class MonotonicityCorrelation(_FixedCorrelation):
    """Monotonicity correlation (Nguyen & Martinez 2020) as Quantus 0.6 (Spearman). ``"uniform"`` is
    heatlab's per-value seeded noise, not Quantus's one value per sample."""

    options = {"similarity_func": None, "eps": 1e-5, "nr_samples": 100, "features_in_step": 1,
               "perturb_baseline": "uniform", "seed": 0}
    abs_default = True
    correlation = "Spearman"

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        return floats(fa.monotonicity_correlation(model, x, y, a, abs=False, softmax=softmax, batch_size=batch_size,
                                                  **self.kw))


class IROF(QuantusMetric):
    """IROF (Rieger & Hansen 2020) as Quantus 0.6 (SLIC superpixels). Quantus's baselines here are
    taken over the whole batch: ``"black"`` its minimum (equal), ``"mean"`` its mean, which Quantus
    recomputes after every step and heatlab takes once from the input."""

    options = {"segmentation_method": "slic", "perturb_baseline": "mean", "segments": None}
    aggregate_default = True

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        kw = dict(self.kw)
        base = kw["perturb_baseline"]
        if isinstance(base, str) and base in ("black", "white", "mean"):
            kw["perturb_baseline"] = {"black": x.min, "white": x.max, "mean": x.mean}[base]().reshape(1)
        return floats(fa.irof(model, x, y, a, softmax=softmax, batch_size=batch_size, **kw))


class ROAD(QuantusMetric):
    """ROAD (Rong et al. 2022) as Quantus 0.6: a dict percentage -> accuracy over the batch (MoRF);
    ``order="lerf"`` for the least relevant first."""

    options = {"percentages": None, "noise": 0.01, "order": "morf", "seed": 0}

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        pct = list(range(1, 100, 2)) if self.kw["percentages"] is None else list(self.kw["percentages"])
        c = fa.road_curve(model, x, y, a, batch_size=batch_size, **self.kw)
        return dict(zip(pct, floats(c.mean(0))))


class Infidelity(QuantusMetric):
    """Infidelity (Yeh et al. 2019) as Quantus 0.6 computes it (cumulative patches, mse);
    :func:`heatlab.score.faithfulness.infidelity` is Captum's Gaussian version."""

    options = {"loss_func": "mse", "perturb_patch_sizes": None, "n_perturb_samples": 10, "perturb_baseline": "black",
               "seed": 0}
    normalise_default, softmax_default = False, False

    def configure(self) -> None:
        if self.kw.pop("loss_func") != "mse":
            raise HeatlabError("Infidelity implements loss_func='mse' only.")
        self.kw["perturb_patch_sizes"] = self.kw["perturb_patch_sizes"] or [4]

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        return floats(fa.infidelity_patches(model, x, y, a, softmax=softmax, batch_size=batch_size, **self.kw))


class NonSensitivity(QuantusMetric):
    """Non-sensitivity (Nguyen & Martinez 2020) as Quantus 0.6 (per-sample counts; Quantus itself
    only runs with ``features_in_step=1``)."""

    options = {"eps": 1e-5, "features_in_step": 1, "perturb_baseline": "black"}
    abs_default = True

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        return floats(fa.non_sensitivity(model, x, y, a, abs=False, normalise=False, softmax=softmax,
                                         batch_size=batch_size, **self.kw))


__all__ = ["FaithfulnessCorrelation", "Infidelity", "IROF", "MonotonicityCorrelation", "NonSensitivity",
           "PixelFlipping", "RegionPerturbation", "ROAD", "Selectivity"]
