"""Intervals over samples and branches, the rule that names a best method, and "near chance".

A run trains B branch models (1-5 in practice) and scores each on the same split, so a method's
score has two sources of spread: the samples and the branches. The intervals here are chosen to be
honest at those sizes:

* :func:`mean_interval` (a per-sample score such as five-band recall): with B >= 3, the 95% t
  interval over the B branches' means (each branch's mean over its samples), t with B - 1
  degrees of freedom. A branch mean already carries its samples' noise, so this one interval covers
  both sources. With B = 1 or 2 a t interval over branches is useless (t(0.975, 1) = 12.7 with 2
  branches: nearly everything overlaps), so it is a seeded percentile bootstrap over the samples
  within the branches: every branch scored the same samples, so each resample draws the samples once
  and uses them in every branch (:func:`_crossed_bootstrap` without resampling rows). It shows the
  samples' spread and cannot include branch-to-branch spread (``Interval.kind`` says which interval).
* :func:`auroc_interval` (one AUROC per branch, e.g. CO as a detector of correct predictions):
  with B >= 2 the same t interval over the branches' AUROCs; with B = 1 a seeded, stratified
  bootstrap over the samples (correct and wrong resampled separately, 2,000 resamples, percentile
  interval).

* :func:`paired_difference` (a filter or setting against a baseline, scored on the *same* cells by
  every branch): the mean per-cell difference and a seeded percentile bootstrap that resamples the
  cells jointly across branches (the branches share them) and, with B >= 3, the branches too (a
  crossed, "pigeonhole" bootstrap). Pairing removes the cells' own spread; resampling the shared
  cells once per resample keeps B identical branches from looking like B times the evidence.
  :func:`difference_verdict` reads it as better / worse / tied in the metric's direction.
* :func:`bootstrap_over_seeds_and_samples` (a per-sample score of S seeded repeats on the same N
  samples, e.g. whether each Mixer seed classifies each test sample correctly): a seeded
  hierarchical percentile bootstrap that resamples the seeds, then the samples (one draw of sample
  indices per resample, shared by its seeds, since every seed scored the same samples). Unlike a t
  interval over the seeds' means it is not zero-wide when the seeds agree but the samples vary.

A t interval of a bounded score is clipped to the score's range when the caller passes ``bounds``.

:func:`pick_best` names the method with the best estimate, unless another method's interval
overlaps its interval: then those methods are *tied* (overlap is a conservative rule, not a test).
:func:`near_chance` flags a classifier whose accuracy is below 1/K + 0.1 for K classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from heatlab.errors import HeatlabError
from heatlab.score.gap import auroc

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
#: A classifier is near chance when its accuracy is below 1/K + this.
CHANCE_MARGIN = 0.1


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval; ``low``/``high`` are NaN when too few values define one.

    kind: ``"t over branches"``, :data:`WITHIN_BRANCHES`, ``"bootstrap over samples"`` or one of
    :func:`paired_difference`'s bootstrap kinds;
    branches, samples: how many branches and (non-NaN) samples went in.
    """

    estimate: float
    low: float
    high: float
    kind: str
    branches: int
    samples: int

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))


@dataclass(frozen=True)
class Pick:
    """The verdict of :func:`pick_best`: ``best`` (None when tied or nothing to compare) and
    ``tied``, the methods whose intervals overlap the leader's (the leader first; empty if not tied)."""

    leader: str | None
    best: str | None
    tied: tuple[str, ...]


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and its two-sided t interval (n - 1 degrees of freedom).

    With fewer than 2 values there is no spread to estimate: low and high are NaN (the mean is
    still given; NaN for no value at all).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _groups(groups: Sequence, name: str) -> list[np.ndarray]:
    out = [np.asarray(g, dtype=np.float64).ravel() for g in groups]
    out = [g[~np.isnan(g)] for g in out]
    out = [g for g in out if len(g)]
    if not out:
        raise HeatlabError(f"{name} has no value in any branch; pass at least one non-NaN value.")
    return out


def _clip(iv: Interval, bounds: tuple[float, float] | None) -> Interval:
    if bounds is None or not iv.defined:
        return iv
    return Interval(iv.estimate, max(iv.low, bounds[0]), min(iv.high, bounds[1]), iv.kind, iv.branches, iv.samples)


#: :func:`mean_interval`'s kind with fewer than :data:`MIN_T_BRANCHES` branches.
WITHIN_BRANCHES = "bootstrap over samples within branches"
#: Fewest branches whose means make a useful t interval (with 2, t(0.975, 1) = 12.7).
MIN_T_BRANCHES = 3


def mean_interval(groups: Sequence, *, level: float = LEVEL, bounds: tuple[float, float] | None = None,
                  resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Interval:
    """The mean of a per-sample score over branches and its interval (see the module docstring).

    groups: one 1-D array of per-sample values per branch (NaN ignored; branches without a value
    are left out). The estimate is the mean of the branches' means (each branch counts once).
    With fewer than :data:`MIN_T_BRANCHES` branches the groups must hold the same samples in the same
    order (equal lengths; the interval uses the samples that no branch has NaN for); branches of
    different lengths keep the t interval over their means. bounds: the score's range (e.g. (0, 1));
    the interval is clipped to it. ``seed``/``resamples``: the bootstrap's (deterministic).
    """
    raw = [np.asarray(g, dtype=np.float64).ravel() for g in groups]
    gs = _groups(raw, "mean_interval(groups)")
    n = sum(len(g) for g in gs)
    estimate = float(np.mean([g.mean() for g in gs]))
    raw = [g for g in raw if (~np.isnan(g)).any()]
    if len(gs) < MIN_T_BRANCHES and len({len(g) for g in raw}) == 1:
        v = np.stack(raw)
        v = v[:, ~np.isnan(v).any(axis=0)]  # the samples every branch scored
        lo = hi = math.nan
        if v.shape[1] >= 2:
            lo, hi = _crossed_bootstrap(v, resample_rows=False, level=level, resamples=resamples, seed=seed)
        return _clip(Interval(estimate, lo, hi, WITHIN_BRANCHES, len(gs), n), bounds)
    est, lo, hi = t_interval(np.array([g.mean() for g in gs]), level)
    return _clip(Interval(est, lo, hi, "t over branches", len(gs), n), bounds)


def auroc_interval(positive: Sequence, negative: Sequence, *, level: float = LEVEL,
                   resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Interval:
    """AUROC (P(positive score > negative score), ties 1/2) over branches and its interval.

    positive, negative: per branch, the scores of the positive (e.g. correctly predicted) and the
    negative samples. Branches where a side is empty have no AUROC and are left out. The estimate
    is the mean of the branches' AUROCs; the interval is clipped to [0, 1]. With few samples on a
    side (say under 10) a bootstrap interval is too narrow: perfect separation of 3 against 17
    gives [1, 1]; the report shows the group sizes next to it.
    """
    if len(positive) != len(negative):
        raise HeatlabError(f"auroc_interval got {len(positive)} positive and {len(negative)} negative groups; "
                           "pass one of each per branch.")
    pairs = [(np.asarray(p, dtype=np.float64).ravel(), np.asarray(q, dtype=np.float64).ravel())
             for p, q in zip(positive, negative)]
    pairs = [(p[~np.isnan(p)], q[~np.isnan(q)]) for p, q in pairs]
    pairs = [(p, q) for p, q in pairs if len(p) and len(q)]
    if not pairs:
        return Interval(math.nan, math.nan, math.nan, "none", 0, 0)
    n = sum(len(p) + len(q) for p, q in pairs)
    values = np.array([auroc(p, q) for p, q in pairs])
    if len(pairs) >= 2:
        est, lo, hi = t_interval(values, level)
        return _clip(Interval(est, lo, hi, "t over branches", len(pairs), n), (0.0, 1.0))
    p, q = pairs[0]
    boot = _bootstrap_auroc(p, q, resamples, seed)
    lo, hi = np.quantile(boot, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(float(values[0]), float(lo), float(hi), "bootstrap over samples", 1, n)


def bootstrap_over_seeds_and_samples(values, *, level: float = LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                                     seed: int = 0) -> Interval:
    """Mean of ``values`` (S seeds × N samples) and its hierarchical percentile bootstrap interval.

    Each resample draws S seeds with replacement, then N sample indices with replacement (the same
    for all its seeds), and takes the mean of those rows and columns (:func:`_crossed_bootstrap`);
    the interval holds the middle ``level`` of ``resamples`` such means. A constant gives a
    zero-wide interval. Deterministic for a given ``seed``.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.size == 0 or np.isnan(v).any():
        raise HeatlabError(f"bootstrap_over_seeds_and_samples needs a seeds × samples array without NaN, got shape "
                           f"{v.shape}; pass values=[[...], ...] with one row per seed.")
    lo, hi = _crossed_bootstrap(v, resample_rows=True, level=level, resamples=resamples, seed=seed)
    return Interval(float(v.mean()), lo, hi, "bootstrap over seeds and samples", *v.shape)


def count_weights(n_rows: int, n_cols: int, *, resample_rows: bool, resamples: int, seed: int,
                  budget: int = 4_000_000):
    """The crossed bootstrap's draws as count weights, in chunks: yields ``(rows, cols)``, ``cols`` r×N
    (how often each shared column, e.g. a sample, is drawn; each row sums to N) and ``rows`` r×B (how
    often each row, e.g. a branch, is drawn) or None without ``resample_rows``. The columns are drawn
    once per resample for every row, since the rows share them. ``budget`` bounds r·(B·N + N) per
    chunk (about 32 MB of float64). Deterministic for a given ``seed``."""
    rng = np.random.default_rng(seed)
    chunk = max(1, budget // (n_rows * n_cols + n_cols))
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        cols = rng.multinomial(n_cols, np.full(n_cols, 1.0 / n_cols), size=r)
        rows = rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=r) if resample_rows else None
        yield rows, cols


def _crossed_bootstrap(v: np.ndarray, *, resample_rows: bool, level: float, resamples: int,
                       seed: int) -> tuple:
    """Percentile interval of the mean of ``v`` (rows × shared columns: branches or seeds × the
    samples they all scored), resampled by :func:`count_weights`, so no Python loop runs per resample.
    Trailing axes (e.g. a curve's steps: ``v`` rows × columns × S) get one interval each from the
    same draws: ``(low, high)`` are then arrays of shape ``v.shape[2:]``, else floats."""
    n_r, n_c = v.shape[:2]
    out = []
    for rows, cols in count_weights(n_r, n_c, resample_rows=resample_rows, resamples=resamples, seed=seed):
        if rows is not None:
            w = (rows @ v.reshape(n_r, -1)).reshape(len(rows), *v.shape[1:])
            out.append((w * cols.reshape(cols.shape + (1,) * (v.ndim - 2))).sum(axis=1) / (n_r * n_c))
        else:
            out.append(np.tensordot(cols, v.mean(axis=0), axes=1) / n_c)
    lo, hi = np.quantile(np.concatenate(out), [0.5 - level / 2, 0.5 + level / 2], axis=0)
    return (float(lo), float(hi)) if v.ndim == 2 else (lo, hi)


@dataclass(frozen=True)
class CurveBand:
    """A mean curve over S steps with its pointwise interval (float64 arrays of length S).

    kind: :data:`WITHIN_BRANCHES` or :data:`BRANCHES_AND_SAMPLES`; branches, samples: how many went
    in (samples: those with a finite value at every step in every branch); dropped: the samples left
    out for a non-finite value. ``low``/``high`` are NaN with fewer than 2 samples.
    """

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    kind: str
    branches: int
    samples: int
    dropped: int


#: :func:`curve_band`'s kind with :data:`MIN_T_BRANCHES` or more branches.
BRANCHES_AND_SAMPLES = "bootstrap over branches and samples"


def curve_band(values, *, level: float = LEVEL, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> CurveBand:
    """The mean curve of ``values`` (B×N×S: branches × the samples they all scored × steps) and its
    pointwise percentile bootstrap band (:func:`_crossed_bootstrap`): each resample draws the samples
    once for every branch and step, with B >= :data:`MIN_T_BRANCHES` the branches too. With fewer
    branches the band at a step is :func:`mean_interval`'s bootstrap of that step (same draws for a
    ``seed``). Samples with a non-finite value anywhere (any branch or step) are dropped and counted."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 3 or 0 in v.shape:
        raise HeatlabError(f"curve_band needs a branches × samples × steps array, got shape {v.shape}; "
                           "pass one samples × steps array per branch.")
    keep = np.isfinite(v).all(axis=(0, 2))
    v = v[:, keep]
    n_b, n_s, n_t = v.shape
    crossed = n_b >= MIN_T_BRANCHES
    estimate = v.mean(axis=(0, 1)) if n_s else np.full(n_t, math.nan)
    lo = hi = np.full(n_t, math.nan)
    if n_s >= 2:
        lo, hi = _crossed_bootstrap(v, resample_rows=crossed, level=level, resamples=resamples, seed=seed)
    return CurveBand(estimate, lo, hi, BRANCHES_AND_SAMPLES if crossed else WITHIN_BRANCHES, n_b, n_s,
                     int((~keep).sum()))


def _bootstrap_auroc(p: np.ndarray, q: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """AUROC of ``resamples`` stratified resamples (float64 R), ranked in chunks of resamples."""
    rng = np.random.default_rng(seed)
    out = []
    chunk = max(1, 2_000_000 // (len(p) + len(q)))  # keeps each rank matrix near 16 MB
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        both = np.concatenate([p[rng.integers(0, len(p), (r, len(p)))], q[rng.integers(0, len(q), (r, len(q)))]], axis=1)
        ranks = stats.rankdata(both, axis=1)  # average ranks: ties count one half
        u = ranks[:, : len(p)].sum(axis=1) - len(p) * (len(p) + 1) / 2
        out.append(u / (len(p) * len(q)))
    return np.concatenate(out)


#: :func:`paired_difference`'s kinds, by whether branches are resampled too.
CELLS_ONLY, BRANCHES_AND_CELLS = "bootstrap over samples", "bootstrap over branches and samples"
#: Fewest branches whose spread the paired bootstrap resamples (fewer say little about a branch's spread).
MIN_RESAMPLED_BRANCHES = 3


def paired_difference(treated, base, *, level: float = LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0) -> Interval:
    """Mean of ``treated − base`` over branches and cells, with a seeded percentile bootstrap interval.

    treated, base: ``B×N`` (branches × cells; a 1-D ``N`` is one branch): branch b scored cell c
    both ways, and every branch scored the same N cells in the same order. Cells with NaN on
    either side in any branch are dropped (complete pairs only). The estimate is the mean of the
    ``B×N`` differences. Each resample draws N cells with replacement, the same cells for every
    branch (they share them), and with B >= :data:`MIN_RESAMPLED_BRANCHES` also B branches with
    replacement; resamples are weighted counts, so no Python loop runs per resample.
    ``Interval.samples`` is the number of cells N; ``branches`` is B.
    """
    t, b = (np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in (treated, base))
    if t.shape != b.shape or t.ndim != 2:
        raise HeatlabError(f"paired_difference needs treated and base of one shape (branches × cells), got "
                           f"{np.shape(treated)} and {np.shape(base)}; pass the same cells for both.")
    d = t - b
    d = d[:, ~np.isnan(d).any(axis=0)]
    n_b, n_c = d.shape
    if n_c == 0:
        return Interval(math.nan, math.nan, math.nan, CELLS_ONLY, n_b, 0)
    estimate = float(d.mean())
    if n_c < 2:
        return Interval(estimate, math.nan, math.nan, CELLS_ONLY, n_b, n_c)
    crossed = n_b >= MIN_RESAMPLED_BRANCHES
    lo, hi = _crossed_bootstrap(d, resample_rows=crossed, level=level, resamples=resamples, seed=seed)
    return Interval(estimate, lo, hi, BRANCHES_AND_CELLS if crossed else CELLS_ONLY, n_b, n_c)


def difference_verdict(iv: Interval, *, higher_is_better: bool = True) -> str:
    """``"better"`` / ``"worse"`` when the difference's interval excludes 0 (in the metric's direction),
    else ``"tied"`` (also when no interval is defined)."""
    if not iv.defined or iv.low <= 0.0 <= iv.high:
        return "tied"
    up = iv.low > 0.0
    return "better" if up == higher_is_better else "worse"


def overlap(a: Interval, b: Interval) -> bool:
    """Whether two intervals share a point; an undefined interval overlaps everything."""
    if not (a.defined and b.defined):
        return True
    return a.low <= b.high and b.low <= a.high


def pick_best(intervals: Mapping[str, Interval], *, higher_is_better: bool = True) -> Pick:
    """The method with the best estimate, or the methods tied with it.

    The leader has the highest estimate (lowest when ``higher_is_better`` is False; equal
    estimates keep the mapping's order). It is named ``best`` when it is the only method or when no
    other method's interval overlaps its interval; otherwise ``best`` is None and ``tied`` lists the
    leader and every method overlapping it, in order of estimate. NaN estimates take no part.
    """
    valid = [(m, iv) for m, iv in intervals.items() if not math.isnan(iv.estimate)]
    if not valid:
        return Pick(None, None, ())
    sign = 1.0 if higher_is_better else -1.0
    ranked = sorted(valid, key=lambda kv: -sign * kv[1].estimate)  # stable: ties keep the given order
    leader, top = ranked[0]
    tied = [m for m, iv in ranked[1:] if overlap(top, iv)]
    if tied:
        return Pick(leader, None, (leader, *tied))
    return Pick(leader, leader, ())


def chance_level(n_classes: int) -> float:
    """1/K: the accuracy of always guessing one class of K balanced ones."""
    if n_classes < 2:
        raise HeatlabError(f"A classifier needs at least 2 classes, got {n_classes}; pass the number of classes.")
    return 1.0 / n_classes


def near_chance(accuracy: float, n_classes: int, *, margin: float = CHANCE_MARGIN, chance: float | None = None) -> bool:
    """Whether ``accuracy`` is below chance + ``margin`` (0.1 by default: 0.2 for 10 balanced classes,
    0.6 for 2). Chance is 1/K, or ``chance`` when the caller knows better (the share of the most
    frequent class, for unbalanced data)."""
    base = chance_level(n_classes) if chance is None else max(chance, chance_level(n_classes))
    return bool(accuracy < base + margin)
