"""Robustness metrics (:mod:`heatlab.score.robustness`) as Quantus 0.6 calls them. Besides Quantus's
arguments they take ``noise=`` (``K×N×...`` draws, e.g. the ones given to Quantus through
``perturb_func``) and ``seed=`` (heatlab's own draws otherwise); ``perturb_func`` must stay None."""

from __future__ import annotations

import numpy as np

from heatlab.errors import HeatlabError
from heatlab.score import robustness as _robustness
from heatlab.score.quantus._base import QuantusMetric, floats, np_normalise_by_second_moment

_DEFAULT_ONLY = ("similarity_func", "norm_numerator", "norm_denominator")


class _Robustness(QuantusMetric):
    fn = staticmethod(_robustness.max_sensitivity)
    normalise_default = False
    heatmap_dtype = np.float32
    needs_explain = True
    perturb_func_hint = "draws Quantus's default noise; pass perturb_func=None (and noise= to give the draws)"
    #: options taken from ``perturb_func_kwargs`` where given there
    from_perturb_kwargs: tuple[str, ...] = ()

    def configure(self) -> None:
        unsupported = [k for k in _DEFAULT_ONLY if self.kw.pop(k, None) is not None]
        if unsupported:
            raise HeatlabError(f"{type(self).__name__} uses Quantus's default {unsupported[0]}; pass {unsupported[0]}=None.")
        self.kw.update({k: self.perturb_func_kwargs[k] for k in self.from_perturb_kwargs if k in self.perturb_func_kwargs})

    def compute(self, model, x, y, a, *, explain, batch_size, softmax):
        return floats(type(self).fn(model, x, y, a, explain_func=explain, abs=False, normalise=False, **self.kw))


class _Sensitivity(_Robustness):
    options = {"similarity_func": None, "norm_numerator": None, "norm_denominator": None, "nr_samples": 200,
               "lower_bound": 0.2, "upper_bound": None, "return_nan_when_prediction_changes": False, "noise": None,
               "seed": 0}
    from_perturb_kwargs = ("lower_bound", "upper_bound")


class MaxSensitivity(_Sensitivity):
    """Max-sensitivity (Yeh et al. 2019). Lower is better."""

    fn = staticmethod(_robustness.max_sensitivity)


class AvgSensitivity(_Sensitivity):
    """Avg-sensitivity (Yeh et al. 2019). Lower is better."""

    fn = staticmethod(_robustness.avg_sensitivity)


class LocalLipschitzEstimate(_Robustness):
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018). Lower is better."""

    fn = staticmethod(_robustness.local_lipschitz_estimate)
    options = {"similarity_func": None, "norm_numerator": None, "norm_denominator": None, "nr_samples": 200,
               "perturb_mean": 0.0, "perturb_std": 0.1, "return_nan_when_prediction_changes": False, "noise": None,
               "seed": 0}
    normalise_default = True
    from_perturb_kwargs = ("perturb_mean", "perturb_std")


class _Stability(_Robustness):
    options = {"nr_samples": 200, "eps_min": 1e-6, "return_nan_when_prediction_changes": True, "noise": None,
               "seed": 0}
    default_normalise = staticmethod(np_normalise_by_second_moment)

    def configure(self) -> None:
        super().configure()
        self.kw["perturb_func_kwargs"] = self.perturb_func_kwargs or None


class RelativeInputStability(_Stability):
    """RIS (Agarwal et al. 2022). Lower is better."""

    fn = staticmethod(_robustness.relative_input_stability)


class RelativeOutputStability(_Stability):
    """ROS (Agarwal et al. 2022). Lower is better."""

    fn = staticmethod(_robustness.relative_output_stability)


class RelativeRepresentationStability(_Stability):
    """RRS (Agarwal et al. 2022). Lower is better."""

    fn = staticmethod(_robustness.relative_representation_stability)
    options = {**_Stability.options, "layer_names": None, "layer_indices": None}


__all__ = ["AvgSensitivity", "LocalLipschitzEstimate", "MaxSensitivity", "RelativeInputStability",
           "RelativeOutputStability", "RelativeRepresentationStability"]
