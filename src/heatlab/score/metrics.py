"""The metric registry: every per-sample heatmap score, one immutable entry each.

A :class:`Metric` is a pure function plus what a table or report needs to know about it: its
direction (``higher_is_better``: True, False, or None where neither is better), its ``family``,
its citation (``source``), what it ``needs`` and the ``table`` whose column holds it.

**Calling contract.** ``fn(h, truth=None, *, model=None, x=None, y=None, a=None, explain=None,
seed=0) -> float64 N`` (on ``h``'s device, NaN where undefined):

- ``h``: ``N×H×W`` channel-adjusted heatmaps (``heatlab.explain.postprocess.channel_adjust``);
- ``truth``: ``N×H×W`` float ground truth, the cells' three levels 0/0.4/0.9 or a binary 0/1 mask
  (None when the data has none);
- ``model``, ``x`` (``N×...`` inputs, on the CPU), ``y`` (the classes the heatmaps explain, int64
  ``N``), ``a`` (the raw attributions, ``x``'s shape, on the CPU), ``explain`` (``explain(model,
  x, y) -> attributions`` with the same method and settings as ``a``), ``seed``.

``needs`` says which inputs a metric requires: ``"levels"`` (the three levels only), ``"mask"``
(any truth), ``"inputs"`` (x, y, a), ``"model"`` (the model, with x, y, a), ``"explain"`` (also
``explain``); empty for a metric of ``h`` alone. A metric whose needs are only truth (or nothing)
is called ``fn(h, truth)`` on chunks of whole samples (it may take just those two arguments); one
that needs more is called once per batch with every keyword. The no-ground-truth metrics written
as ``fn(model, x, y, a, *, explain_func=None, seed=0, **options) -> float64 N`` fit through
:class:`FromAttributions`; :meth:`Metric.from_info` makes the entry of a family module's
``MetricInfo`` (``name, fn, higher_is_better, family, needs, source``) in one call.

The eight localisation scores (:mod:`heatlab.score.localisation`) read two masks from the truth:
**feature** = truth at its top level (``>= 0.65``: 0.9 for levels, 1 for a binary mask) and
**cell** = truth > 0 (cut at 0.2, so the rounding of a stored 0 never counts). For a binary mask
the two are the same mask, so ``".../feature"`` and ``".../cell"`` columns are equal.

**Tables.** ``heatlab evaluate`` computes the entries of ``table="localisation"`` (the per-sample
scores table, named after its first family). The five-band entries (``table="five_band"``,
computed with their ROC by evaluate's five-band step), CO (``"co"``, ``heatlab ax``), the LRP filters' MAE (``"lrp_filters_localisation"``) and Mean Power
(``"lrp_study"``, ``heatlab lrp-study``) are computed by their stages; their entries give the
report direction and citation, and their ``fn`` computes them alone. The no-truth metrics of the
five family modules (faithfulness, randomisation, robustness, complexity, axiomatic) are entries of
``table="no_truth"``: evaluate runs those ``--metrics`` asks for (default: a fast set,
:mod:`heatlab.score.no_truth`) into ``tables/no_truth.parquet``.

**Adding a metric** is one function plus one entry. In heatlab: one line in ``_BUILTIN`` here. Elsewhere,
without touching heatlab: ``metrics = METRICS.register(Metric(...))`` and ``evaluate_run(run,
metrics=metrics)`` (:mod:`heatlab.registry`: ``register`` returns a new registry, nothing global
changes), or a ``heatlab.metrics`` entry point naming the :class:`Metric`, which every stage
sees by default (:func:`metric_registry`)::

    Metric("my_score/feature", True, "mask", my_score, "localisation", "Someone 2024")
    Metric("pixel_flipping", False, ("inputs", "model"), FromAttributions(pixel_flipping), "faithfulness", "Bach et al. 2015"),
    *(Metric.from_info(info) for info in complexity.COMPLEXITY),  # a family module's MetricInfo tuple
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from heatlab.errors import HeatlabError
from heatlab.registry import Registry
from heatlab.score import localisation as loc
from heatlab.score.axiomatic import AXIOMATIC
from heatlab.score.complexity import COMPLEXITY
from heatlab.score.faithfulness import FAITHFULNESS
from heatlab.score.randomisation import RANDOMISATION
from heatlab.score.robustness import ROBUSTNESS
from heatlab.score.co import co_score, prepare_heatmaps
from heatlab.score.five_band import five_band, truth_bands
from heatlab.score.mean_power import mean_power

TRUTH_KINDS = ("levels", "mask")
#: What a metric may need (see the module docstring).
NEEDS = ("levels", "mask", "inputs", "model", "explain")
#: The table evaluate writes the per-sample scores of the registry into.
SCORES_TABLE = "localisation"
#: The table of the metrics that need no ground truth (run only when asked for: heatlab.score.no_truth).
NO_TRUTH_TABLE = "no_truth"
FEATURE_CUT = 0.65  # feature mask: truth >= this (0.9 of the levels, 1 of a binary mask)
CELL_CUT = 0.2  # cell mask: truth > this (any non-zero level)

MetricFn = Callable[..., Tensor]


@dataclass(frozen=True)
class Metric:
    """One registered score (see the module docstring for the calling contract).

    name: the table column (e.g. ``"auc/cell"``); higher_is_better: True, False or None (neither
    direction is better, e.g. Mean Power); needs: one of :data:`NEEDS` or a tuple of them (empty:
    ``h`` alone); fn: the score; family: a group name for tables and reports; source: the citation
    shown in the report; table: the table whose column holds it.
    """

    name: str
    higher_is_better: bool | None
    needs: str | tuple[str, ...]
    fn: MetricFn
    family: str = ""
    source: str = ""
    table: str = SCORES_TABLE

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise HeatlabError(f"A metric needs a non-empty string name, got {self.name!r}.")
        needs = (self.needs,) if isinstance(self.needs, str) else self.needs
        if not isinstance(needs, tuple) or any(n not in NEEDS for n in needs):
            raise HeatlabError(f"Metric {self.name!r}: needs must be some of {', '.join(NEEDS)} (or empty), "
                               f"got {self.needs!r}.")
        object.__setattr__(self, "needs", needs)
        if self.higher_is_better is not None and not isinstance(self.higher_is_better, bool):
            raise HeatlabError(f"Metric {self.name!r}: higher_is_better must be True, False or None.")
        if not callable(self.fn):
            raise HeatlabError(f"Metric {self.name!r}: fn must be a function fn(h, truth, ...) -> Tensor N.")

    @property
    def truth(self) -> str | None:
        """The truth it needs: ``"levels"``, ``"mask"`` (either kind) or None."""
        return next((n for n in TRUTH_KINDS if n in self.needs), None)

    @property
    def needs_model(self) -> bool:
        return "model" in self.needs or "explain" in self.needs

    @property
    def whole_batch(self) -> bool:
        """It reads more than ``h`` and the truth: called once per batch with every keyword."""
        return self.needs_model or "inputs" in self.needs

    @classmethod
    def from_info(cls, info: Any, table: str = SCORES_TABLE) -> Metric:
        """The entry of a no-truth metric described as ``info`` (``name, fn(model, x, y, a, *, explain_func,
        seed), higher_is_better, family, needs, source``, e.g. a ``MetricInfo`` of a family module)."""
        needs = tuple(dict.fromkeys(("inputs", *info.needs)))  # fn reads a, x and y whatever else it needs
        return cls(info.name, info.higher_is_better, needs, FromAttributions(info.fn), info.family, info.source, table)

    @property
    def direction(self) -> str:
        """``"higher is better"``, ``"lower is better"`` or ``"neither direction is better"``."""
        return {True: "higher is better", False: "lower is better"}.get(self.higher_is_better,
                                                                       "neither direction is better")

    def record(self) -> dict[str, Any]:
        """What a stage summary stores of the entry (the report reads it back)."""
        return {"higher_is_better": self.higher_is_better, "needs": list(self.needs), "family": self.family,
                "source": self.source, "table": self.table}


@dataclass(frozen=True)
class FromAttributions:
    """A metric ``fn(model, x, y, a, *, explain_func=None, seed=0, **options) -> float64 N`` in the
    registry's calling contract (register it with needs ``"inputs"``, ``("inputs", "model")`` or
    ``("inputs", "model", "explain")``, as ``fn`` reads them; :meth:`Metric.from_info` does)."""

    fn: Callable[..., Tensor]
    options: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, h: Tensor, truth: Tensor | None = None, *, model=None, x=None, y=None, a=None,
                 explain=None, seed: int = 0) -> Tensor:
        offered = {"explain_func": explain, "seed": seed}  # only those fn takes (a metric of a alone takes neither)
        params = inspect.signature(self.fn).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        # a fn(..., **kw) that forwards to a curve takes the seed but re-explains only if it names explain_func
        extra = {k: v for k, v in offered.items() if k in params or takes_all and k == "seed"}
        return self.fn(model, x, y, a, **extra, **self.options)


def metric_registry() -> Registry[Metric]:
    """The metrics every stage uses by default: :data:`METRICS` plus the ``heatlab.metrics`` entry points."""
    return METRICS.with_entry_points()


def register(metric: Metric) -> Registry[Metric]:
    """A new registry: :data:`METRICS` and ``metric`` (the built-in registry itself is unchanged)."""
    if not isinstance(metric, Metric):
        raise HeatlabError(f"register() takes a Metric, got {type(metric).__name__}.")
    return METRICS.register(metric)


def available_metrics(truth_kind: str | None = None, metrics: Mapping[str, Metric] | None = None) -> list[str]:
    """Metric names of evaluate's scores table, in order; with ``truth_kind``, only those that apply to it
    without a model. ``metrics``: the registry (default :data:`METRICS`)."""
    metrics = METRICS if metrics is None else metrics
    if truth_kind is not None:
        _check_kind(truth_kind)
    return [m.name for m in metrics.values() if m.table == SCORES_TABLE
            and (truth_kind is None or applies(m, truth_kind, model=False))]


def applies(metric: Metric, truth_kind: str | None, *, model: bool, inputs: bool | None = None) -> bool:
    """Whether ``metric`` can be computed on data with ``truth_kind`` (None: no truth), with or without the
    model and the inputs x, y, a (``inputs`` defaults to ``model``)."""
    inputs = model if inputs is None else inputs
    truth_ok = metric.truth is None or metric.truth == "mask" and truth_kind is not None or truth_kind == "levels"
    return truth_ok and (model or not metric.needs_model) and (inputs or not metric.whole_batch)


def per_sample_scores(h: Tensor, truth: Tensor | None, truth_kind: str | None, *,
                      metrics: Mapping[str, Metric] | None = None, model=None, x: Tensor | None = None,
                      y: Tensor | None = None, a: Tensor | None = None, explain=None,
                      seed: int = 0) -> dict[str, Tensor]:
    """Every metric of the scores table that applies: name -> float64 ``N`` on ``h``'s device.

    h: float ``N×H×W`` heatmaps, finite; truth: ``N×H×W`` on the same device, the three levels
    (``truth_kind="levels"``) or a 0/1 (or bool) mask (``"mask"``), or None with ``truth_kind=None``.
    metrics: the registry (default :data:`METRICS`). With ``model`` (and ``x``, ``y``, ``a``,
    ``explain``) the metrics that need the model run too, once on the whole batch; the others run
    on chunks of whole samples (the localisation metrics share one sort per chunk).

    Raises:
        HeatlabError: bad heatmaps, truth of another shape or device, truth values not of the kind,
            a metric returning other than one value per sample.
    """
    metrics = METRICS if metrics is None else metrics
    loc._check_heatmaps(h)
    if truth_kind is not None:
        _check_kind(truth_kind)
        truth = _checked_truth(h, truth, truth_kind)
    chosen = [m for m in metrics.values()
              if m.table == SCORES_TABLE and applies(m, truth_kind, model=model is not None, inputs=a is not None)]
    parts: dict[str, list[Tensor]] = {m.name: [] for m in chosen}
    chunked = [m for m in chosen if not m.whole_batch]
    with loc.shared_rows():
        for hc, tc in loc._row_chunks(h, truth if truth is not None else h):
            for m in chunked:
                parts[m.name].append(_checked(m, m.fn(hc, tc if truth is not None else None), len(hc), h.device))
    context = {"model": model, "x": x, "y": y, "a": a, "explain": explain, "seed": seed}
    for m in chosen:
        if m.whole_batch:
            parts[m.name].append(_checked(m, m.fn(h, truth, **context), len(h), h.device))
    empty = torch.empty(0, dtype=torch.float64, device=h.device)
    return {name: torch.cat(p) if p else empty for name, p in parts.items()}


def _checked_truth(h: Tensor, truth: Tensor, truth_kind: str) -> Tensor:
    if not isinstance(truth, Tensor) or truth.shape != h.shape:
        shape = tuple(truth.shape) if isinstance(truth, Tensor) else type(truth).__name__
        raise HeatlabError(f"Heatmaps {tuple(h.shape)} and ground truth {shape} differ; pass one truth map per heatmap.")
    if truth.device != h.device:
        raise HeatlabError(f"Heatmaps are on {h.device} but ground truth is on {truth.device}; move both to one device.")
    if truth_kind == "levels":
        truth_bands(truth)  # raises unless every value is 0, 0.4 or 0.9
    else:
        loc._check_mask(truth, h)
    return truth if truth.is_floating_point() else truth.float()


def _checked(metric: Metric, values: object, n: int, device: torch.device) -> Tensor:
    if not isinstance(values, Tensor) or values.shape != (n,):
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise HeatlabError(f"Metric {metric.name!r} returned {shape} for {n} samples; make its fn return one "
                           "value per sample (a tensor of shape N).")
    return values.to(device=device, dtype=torch.float64)


def feature_mask(truth: Tensor) -> Tensor:
    """The discriminative-feature mask, bool of ``truth``'s shape: truth >= 0.65."""
    return truth >= FEATURE_CUT


def cell_mask(truth: Tensor) -> Tensor:
    """The whole-cell (any relevant pixel) mask, bool of ``truth``'s shape: truth > 0 (cut at 0.2)."""
    return truth > CELL_CUT


# ----------------------------------------------------------------------------- built-in metrics


@dataclass(frozen=True)
class _Localisation:
    """``fn(h, truth)``: the localisation metric ``row_metric`` against ``mask(truth)``."""

    row_metric: str
    mask: Callable[[Tensor], Tensor]

    def __call__(self, h: Tensor, truth: Tensor) -> Tensor:
        return loc.ROW_METRICS[self.row_metric](loc.rows_of(h), self.mask(truth).reshape(h.shape[0], -1))


@dataclass(frozen=True)
class _FiveBand:
    """``fn(h, truth)``: one five-band column (paper 002) of the standard soft thresholds, e.g. ``recall_best``."""

    column: str

    def __call__(self, h: Tensor, truth: Tensor) -> Tensor:
        metric, stat = self.column.rsplit("_", 1)
        return getattr(five_band(h, truth), stat)[metric].double()


def _co(h: Tensor, truth: Tensor | None = None, *, model=None, x=None, y=None, a=None, explain=None,
        seed: int = 0) -> Tensor:
    """The raw x + h CO score (papers 000/001) of the attributions ``a``, scaled as AX scales them."""
    return co_score(model, x, prepare_heatmaps(a), y).double()


def _mae(h: Tensor, truth: Tensor) -> Tensor:
    """Paper 004's eq. (5) with the truth as reference: mean |h − truth| of the adjusted heatmap."""
    return (h - truth.to(h.dtype)).abs().mean((1, 2)).double()


def _mean_power(h: Tensor, truth: Tensor | None = None) -> Tensor:
    """Mean Power (paper 004) of each sample's heatmap (t = 0.8)."""
    return mean_power(h).mp.double()


_ZHANG = "Zhang et al. 2018, “Top-down neural attention by excitation backprop”, IJCV"
_ARRAS = ("Arras et al. 2022, “CLEVR-XAI: a benchmark dataset for the ground truth evaluation of "
          "neural network explanations”, Information Fusion")
_ARRAS_RANK = "Arras et al. 2022 (relevance rank accuracy, same paper)"
_FAWCETT = "Fawcett 2006, “An introduction to ROC analysis”, Pattern Recognition Letters"
_TJOA_002 = "Tjoa and Guan, “Quantifying explainability of saliency methods in deep neural networks” (paper 002, §III-C)"
_TJOA_000 = ("Tjoa and Guan, “Improving DNN classification confidence using heatmap-based XAI” (papers 000/001, "
             "eq. 5)")
_TJOA_004 = "Tjoa and Guan, “Rectification of layer-wise relevance signals by filters” (paper 004, §4.1)"
_FIVE_BAND = (("accuracy", True), ("precision", True), ("recall", True), ("fpr", False))

_BUILTIN = (
    Metric("pointing_game/feature", True, "mask", _Localisation("pointing_game", feature_mask), "localisation", _ZHANG),
    Metric("relevance_mass_accuracy/feature", True, "mask", _Localisation("relevance_mass_accuracy", feature_mask),
           "localisation", _ARRAS),
    Metric("relevance_rank_accuracy/feature", True, "mask", _Localisation("relevance_rank_accuracy", feature_mask),
           "localisation", _ARRAS_RANK),
    Metric("auc/feature", True, "mask", _Localisation("auc", feature_mask), "localisation", _FAWCETT),
    Metric("pointing_game/cell", True, "mask", _Localisation("pointing_game", cell_mask), "localisation", _ZHANG),
    Metric("relevance_mass_accuracy/cell", True, "mask", _Localisation("relevance_mass_accuracy", cell_mask),
           "localisation", _ARRAS),
    Metric("relevance_rank_accuracy/cell", True, "mask", _Localisation("relevance_rank_accuracy", cell_mask),
           "localisation", _ARRAS_RANK),
    Metric("auc/cell", True, "mask", _Localisation("auc", cell_mask), "localisation", _FAWCETT),
    *(Metric(f"{m}_{stat}", up, "levels", _FiveBand(f"{m}_{stat}"), "five-band", _TJOA_002, table="five_band")
      for m, up in _FIVE_BAND for stat in ("avg", "best")),
    Metric("co_raw_sum", True, "model", _co, "CO/AX", _TJOA_000, table="co"),
    Metric("mae", False, "mask", _mae, "LRP filters", _TJOA_004.replace("§4.1", "eq. (5)"), table="lrp_filters_localisation"),
    Metric("mean_power", None, (), _mean_power, "Mean Power", _TJOA_004, table="lrp_study"),
)


def _no_truth_entries() -> tuple[Metric, ...]:
    return tuple(Metric.from_info(i, table=NO_TRUTH_TABLE)
                 for i in (*FAITHFULNESS, *RANDOMISATION, *ROBUSTNESS, *COMPLEXITY, *AXIOMATIC))


_BUILTIN = (*_BUILTIN, *_no_truth_entries())

#: The built-in metrics (immutable; ``METRICS.register(...)`` returns a new registry).
METRICS: Registry[Metric] = Registry("metrics", Metric, _BUILTIN)
def _check_kind(truth_kind: str) -> None:
    if truth_kind not in TRUTH_KINDS:
        raise HeatlabError(f"Unknown truth kind {truth_kind!r}; pass truth_kind='levels' or truth_kind='mask'.")
