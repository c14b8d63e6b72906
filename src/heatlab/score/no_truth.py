"""The no-truth metrics as evaluate runs them: which ones (``--metrics``), with which options, on one batch.

The metrics themselves live in the family modules (:mod:`~heatlab.score.faithfulness`,
:mod:`~heatlab.score.randomisation`, :mod:`~heatlab.score.robustness`,
:mod:`~heatlab.score.complexity`, :mod:`~heatlab.score.axiomatic`); their registry entries
(:data:`heatlab.score.metrics.METRICS`) have the table :data:`NO_TRUTH_TABLE`, so nothing runs
them unless it is asked to. This module turns a selection text into the entries to run
(:func:`select_metrics`), gives each the options that fit the data (:func:`fit_options`: a patch
size and the steps of the step metrics for images, :data:`ROBUSTNESS_SAMPLES` perturbations of the
robustness metrics, a subset size that the features allow, the stated baseline) and scores one batch of attributions (:func:`no_truth_scores`).

Selection: comma-separated metric names or families (``faithfulness``, ``randomisation``,
``robustness``, ``complexity``, ``axiomatic``; the ground-truth families ``localisation`` and
``five-band`` and their metrics only check that the data has truth: evaluate computes them
wherever it does; a name that is both a metric and a family, ``complexity``, is the metric), ``all`` (every no-truth metric that applies), ``fast``
(:data:`FAST`), ``default`` (on every dataset: :data:`FAST` on data without ground truth,
:data:`WITH_TRUTH` beside the truth scores on data with it; see below) or ``none``.

Why :data:`FAST` holds no metric that re-explains: measured on the cells (128 px, 50 cells, 11
methods, one branch), re-explaining costs what explaining costs, and the methods evaluate runs
are the expensive part of evaluate (Integrated Gradients and DeepLiftShap alone are 80 % of it):
eMPRT (one re-explanation of the randomised model) took 71 s where evaluate's explanations took
62 s. The metrics of :data:`FAST` need only the model's forward passes on the attributions
evaluate already has (evaluate scores them in its own units, :mod:`heatlab.run.evaluate`), so
they cost a fixed number of forwards per method whatever the method (on the cells, 128 px: 0.8× the
CPU time of evaluate's units; the whole evaluate of 200 cells took 320 s against 144 s with
``none``). That is cheap beside a table model or an image folder without truth, where they are the
only scores, but it would double evaluate where the ground truth already scores the heatmaps, so
there ``default`` adds :data:`WITH_TRUTH` (sparseness and complexity: array work on the heatmaps, no
forward pass) and deletion/insertion are one word away (``--metrics fast``). eMPRT, MPRT and the
other re-explaining metrics stay one name away too (``--metrics default,emprt``, ``randomisation``, ``all``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.registry import Registry
from heatlab.score import axiomatic, faithfulness, perturb
from heatlab.score._no_truth import check_heatmaps
from heatlab.score.metrics import NO_TRUTH_TABLE, SCORES_TABLE, FromAttributions, Metric, applies

#: The fast set (``fast``, ``default``): deletion and insertion AUC (10 steps), sparseness and complexity;
#: none of them re-explains (see the module docstring for why eMPRT is not among them).
FAST = ("deletion", "insertion", "sparseness", "complexity")
#: ``default`` on data with ground truth: the metrics of :data:`FAST` that need no forward pass.
WITH_TRUTH = ("sparseness", "complexity")
#: Metrics whose per-sample curves the no-truth stage stores: name -> (the AUC function, its curve).
CURVES = {"deletion": (faithfulness.deletion, faithfulness.deletion_curve),
          "insertion": (faithfulness.insertion, faithfulness.insertion_curve)}
#: Options of the default (fast) set that differ from the metrics' own defaults.
#: Deletion and insertion are forward-bound (n_steps + 1 passes each): 10 steps keep them a few passes.
FAST_OPTIONS = {"deletion": {"n_steps": 10}, "insertion": {"n_steps": 10}}
#: Metrics that remove ``features_in_step`` values of ``x`` per step, one forward pass per step: Quantus's
#: default, 1, is a pass per value (a 32×32 RGB image: 3,072 passes; monotonicity correlation 100 times that).
STEP_METRICS = ("pixel_flipping", "monotonicity_correlation", "non_sensitivity")
#: Steps of :data:`STEP_METRICS` on images (``features_in_step`` = the image's values / this, rounded up),
#: as a patch is the image side / 16; tables keep one feature per step.
IMAGE_STEPS = 64
#: Perturbed inputs each robustness metric re-explains in evaluate (Quantus's default, 200, is 200 explanations
#: per metric: every one of the six costs 200 evaluates); 10 as Captum's ``sensitivity_max`` and issue 22's benchmark.
ROBUSTNESS_SAMPLES = 10
#: Metrics that perturb pixels, patches or superpixels: images only.
IMAGE_ONLY = ("region_perturbation_morf", "region_perturbation_lerf", "selectivity", "road_morf", "road_lerf", "irof")
KEYWORDS = ("all", "default", "fast", "none")
#: Metrics that remove square patches (``patch_size``).
PATCH_METRICS = ("region_perturbation_morf", "region_perturbation_lerf", "selectivity")
#: Metrics that replace removed features by a baseline (``perturb_baseline``).
BASELINE_METRICS = ("pixel_flipping", *PATCH_METRICS, "deletion", "insertion", "faithfulness_correlation",
                    "monotonicity_correlation", "irof", "non_sensitivity", "completeness")
#: The tables whose entries need ground truth (evaluate computes them wherever the data has it).
TRUTH_TABLES = (SCORES_TABLE, "five_band")


@dataclasses.dataclass(frozen=True)
class Selection:
    """What ``--metrics`` chose: the no-truth entries to run (options bound), and one sentence per
    metric left out because the data lacks what it needs."""

    metrics: tuple[Metric, ...]
    skipped: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.metrics]

    def options(self) -> dict[str, dict]:
        """name -> the options bound to its function (for markers and summaries)."""
        return {m.name: dict(m.fn.options) for m in self.metrics}


def no_truth_entries(metrics: Mapping[str, Metric]) -> list[Metric]:
    return [m for m in metrics.values() if m.table == NO_TRUTH_TABLE]


def select_metrics(text: str | Sequence[str], metrics: Registry[Metric], *, input_kind: str, truth_kind: str | None,
                   input_shape: Sequence[int], patch_size: int | None = None,
                   perturb_baseline: str | None = None, model=None) -> Selection:
    """The no-truth metrics ``text`` names (see the module docstring), options fitted to samples of
    ``input_shape`` (C×H×W or F). HeatlabError, in one sentence, for an unknown name or family (the
    known ones listed), a named metric the data cannot feed (ground truth, images), a patch size that
    does not fit the images, a baseline that is not one of :data:`heatlab.score.perturb.BASELINES`, and
    ``input_invariance`` named for a ``model`` (a module, or a callable that loads it when needed)
    whose first layer cannot absorb the input shift (chosen through a family or ``all``, it is left out
    with a sentence in ``skipped``). A metric chosen through a family or keyword that does not take
    ``perturb_baseline`` (completeness: black, white, mean) keeps its own, with a sentence in ``skipped``;
    named, it is refused."""
    names = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t).strip() for t in text]
    names = [n for n in names if n]
    image = input_kind == "image"
    check_baseline(perturb_baseline)
    if patch_size is not None:
        check_patch_size(patch_size, input_shape)
    pool = no_truth_entries(metrics)
    truth_names = [m.name for m in metrics.values() if m.table in TRUTH_TABLES and m.truth is not None]
    families = {m.family for m in pool} | {metrics[n].family for n in truth_names}
    known = {m.name for m in pool} | set(truth_names) | families | set(KEYWORDS)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        # a family that is also a metric's name (complexity) selects the metric: list it once, as a metric
        choices = (f"the families {', '.join(sorted(families - {m.name for m in pool}))}, the metrics "
                   f"{', '.join(m.name for m in pool)} or {', '.join(KEYWORDS)}")
        if not names:
            raise HeatlabError(f"metrics={text if isinstance(text, str) else ','.join(map(str, text))!r} names no "
                               f"metric; choose from {choices} ('none' for no no-truth scores).")
        raise HeatlabError(f"Unknown metric or family {', '.join(map(repr, unknown))}; choose from {choices}.")
    chosen: list[Metric] = []
    skipped: list[str] = []
    explicit = set()
    for n in names:
        if n == "none":
            continue
        if n == "all":
            picked = pool
        elif n in ("fast", "default"):
            picked = [metrics[f] for f in (WITH_TRUTH if n == "default" and truth_kind is not None else FAST) if f in metrics]
        elif n in metrics and metrics[n].table == NO_TRUTH_TABLE:
            picked = [metrics[n]]
            explicit.add(n)
        elif n in {m.family for m in pool}:
            picked = [m for m in pool if m.family == n]
        else:  # a ground-truth metric or family: evaluate computes it wherever the data has truth
            _check_truth(n, metrics, truth_kind)
            continue
        chosen += [m for m in picked if m not in chosen]
    if not image and (bad := [n for n in IMAGE_ONLY if n in explicit]):
        raise HeatlabError(f"{', '.join(map(repr, bad))} {'needs' if len(bad) == 1 else 'need'} image inputs (pixels, patches or superpixels) but this data is a "
                           f"table; the metrics that need images are {', '.join(IMAGE_ONLY)}.")
    if not image and (left := [m.name for m in chosen if m.name in IMAGE_ONLY]):
        skipped.append(f"{', '.join(left)} need image inputs; they were left out for this table data.")
        chosen = [m for m in chosen if m.name not in IMAGE_ONLY]
    chosen = [m for m in chosen if applies(m, truth_kind, model=True)]
    if model is not None and any(m.name == "input_invariance" for m in chosen):
        lack = axiomatic.shift_lack(model() if callable(model) and not isinstance(model, nn.Module) else model)
        why = (f"the model's first layer (after any Flatten or Normalize) is {lack}, not a Conv2d or Linear with bias "
               "that can absorb its input shift")
        if lack and "input_invariance" in explicit:
            raise HeatlabError(f"input_invariance cannot run on this model: {why}; leave it out of the metrics.")
        if lack:
            skipped.append(f"input_invariance was left out: {why}.")
            chosen = [m for m in chosen if m.name != "input_invariance"]
    fast = "fast" in names or "default" in names
    own = [m.name for m in chosen if m.name not in explicit and not takes_baseline(m.name, perturb_baseline)]
    if own:
        skipped.append(f"{', '.join(own)} kept {'its' if len(own) == 1 else 'their'} own baseline, since "
                       f"{'it does' if len(own) == 1 else 'they do'} not take the baseline {perturb_baseline!r}.")
    skipped += _unused(chosen, patch_size=patch_size, perturb_baseline=perturb_baseline)
    fitted = tuple(_bind(m, fit_options(m, input_shape, patch_size=patch_size, fast=fast and m.name in FAST,
                                        perturb_baseline=None if m.name in own else perturb_baseline))
                   for m in chosen)
    return Selection(fitted, tuple(skipped))


def _unused(chosen: Sequence[Metric], *, patch_size: int | None, perturb_baseline: str | None) -> list[str]:
    """One sentence for each of ``patch_size`` and ``perturb_baseline`` that was given but that no chosen metric takes."""
    names = {m.name for m in chosen}
    out = []
    if patch_size is not None and not names & set(PATCH_METRICS):
        out.append(f"The patch size {patch_size} was not used: no chosen metric takes one (those that do: "
                   f"{', '.join(PATCH_METRICS)}).")
    if perturb_baseline is not None and not names & set(BASELINE_METRICS):
        out.append(f"The baseline {perturb_baseline!r} was not used: no chosen metric removes features (those that do: "
                   f"{', '.join(BASELINE_METRICS)}).")
    return out


def takes_baseline(name: str, perturb_baseline: str | None) -> bool:
    """Whether metric ``name`` can replace removed features by ``perturb_baseline`` (True for None and for the
    metrics that take no baseline: nothing to refuse). Completeness has its own stated baselines."""
    stated = axiomatic.BASELINES if name == "completeness" else perturb.BASELINES
    return perturb_baseline is None or name not in BASELINE_METRICS or perturb_baseline in stated


def _check_truth(name: str, metrics: Mapping[str, Metric], truth_kind: str | None) -> None:
    entries = [metrics[name]] if name in metrics else [m for m in metrics.values()
                                                       if m.family == name and m.table in TRUTH_TABLES]
    kinds = {m.truth for m in entries if m.truth is not None}
    if truth_kind is None or ("levels" in kinds and "mask" not in kinds and truth_kind != "levels"):
        need = "ground truth with the levels 0, 0.4 and 0.9" if kinds == {"levels"} else "ground truth"
        raise HeatlabError(f"{name!r} needs {need}, which this data does not have; choose no-truth metrics such as "
                           f"{', '.join(FAST)} instead.")


def fit_options(metric: Metric, input_shape: Sequence[int], *, patch_size: int | None = None,
                perturb_baseline: str | None = None, fast: bool = False) -> dict[str, Any]:
    """The options ``metric`` runs with on samples of ``input_shape``: its fast options (``fast``), a patch
    size that fits the images (``min(H, W) // 16``, at least 1, unless given), :data:`IMAGE_STEPS` steps of
    the step metrics on images, :data:`ROBUSTNESS_SAMPLES` perturbed inputs of the robustness metrics, a
    faithfulness-correlation subset that the features allow, and
    ``perturb_baseline`` where the metric takes one."""
    options = dict(FAST_OPTIONS.get(metric.name, {})) if fast else {}
    d = math.prod(int(s) for s in input_shape)
    if metric.name in PATCH_METRICS:
        options["patch_size"] = max(1, min(input_shape[-2:]) // 16) if patch_size is None else patch_size
    if metric.name in STEP_METRICS and len(input_shape) == 3:
        options["features_in_step"] = max(1, math.ceil(d / IMAGE_STEPS))
    if metric.family == "robustness" and metric.table == NO_TRUTH_TABLE:
        options["nr_samples"] = ROBUSTNESS_SAMPLES
    if metric.name == "faithfulness_correlation":
        options["subset_size"] = max(1, min(224, d // 4))
    if perturb_baseline is not None and metric.name in BASELINE_METRICS:
        if not takes_baseline(metric.name, perturb_baseline):
            stated = axiomatic.BASELINES if metric.name == "completeness" else perturb.BASELINES
            raise HeatlabError(f"Unknown perturb_baseline={perturb_baseline!r} for {metric.name}; pass one of "
                               f"{', '.join(stated)}.")
        if perturb_baseline == "blur" and len(input_shape) != 3:
            raise HeatlabError(f"perturb_baseline='blur' blurs images but this data is a table; pass one of "
                               f"{', '.join(b for b in perturb.BASELINES if b != 'blur')}.")
        options["perturb_baseline"] = perturb_baseline
    return options


def check_baseline(perturb_baseline: str | None) -> None:
    """A baseline is one of :data:`heatlab.score.perturb.BASELINES` (or None: each metric's own)."""
    if perturb_baseline is not None and perturb_baseline not in perturb.BASELINES:
        raise HeatlabError(f"Unknown perturb_baseline={perturb_baseline!r}; pass one of {', '.join(perturb.BASELINES)}.")


def check_patch_size(patch_size: int, input_shape: Sequence[int]) -> None:
    """``patch_size`` fits samples of ``input_shape`` (C×H×W images; tables have no patches)."""
    if len(input_shape) != 3:
        raise HeatlabError(f"patch_size={patch_size!r} applies to images but this data is a table; the metrics that "
                           f"take a patch size ({', '.join(PATCH_METRICS)}) need images.")
    side = min(input_shape[-2:])
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or not 1 <= patch_size <= side:
        raise HeatlabError(f"patch_size={patch_size!r} does not fit the {input_shape[-2]}×{input_shape[-1]} images; "
                           f"pass an integer from 1 to {side}.")


def _curve_of(metric: Metric):
    """(curve function, options) of a built-in curve metric entry, else None."""
    fn = metric.fn
    if isinstance(fn, FromAttributions) and CURVES.get(metric.name, (None,))[0] is fn.fn:
        return CURVES[metric.name][1], dict(fn.options)
    return None


def _bind(metric: Metric, options: Mapping[str, Any]) -> Metric:
    inner = metric.fn.fn if isinstance(metric.fn, FromAttributions) else metric.fn
    return dataclasses.replace(metric, fn=FromAttributions(inner, dict(options)))


def no_truth_scores(model, x: Tensor, y: Tensor, a: Tensor, metrics: Sequence[Metric], *, explain=None,
                    seed: int = 0, curves: dict | None = None) -> dict[str, Tensor]:
    """name -> float64 ``N`` (CPU) of each entry of ``metrics`` on one batch: ``x`` N×C×H×W or N×F inputs,
    ``y`` the explained classes, ``a`` their attributions (``x``'s shape), ``explain(model, x, y)``
    re-explains (the randomisation and robustness metrics). ``curves``, a dict, receives for each
    built-in curve metric (:data:`CURVES`) ``name -> (float64 N×K model outputs, float64 K fractions)``,
    the curve its value is the area under. HeatlabError for NaN or infinite ``a``."""
    check_heatmaps(a, x)
    out = {}
    for m in metrics:
        if curves is not None and _curve_of(m) is not None:
            curve_fn, options = _curve_of(m)
            c = curve_fn(model, x, y, a, **{"seed": seed, **options}).detach().double().cpu()
            curves[m.name] = (c, faithfulness.rise_fractions(x, c.shape[1] - 1))
            out[m.name] = faithfulness.rise_auc(c)
            continue
        values = m.fn(a, None, model=model, x=x, y=y, a=a, explain=explain, seed=seed)
        if not isinstance(values, Tensor) or values.shape != (len(x),):
            raise HeatlabError(f"Metric {m.name!r} returned other than one value per sample; make it return a tensor "
                               "of shape N.")
        out[m.name] = values.detach().double().cpu()
    return out


__all__ = ["CURVES", "FAST", "IMAGE_ONLY", "IMAGE_STEPS", "KEYWORDS", "NO_TRUTH_TABLE", "ROBUSTNESS_SAMPLES",
           "STEP_METRICS", "Selection", "check_baseline", "check_patch_size", "fit_options", "no_truth_entries",
           "no_truth_scores", "select_metrics", "takes_baseline"]
