"""heatlab's metrics as Quantus-style callables: ``metric(model=, x_batch=, y_batch=, a_batch=, s_batch=)``.

Each class is configured once and called like a Quantus 0.6 metric; it returns one value per sample
(a list, as Quantus does; NaN where the score is undefined). Inputs are NumPy arrays or torch
tensors as Quantus passes them: ``x_batch`` N×C×H×W, ``a_batch`` N×1×H×W, N×C×H×W or N×H×W,
``s_batch`` N×1×H×W or N×H×W (bool or 0/1, or the cells' levels 0/0.4/0.9 for five-band). When
``a_batch`` is None, ``explain_func(model=, inputs=x_batch, targets=y_batch, **explain_func_kwargs)``
computes it (e.g. ``heatlab.explain.explain_func``). The shared call is in :mod:`._base`.

- With ground truth: localisation (:mod:`.localisation`: :class:`PointingGame`,
  :class:`RelevanceMassAccuracy`, :class:`RelevanceRankAccuracy`, :class:`AUC`), five-band
  (:mod:`.five_band`: :class:`FiveBandAccuracy`, :class:`FiveBandPrecision`, :class:`FiveBandRecall`,
  :class:`FiveBandFPR`) and :class:`Registered` (any entry of the metric registry by name).
- Without: faithfulness (:mod:`.faithfulness`), randomisation (:mod:`.randomisation`), robustness
  (:mod:`.robustness`), complexity (:mod:`.complexity`) and axiomatic (:mod:`.axiomatic`), with Quantus
  0.6's constructor arguments and defaults; unknown arguments are refused. As in Quantus, heatmaps are
  normalised over the whole batch (``normalise_func``) when ``normalise``, then made absolute when
  ``abs``; a given ``a_batch`` and each re-explained batch alike (Quantus re-explains in chunks of
  ``batch_size``; heatlab explains the whole ``x_batch`` at once, the same when
  ``len(x_batch) <= batch_size``). ``explain_func`` is called as Quantus calls it, with NumPy
  ``inputs``/``targets``.
"""

from __future__ import annotations

from heatlab.score.quantus.axiomatic import Completeness, InputInvariance
from heatlab.score.quantus.complexity import Complexity, EffectiveComplexity, Sparseness
from heatlab.score.quantus.faithfulness import (IROF, ROAD, FaithfulnessCorrelation, Infidelity, MonotonicityCorrelation,
                                                NonSensitivity, PixelFlipping, RegionPerturbation, Selectivity)
from heatlab.score.quantus.five_band import (FiveBandAccuracy, FiveBandFPR, FiveBandPrecision, FiveBandRecall,
                                             Registered)
from heatlab.score.quantus.localisation import AUC, PointingGame, RelevanceMassAccuracy, RelevanceRankAccuracy
from heatlab.score.quantus.randomisation import MPRT, EfficientMPRT, RandomLogit, SmoothMPRT
from heatlab.score.quantus.robustness import (AvgSensitivity, LocalLipschitzEstimate, MaxSensitivity,
                                              RelativeInputStability, RelativeOutputStability,
                                              RelativeRepresentationStability)

__all__ = ["AUC", "AvgSensitivity", "Completeness", "Complexity", "EffectiveComplexity", "EfficientMPRT",
           "FaithfulnessCorrelation", "FiveBandAccuracy", "FiveBandFPR", "FiveBandPrecision", "FiveBandRecall",
           "Infidelity", "InputInvariance", "IROF", "LocalLipschitzEstimate", "MaxSensitivity",
           "MonotonicityCorrelation", "MPRT", "NonSensitivity", "PixelFlipping", "PointingGame", "RandomLogit",
           "RegionPerturbation", "Registered", "RelativeInputStability", "RelativeOutputStability",
           "RelativeRepresentationStability", "RelevanceMassAccuracy", "RelevanceRankAccuracy", "ROAD",
           "Selectivity", "SmoothMPRT", "Sparseness"]
