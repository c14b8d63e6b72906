"""The metric registry: every per-sample heatmap score against ground truth, one entry each.

A :class:`Metric` is a pure function ``fn(h, truth) -> float64 N`` plus what a table or report
needs to know about it. ``h`` is ``N×H×W`` channel-adjusted heatmaps (see
``heatlab.explain.postprocess.channel_adjust``) and ``truth`` ``N×H×W`` float ground truth of one
of two kinds:

- ``"levels"``: the synthetic cells' three levels 0 (irrelevant), 0.4 (cell), 0.9 (feature);
- ``"mask"``: a binary 0/1 mask of the relevant region.

``needs="mask"`` metrics work with either kind, ``needs="levels"`` ones only with levels. The
eight localisation scores (:mod:`heatlab.score.localisation`) read two masks from the truth:
**feature** = truth at its top level (``>= 0.65``: 0.9 for levels, 1 for a binary mask) and
**cell** = truth > 0 (cut at 0.2, so the rounding of a stored 0 never counts). For a binary mask
the two are the same mask, so ``".../feature"`` and ``".../cell"`` columns are equal.

``fn`` may assume validated input (:func:`per_sample_scores` validates once and calls it on chunks
of whole samples). Adding a metric is one function plus one :func:`register` line (or one line in
``_BUILTIN`` here)::

    register(Metric("my_score/feature", True, "mask", my_score, "localisation", "Someone 2024"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

from heatlab.errors import HeatlabError
from heatlab.score import localisation as loc
from heatlab.score.five_band import truth_bands

TRUTH_KINDS = ("levels", "mask")
FEATURE_CUT = 0.65  # feature mask: truth >= this (0.9 of the levels, 1 of a binary mask)
CELL_CUT = 0.2  # cell mask: truth > this (any non-zero level)

MetricFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Metric:
    """One registered score.

    name: the results-table column (e.g. ``"auc/cell"``); higher_is_better: its direction;
    needs: ``"mask"`` (any truth) or ``"levels"`` (the three cell levels only); fn: ``fn(h N×H×W,
    truth N×H×W) -> float64 N`` on ``h``'s device (NaN where undefined); family: a group name for
    tables and reports (e.g. ``"localisation"``); source: the citation shown in the report.
    """

    name: str
    higher_is_better: bool
    needs: str
    fn: MetricFn
    family: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise HeatlabError(f"A metric needs a non-empty string name, got {self.name!r}.")
        if self.needs not in TRUTH_KINDS:
            raise HeatlabError(f"Metric {self.name!r}: needs must be 'mask' or 'levels', got {self.needs!r}.")
        if not isinstance(self.higher_is_better, bool):
            raise HeatlabError(f"Metric {self.name!r}: higher_is_better must be True or False.")
        if not callable(self.fn):
            raise HeatlabError(f"Metric {self.name!r}: fn must be a function fn(h, truth) -> Tensor N.")


_REGISTRY: dict[str, Metric] = {}

#: Metric name -> :class:`Metric`, in registration order (read-only view; add with :func:`register`).
METRICS: Mapping[str, Metric] = MappingProxyType(_REGISTRY)


def register(metric: Metric) -> Metric:
    """Add ``metric`` to :data:`METRICS` (names are unique); returns it."""
    if not isinstance(metric, Metric):
        raise HeatlabError(f"register() takes a Metric, got {type(metric).__name__}.")
    if metric.name in _REGISTRY:
        raise HeatlabError(f"A metric named {metric.name!r} is already registered; pick another name.")
    _REGISTRY[metric.name] = metric
    return metric


def available_metrics(truth_kind: str | None = None) -> list[str]:
    """Registered metric names, in order; with ``truth_kind``, only those applicable to it."""
    if truth_kind is None:
        return list(_REGISTRY)
    _check_kind(truth_kind)
    return [m.name for m in _REGISTRY.values() if _applies(m, truth_kind)]


def per_sample_scores(h: Tensor, truth: Tensor, truth_kind: str) -> dict[str, Tensor]:
    """Every registered metric applicable to ``truth_kind``: name -> float64 ``N`` on ``h``'s device.

    h: float ``N×H×W`` heatmaps, finite; truth: ``N×H×W`` on the same device, the three levels
    (``truth_kind="levels"``) or a 0/1 (or bool) mask (``"mask"``). Validated once, then each
    metric runs on chunks of whole samples (the localisation metrics share one sort per chunk).

    Raises:
        HeatlabError: bad heatmaps, truth of another shape or device, truth values not of the kind.
    """
    _check_kind(truth_kind)
    loc._check_heatmaps(h)
    if not isinstance(truth, Tensor) or truth.shape != h.shape:
        shape = tuple(truth.shape) if isinstance(truth, Tensor) else type(truth).__name__
        raise HeatlabError(f"Heatmaps {tuple(h.shape)} and ground truth {shape} differ; pass one truth map per heatmap.")
    if truth.device != h.device:
        raise HeatlabError(f"Heatmaps are on {h.device} but ground truth is on {truth.device}; move both to one device.")
    if truth_kind == "levels":
        truth_bands(truth)  # raises unless every value is 0, 0.4 or 0.9
    else:
        loc._check_mask(truth, h)
    if not truth.is_floating_point():
        truth = truth.float()
    metrics = [m for m in _REGISTRY.values() if _applies(m, truth_kind)]
    parts: dict[str, list[Tensor]] = {m.name: [] for m in metrics}
    with loc.shared_rows():
        for hc, tc in loc._row_chunks(h, truth):
            for m in metrics:
                parts[m.name].append(m.fn(hc, tc))
    empty = torch.empty(0, dtype=torch.float64, device=h.device)
    return {name: torch.cat(p) if p else empty for name, p in parts.items()}


def feature_mask(truth: Tensor) -> Tensor:
    """The discriminative-feature mask, bool of ``truth``'s shape: truth >= 0.65."""
    return truth >= FEATURE_CUT


def cell_mask(truth: Tensor) -> Tensor:
    """The whole-cell (any relevant pixel) mask, bool of ``truth``'s shape: truth > 0 (cut at 0.2)."""
    return truth > CELL_CUT


# ----------------------------------------------------------------------------- built-in metrics


def _localisation(row_metric: str, mask: Callable[[Tensor], Tensor]) -> MetricFn:
    """``fn(h, truth)``: the localisation metric ``row_metric`` against ``mask(truth)``."""
    rows_fn = loc.ROW_METRICS[row_metric]

    def fn(h: Tensor, truth: Tensor) -> Tensor:
        return rows_fn(loc.rows_of(h), mask(truth).reshape(h.shape[0], -1))

    return fn


_ZHANG = "Zhang et al. 2018, “Top-down neural attention by excitation backprop”, IJCV"
_ARRAS = ("Arras et al. 2022, “CLEVR-XAI: a benchmark dataset for the ground truth evaluation of "
          "neural network explanations”, Information Fusion")
_ARRAS_RANK = "Arras et al. 2022 (relevance rank accuracy, same paper)"
_FAWCETT = "Fawcett 2006, “An introduction to ROC analysis”, Pattern Recognition Letters"

_BUILTIN = (
    Metric("pointing_game/feature", True, "mask", _localisation("pointing_game", feature_mask), "localisation", _ZHANG),
    Metric("relevance_mass_accuracy/feature", True, "mask", _localisation("relevance_mass_accuracy", feature_mask),
           "localisation", _ARRAS),
    Metric("relevance_rank_accuracy/feature", True, "mask", _localisation("relevance_rank_accuracy", feature_mask),
           "localisation", _ARRAS_RANK),
    Metric("auc/feature", True, "mask", _localisation("auc", feature_mask), "localisation", _FAWCETT),
    Metric("pointing_game/cell", True, "mask", _localisation("pointing_game", cell_mask), "localisation", _ZHANG),
    Metric("relevance_mass_accuracy/cell", True, "mask", _localisation("relevance_mass_accuracy", cell_mask),
           "localisation", _ARRAS),
    Metric("relevance_rank_accuracy/cell", True, "mask", _localisation("relevance_rank_accuracy", cell_mask),
           "localisation", _ARRAS_RANK),
    Metric("auc/cell", True, "mask", _localisation("auc", cell_mask), "localisation", _FAWCETT),
)
for _metric in _BUILTIN:
    register(_metric)


def _applies(metric: Metric, truth_kind: str) -> bool:
    return metric.needs == "mask" or truth_kind == "levels"


def _check_kind(truth_kind: str) -> None:
    if truth_kind not in TRUTH_KINDS:
        raise HeatlabError(f"Unknown truth kind {truth_kind!r}; pass truth_kind='levels' or truth_kind='mask'.")
