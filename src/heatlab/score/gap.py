"""The correct/wrong gap of CO scores as numbers (papers 000/001, §4.1 "Gaps in CO scores").

The papers show that heatmaps attributed to the predicted class give correctly predicted samples
higher CO scores than wrongly predicted ones, and suggest flagging likely errors by where a score
lies relative to the gap. :func:`gap_analysis` measures that:

* ``auroc``: area under the ROC curve of CO as a detector of *correct* predictions, i.e.
  P(CO of a random correct sample > CO of a random wrong one), ties counted one half
  (Mann-Whitney, average ranks). 1 = perfectly separated with correct above, 0.5 = no
  information, 0 = perfectly separated the other way. Higher is better.
* ``median_correct``, ``median_wrong``: the groups' medians.
* ``empty_interval``: ``(lo, hi)`` when no score lies between the groups, i.e.
  ``max(wrong) < min(correct)`` (then ``(max(wrong), min(correct))``) or the reverse
  (``(max(correct), min(wrong))``); ``None`` when the groups overlap.
* ``threshold``: samples with ``CO < threshold`` are flagged as likely errors. It maximises
  Youden's J = (share of wrong samples flagged) − (share of correct samples flagged) over the
  midpoints between consecutive distinct scores (plus "flag none" and "flag all"); among equal J
  the smallest threshold (fewest flags) wins. It is chosen on the *holdout* scores when they are
  given, otherwise on the analysed scores themselves (in-sample, optimistic).
* ``flag_precision`` (flagged samples that are wrong) and ``flag_recall`` (wrong samples that are
  flagged), always measured on the analysed scores, so with a holdout the threshold never saw them
  (e.g. choose on the validation split, report on the test split).

A group with no samples gives NaN for every number that needs it (no exception) and says so in
``note``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata
from torch import Tensor

from heatlab.errors import HeatlabError


@dataclass(frozen=True)
class GapResult:
    """The gap between the CO scores of correct and wrong predictions (see the module docstring)."""

    auroc: float
    median_correct: float
    median_wrong: float
    empty_interval: tuple[float, float] | None
    threshold: float
    flag_precision: float
    flag_recall: float
    n_correct: int
    n_wrong: int
    threshold_source: str  # "holdout" or "in-sample"
    note: str = ""

    def as_row(self) -> dict:
        """Flat dict for a table: ``empty_interval`` becomes ``interval_low``/``interval_high`` (NaN if none)."""
        row = asdict(self)
        lo, hi = row.pop("empty_interval") or (math.nan, math.nan)
        return {**row, "interval_low": lo, "interval_high": hi}


def gap_analysis(co, correct, *, holdout_co=None, holdout_correct=None) -> GapResult:
    """Gap numbers of CO scores ``co`` (``N``) given ``correct`` (bool ``N``) predictions.

    ``holdout_co``/``holdout_correct`` (``M`` each, both or neither): scores of another split,
    used only to choose the flag threshold. Accepts tensors or array-likes.
    """
    s, ok = _check(co, correct, "co", "correct")
    if (holdout_co is None) != (holdout_correct is None):
        raise HeatlabError("Pass both holdout_co and holdout_correct, or neither.")
    if holdout_co is not None:
        hs, hok = _check(holdout_co, holdout_correct, "holdout_co", "holdout_correct")
        source = "holdout"
    else:
        hs, hok, source = s, ok, "in-sample"
    good, bad = s[ok], s[~ok]
    notes = []
    if len(good) == 0 or len(bad) == 0:
        notes.append(f"no {'correct' if len(good) == 0 else 'wrong'} predictions, so there is no gap to measure")
    threshold = _choose_threshold(hs[hok], hs[~hok])
    if math.isnan(threshold) and source == "holdout":
        notes.append(f"the holdout scores have no {'correct' if not hok.any() else 'wrong'} predictions, "
                     "so no flag threshold was chosen")
    flagged = s < threshold  # all False for a NaN threshold
    n_flagged, caught = int(flagged.sum()), int((flagged & ~ok).sum())
    return GapResult(
        auroc=_auroc(good, bad),
        median_correct=_median(good),
        median_wrong=_median(bad),
        empty_interval=_empty_interval(good, bad),
        threshold=threshold,
        flag_precision=caught / n_flagged if n_flagged else math.nan,
        flag_recall=caught / len(bad) if len(bad) and not math.isnan(threshold) else math.nan,
        n_correct=int(len(good)),
        n_wrong=int(len(bad)),
        threshold_source=source,
        note="; ".join(notes),
    )


def auroc(positive, negative) -> float:
    """P(a random ``positive`` score > a random ``negative`` one), ties one half; NaN if a side is empty."""
    return _auroc(np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64))


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks for ties
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) else math.nan


def _empty_interval(good: np.ndarray, bad: np.ndarray) -> tuple[float, float] | None:
    if len(good) == 0 or len(bad) == 0:
        return None
    if bad.max() < good.min():
        return float(bad.max()), float(good.min())
    if good.max() < bad.min():
        return float(good.max()), float(bad.min())
    return None


def _choose_threshold(good: np.ndarray, bad: np.ndarray) -> float:
    """The Youden-optimal ``t`` for the rule "``CO < t`` is flagged"; NaN when a group is empty."""
    if len(good) == 0 or len(bad) == 0:
        return math.nan
    u = np.unique(np.concatenate([good, bad]))
    # u[0] flags nothing, midpoints split consecutive scores, nextafter(max) flags everything.
    candidates = np.concatenate([u[:1], (u[:-1] + u[1:]) / 2, [np.nextafter(u[-1], np.inf)]])
    flagged_bad = np.searchsorted(np.sort(bad), candidates, side="left") / len(bad)
    flagged_good = np.searchsorted(np.sort(good), candidates, side="left") / len(good)
    return float(candidates[np.argmax(flagged_bad - flagged_good)])  # argmax: first = smallest t


def _check(co, correct, co_name: str, correct_name: str) -> tuple[np.ndarray, np.ndarray]:
    s = _numpy(co).astype(np.float64)
    c = _numpy(correct)
    if s.ndim != 1 or c.shape != s.shape:
        raise HeatlabError(
            f"{co_name} and {correct_name} must be 1-D with one entry per sample, got shapes "
            f"{tuple(s.shape)} and {tuple(c.shape)}."
        )
    if not np.isfinite(s).all():
        raise HeatlabError(f"{co_name} contains NaN or Inf; compute the CO scores from finite heatmaps.")
    if c.dtype != np.bool_:
        if not np.isin(c, (0, 1)).all():
            raise HeatlabError(f"{correct_name} must hold booleans (or 0/1), one per sample.")
        c = c.astype(bool)
    return s, c


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
