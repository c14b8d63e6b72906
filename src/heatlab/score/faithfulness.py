"""Faithfulness metrics (and axiomatic non-sensitivity): scores that need the model, not a truth.

Every metric is ``fn(model, x, y, a, *, <options>, seed=0) -> float64 N`` (shapes and baselines in
:mod:`heatlab.score.perturb`). Option names follow Quantus 0.6 where Quantus has the metric, and so
do the defaults; ``softmax`` scores the target's probability, otherwise its logit. Batched over
samples: one Python loop over perturbation steps at most, several steps per forward pass (up to
``batch_size`` inputs). ``*_curve`` functions return the per-step N×K curves the scalars come from.
Non-sensitivity lives here (not in ``axiomatic.py``) because it shares this machinery.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.score import perturb as P
from heatlab.score._no_truth import check_inputs, generator, pearson, prepare, spearman
from heatlab.score.metric_info import MetricInfo


def _steps(total: int, per_step: int, what: str) -> list[int]:
    if not isinstance(per_step, int) or per_step < 1:
        raise HeatlabError(f"{what}={per_step!r} must be a positive integer.")
    return [min((k + 1) * per_step, total) for k in range(math.ceil(total / per_step))]


def _prep(model, x, y, a, abs_: bool = False):
    x, y, a = check_inputs(model, x, y, a)
    a = a.double().expand_as(x)
    return x, y, (a.abs() if abs_ else a)


def _pixel_groups(x: Tensor) -> tuple[Tensor, int]:
    """Pixels (all channels together) for images, features for tables."""
    if x.ndim == 2:
        return P.element_groups(x)
    n, c, h, w = x.shape
    return torch.arange(h * w, device=x.device).expand(n, c, h * w).reshape(n, -1), h * w


def pixel_flipping_curve(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, features_in_step: int = 1,
                         perturb_baseline="black", abs: bool = False, softmax: bool = True, batch_size: int = 64,
                         seed: int = 0) -> Tensor:
    """N×K target scores after removing ``features_in_step`` more values of ``x`` per step (MoRF)."""
    x, y, a = _prep(model, x, y, a, abs)
    groups, d = P.element_groups(x)
    rank = P.ranks_of(groups, a.flatten(1), "morf")
    fill = P.baseline(x, perturb_baseline, generator=generator(seed))
    return P.removal_curve(model, x, y, rank, _steps(d, features_in_step, "features_in_step"), fill,
                           softmax=softmax, batch_size=batch_size)


def pixel_flipping(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, **kw) -> Tensor:
    """Pixel flipping (Bach et al. 2015): remove the most relevant values first (every value of ``x``
    is a feature, ``a`` broadcast over channels as Quantus does) and score the target after each step;
    the area under that curve (trapezoid, unit steps, as Quantus's ``return_auc_per_sample``).
    Lower is better (a faithful heatmap makes the score fall fast)."""
    return P.trapezoid(pixel_flipping_curve(model, x, y, a, **kw))


def region_perturbation_curve(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, patch_size: int = 8,
                              order: str = "morf", regions_evaluation: int = 100, perturb_baseline="black",
                              abs: bool = False, softmax: bool = True, batch_size: int = 64, seed: int = 0) -> Tensor:
    """N×K drops ``f(x) - f(x_k)`` after removing k patches (k = 1..regions_evaluation) in ``order``."""
    P.check_order(order)
    x, y, a = _prep(model, x, y, a, abs)
    groups, k = P.patch_groups(x, patch_size)
    rank = P.ranks_of(groups, P.group_sums(a.flatten(1), groups, k), order)
    fill = P.baseline(x, perturb_baseline, generator=generator(seed))
    y0 = P.predict(model, x, y, softmax=softmax, batch_size=batch_size)
    steps = list(range(1, min(regions_evaluation, k) + 1))
    return y0[:, None] - P.removal_curve(model, x, y, rank, steps, fill, softmax=softmax, batch_size=batch_size)


def region_perturbation(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, **kw) -> Tensor:
    """Region perturbation (Samek et al. 2017): AOPC, the mean drop of the target score as
    ``patch_size`` patches are removed by summed relevance, most relevant first (``order="morf"``,
    higher is better) or least relevant first (``"lerf"``, lower is better)."""
    return region_perturbation_curve(model, x, y, a, **kw).mean(1)


def selectivity_curve(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, patch_size: int = 8,
                      perturb_baseline="black", abs: bool = False, softmax: bool = True, batch_size: int = 64,
                      seed: int = 0) -> Tensor:
    """N×K target scores after removing k patches (k = 1..all), most relevant first."""
    x, y, a = _prep(model, x, y, a, abs)
    groups, k = P.patch_groups(x, patch_size)
    rank = P.ranks_of(groups, P.group_sums(a.flatten(1), groups, k), "morf")
    fill = P.baseline(x, perturb_baseline, generator=generator(seed))
    return P.removal_curve(model, x, y, rank, list(range(1, k + 1)), fill, softmax=softmax, batch_size=batch_size)


def selectivity(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, **kw) -> Tensor:
    """Selectivity (Montavon et al. 2018): area (trapezoid, unit steps, as Quantus) under the target
    score as all patches are removed, most relevant first. Lower is better."""
    return P.trapezoid(selectivity_curve(model, x, y, a, **kw))


def _rise_curve(model, x, y, a, *, n_steps, perturb_baseline, softmax, batch_size, seed, insert) -> Tensor:
    x, y, a = _prep(model, x, y, a)
    groups, d = _pixel_groups(x)
    rank = P.ranks_of(groups, P.group_sums(a.flatten(1), groups, d), "morf")
    if perturb_baseline is None:
        perturb_baseline = "blur" if x.ndim == 4 else "mean"
    fill = P.baseline(x, perturb_baseline, generator=generator(seed))
    if not isinstance(n_steps, int) or n_steps < 1:
        raise HeatlabError(f"n_steps={n_steps!r} must be a positive integer.")
    steps = _rise_steps(d, n_steps)
    return P.removal_curve(model, x, y, rank, steps, fill, softmax=softmax, batch_size=batch_size, insert=insert)


def _rise_steps(d: int, n_steps: int) -> list[int]:
    return [round(d * k / n_steps) for k in range(n_steps + 1)]


def rise_fractions(x: Tensor, n_steps: int = 100) -> Tensor:
    """float64 (n_steps+1): the fraction of pixels (features for tables) removed at each step of
    :func:`deletion_curve` (inserted, :func:`insertion_curve`) for inputs ``x``; from 0 to 1."""
    d = x[0, 0].numel() if x.ndim == 4 else x.shape[1]
    return torch.tensor(_rise_steps(d, n_steps), dtype=torch.float64) / d


def rise_auc(curve: Tensor) -> Tensor:
    """float64 N: the deletion/insertion AUC of N×(n_steps+1) curves over the nominal fractions k/n_steps."""
    return P.trapezoid(curve, dx=1 / (curve.shape[1] - 1))


def deletion_curve(model, x, y, a, *, n_steps: int = 100, perturb_baseline="black", softmax: bool = True,
                   batch_size: int = 64, seed: int = 0) -> Tensor:
    """N×(n_steps+1) target scores from the input (0 pixels removed) to all pixels removed; the
    fraction removed at each step is :func:`rise_fractions`."""
    return _rise_curve(model, x, y, a, n_steps=n_steps, perturb_baseline=perturb_baseline, softmax=softmax,
                       batch_size=batch_size, seed=seed, insert=False)


def insertion_curve(model, x, y, a, *, n_steps: int = 100, perturb_baseline=None, softmax: bool = True,
                    batch_size: int = 64, seed: int = 0) -> Tensor:
    """N×(n_steps+1) target scores from the baseline (default: blurred image; tables: the mean) to the
    input; the fraction inserted at each step is :func:`rise_fractions`."""
    return _rise_curve(model, x, y, a, n_steps=n_steps, perturb_baseline=perturb_baseline, softmax=softmax,
                       batch_size=batch_size, seed=seed, insert=True)


def deletion(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, **kw) -> Tensor:
    """Deletion AUC (Petsiuk et al. 2018, RISE): pixels (channel-summed relevance; features for tables)
    removed most relevant first in ``n_steps`` equal steps; area under the target probability over the
    removed fraction 0..1. Lower is better."""
    return rise_auc(deletion_curve(model, x, y, a, **kw))


def insertion(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, **kw) -> Tensor:
    """Insertion AUC (Petsiuk et al. 2018, RISE): pixels put back into the baseline most relevant first;
    area under the target probability over the inserted fraction 0..1. Higher is better."""
    return rise_auc(insertion_curve(model, x, y, a, **kw))


def road_curve(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, percentages=None, noise: float = 0.01,
               order: str = "morf", abs: bool = False, batch_size: int = 64, seed: int = 0) -> Tensor:
    """N×P correctness (1.0 if the model still predicts ``y``) after imputing ``p``% of the pixels."""
    P.check_order(order)
    x, y, a = _prep(model, x, y, a, abs)
    P.check_images(x, "ROAD")
    n, c, h, w = x.shape
    percentages = list(range(1, 100, 2)) if percentages is None else list(percentages)
    if not percentages or any(not 0 <= p <= 100 for p in percentages):
        raise HeatlabError(f"percentages={percentages!r} must be numbers from 0 to 100.")
    ids = torch.sort(-a.sum(1).flatten(1) if order == "morf" else a.sum(1).flatten(1), dim=1, stable=True).indices
    rank = torch.empty_like(ids).scatter_(1, ids, torch.arange(h * w, device=x.device).expand_as(ids)).view(n, h, w)
    gen = generator(seed)
    out = []
    for p in percentages:
        xp = P.noisy_linear_imputation(x, rank < int(h * w * p / 100), noise=noise, generator=gen)
        with torch.no_grad():
            pred = torch.cat([model(xp[s : s + batch_size]).argmax(-1) for s in range(0, n, batch_size)])
        out.append((pred == y).double())
    return torch.stack(out, 1)


def road(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, **kw) -> Tensor:
    """ROAD (Rong et al. 2022): RemOve And Debias; the top (``order="morf"``) or bottom (``"lerf"``)
    ``percentages`` of pixels by channel-summed relevance are replaced by noisy linear imputation from
    their neighbours; per sample the mean correctness over the percentages. MoRF: lower is better;
    LeRF: higher is better."""
    return road_curve(model, x, y, a, **kw).mean(1)


def faithfulness_correlation(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, nr_runs: int = 100,
                             subset_size: int = 224, perturb_baseline="black", abs: bool = False, softmax: bool = False,
                             indices: Tensor | None = None, batch_size: int = 64, seed: int = 0) -> Tensor:
    """Faithfulness correlation (Bhatt et al. 2020): Pearson correlation, over ``nr_runs`` random
    subsets of ``subset_size`` values of ``x``, between the subset's summed relevance and the drop of
    the target score when the subset is set to the baseline. Higher is better (1 is ideal).
    ``indices`` (nr_runs×N×subset_size) fixes the subsets; otherwise they are drawn from ``seed``
    (:func:`random_subsets`)."""
    x, y, a = _prep(model, x, y, a, abs)
    n, d = x.shape[0], x[0].numel()
    if not isinstance(subset_size, int) or not 1 <= subset_size < d:
        raise HeatlabError(f"subset_size={subset_size!r} must be an integer from 1 to {d - 1} (the features per sample minus one).")
    gen = generator(seed)
    if indices is None:
        indices = random_subsets(nr_runs * n, d, subset_size, gen).view(nr_runs, n, subset_size)
    indices = indices.to(x.device, torch.int64)
    fill = P.baseline(x, perturb_baseline, generator=gen).flatten(1)
    y0 = P.predict(model, x, y, softmax=softmax, batch_size=batch_size)
    flat, af = x.flatten(1), a.flatten(1)
    drops, sums = [], []
    per = max(1, batch_size // n)
    for s in range(0, indices.shape[0], per):
        idx = indices[s : s + per]
        mask = torch.zeros(idx.shape[0], n, d, dtype=torch.bool, device=x.device).scatter_(2, idx, True)
        xs = torch.where(mask, fill, flat).view(-1, *x.shape[1:])
        drops.append(y0 - P.predict(model, xs, y, softmax=softmax, batch_size=batch_size).view(-1, n))
        sums.append(af.unsqueeze(0).expand(idx.shape[0], n, d).gather(2, idx).sum(-1))
    return pearson(torch.cat(sums).T, torch.cat(drops).T)


def random_subsets(rows: int, d: int, k: int, gen: torch.Generator) -> Tensor:
    """``rows``×``k`` int64: per row a uniformly random k-subset of range(d), in no particular order.
    Small k (<= d/16): Floyd's algorithm, k draws per row (each j = d-k..d-1 adds a uniform t <= j,
    or j itself if t is taken); otherwise the k smallest of d uniform draws. By blocks of rows, so
    that the rows×d mask (or draws) stays near 4 M values whatever ``rows`` (nr_runs × N)."""
    block = max(1, (1 << 22) // d)
    if rows > block:
        return torch.cat([random_subsets(min(block, rows - s), d, k, gen) for s in range(0, rows, block)])
    if k * 16 > d:
        return torch.rand(rows, d, generator=gen).topk(k, largest=False, sorted=False).indices
    taken = torch.zeros(rows, d, dtype=torch.bool)
    out = torch.empty(rows, k, dtype=torch.int64)
    r = torch.arange(rows)
    for i, j in enumerate(range(d - k, d)):
        t = torch.randint(0, j + 1, (rows,), generator=gen)
        pick = torch.where(taken[r, t], j, t)
        taken[r, pick] = True
        out[:, i] = pick
    return out


def monotonicity_correlation(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, eps: float = 1e-5,
                             nr_samples: int = 100, features_in_step: int = 1, perturb_baseline="uniform",
                             abs: bool = True, softmax: bool = True, batch_size: int = 64, seed: int = 0) -> Tensor:
    """Monotonicity correlation (Nguyen & Martinez 2020): Spearman correlation between each step's
    summed relevance and the variance its removal causes in the target score (mean over
    ``nr_samples`` baseline draws of the squared change, divided by the squared score where
    |score| >= ``eps``); steps of ``features_in_step`` values in ascending relevance, each from the
    input. Higher is better. A deterministic baseline is drawn once (the repeats are identical)."""
    x, y, a = _prep(model, x, y, a, abs)
    groups, d = P.element_groups(x)
    rank = P.ranks_of(groups, a.flatten(1), "lerf")
    steps = _steps(d, features_in_step, "features_in_step")
    y0 = P.predict(model, x, y, softmax=softmax, batch_size=batch_size)
    inv = torch.where(y0.abs() >= eps, 1 / y0.abs(), torch.ones_like(y0)).square()
    gen = generator(seed)
    random = isinstance(perturb_baseline, str) and perturb_baseline == "uniform"
    var = 0
    for _ in range(nr_samples if random else 1):
        fill = P.baseline(x, perturb_baseline, generator=gen)
        c = P.removal_curve(model, x, y, rank, steps, fill, softmax=softmax, batch_size=batch_size, window=True)
        var = var + (c - y0[:, None]).square()
    var = var / (nr_samples if random else 1) * inv[:, None]
    step_of = torch.bucketize(rank, torch.tensor(steps, device=x.device), right=True)
    atts = P.group_sums(a.flatten(1), step_of, len(steps))
    return spearman(atts, var)


def _segments_of(x, segments, n_segments):
    groups, counts = P.superpixel_groups(x, segments, n_segments=n_segments)
    if bool((counts < 2).any()):
        raise HeatlabError("IROF needs at least two superpixels per image; pass more segments or larger images.")
    return groups, counts


def irof_curve(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, segmentation_method: str = "slic",
               segments: Tensor | None = None, n_segments: int = 100, perturb_baseline="mean", abs: bool = False,
               softmax: bool = True, batch_size: int = 64, seed: int = 0) -> tuple[Tensor, Tensor]:
    """N×S target score ratios ``f(x_k)/f(x)`` after removing k superpixels (most relevant mean first),
    and the number of superpixels per sample (entries beyond it are 0)."""
    if segmentation_method != "slic":
        raise HeatlabError(f"Unknown segmentation_method={segmentation_method!r}; heatlab implements 'slic'.")
    x, y, a = _prep(model, x, y, a, abs)
    groups, counts = _segments_of(x, segments, n_segments)
    k = int(counts.max())
    sums = P.group_sums(a.flatten(1), groups, k)
    sizes = P.group_sums(torch.ones_like(a.flatten(1)), groups, k)
    means = torch.where(sizes > 0, sums / sizes.clamp(min=1), torch.full_like(sums, -torch.inf))
    rank = P.ranks_of(groups, means, "morf")
    fill = P.baseline(x, perturb_baseline, generator=generator(seed))
    y0 = P.predict(model, x, y, softmax=softmax, batch_size=batch_size)
    c = P.removal_curve(model, x, y, rank, list(range(1, k + 1)), fill, softmax=softmax, batch_size=batch_size,
                        lengths=counts)  # the curve ends at each image's own superpixel count
    valid = torch.arange(k, device=x.device)[None, :] < counts[:, None]
    return torch.where(valid, c / y0[:, None], torch.zeros_like(c)), counts


def irof(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, **kw) -> Tensor:
    """IROF (Rieger & Hansen 2020): superpixels (scikit-image SLIC) removed by mean relevance, most
    relevant first; the area over the curve of ``f(x_k)/f(x)``: S minus its trapezoid area (unit
    steps, as Quantus). Higher is better."""
    c, counts = irof_curve(model, x, y, a, **kw)
    pair = torch.arange(1, c.shape[1], device=c.device)[None, :] < counts[:, None]
    area = ((c[:, 1:] + c[:, :-1]) / 2 * pair).sum(1)
    return counts.double() - area


def infidelity(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, n_perturb_samples: int = 10,
               perturb_std: float = 0.1, noise: Tensor | None = None, softmax: bool = False, batch_size: int = 64,
               seed: int = 0) -> Tensor:
    """Infidelity (Yeh et al. 2019, Captum's definition): mean over ``n_perturb_samples`` Gaussian
    perturbations I (std ``perturb_std``) of ``(I·a - (f(x) - f(x - I)))²``. Lower is better (0 for
    the exact gradient of a linear model). ``noise`` (n_perturb_samples×N×...) fixes I."""
    x, y, a = _prep(model, x, y, a)
    if noise is None:
        noise = perturb_std * torch.randn((n_perturb_samples, *x.shape), generator=generator(seed), dtype=torch.float64)
    noise = noise.to(x.device, x.dtype)
    if noise.shape[1:] != x.shape:
        raise HeatlabError(f"noise must be n_perturb_samples×{tuple(x.shape)}, got {tuple(noise.shape)}.")
    y0 = P.predict(model, x, y, softmax=softmax, batch_size=batch_size)
    yk = P.predict(model, (x.unsqueeze(0) - noise).flatten(0, 1), y, softmax=softmax, batch_size=batch_size)
    dot = torch.stack([(nk * a).flatten(1).sum(1) for nk in noise])  # per draw: no K×N×... float64 copy
    return (dot - (y0.unsqueeze(0) - yk.view(-1, x.shape[0]))).square().mean(0)


def infidelity_patches(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, perturb_patch_sizes=(4,),
                       n_perturb_samples: int = 10, perturb_baseline="black", abs: bool = False,
                       softmax: bool = False, batch_size: int = 64, seed: int = 0) -> Tensor:
    """Infidelity as Quantus 0.6 computes it (Yeh et al. 2019): patches of each size set to the
    baseline cumulatively in raster order; the mean squared difference between the drop of the target
    score and the relevance-weighted change of the input, averaged over sizes and samples (a
    deterministic baseline is computed once). Lower is better."""
    x, y, a = _prep(model, x, y, a, abs)
    gen = generator(seed)
    random = isinstance(perturb_baseline, str) and perturb_baseline == "uniform"
    y0 = P.predict(model, x, y, softmax=softmax, batch_size=batch_size)
    total = 0
    reps = n_perturb_samples if random else 1
    for _ in range(reps):
        for ps in perturb_patch_sizes:
            groups, k = P.patch_groups(x, ps)
            fill = P.baseline(x, perturb_baseline, generator=gen)
            c = P.removal_curve(model, x, y, groups, list(range(1, k + 1)), fill, softmax=softmax, batch_size=batch_size)
            change = P.group_sums((a * (x - fill).double()).flatten(1), groups, k).cumsum(1)
            total = total + ((y0[:, None] - c) - change).square().mean(1)
    return total / (reps * len(perturb_patch_sizes))


def non_sensitivity(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, eps: float = 1e-5,
                    features_in_step: int = 1, perturb_baseline="black", abs: bool = True, normalise: bool = True,
                    softmax: bool = True, batch_size: int = 64, seed: int = 0) -> Tensor:
    """Non-sensitivity (Nguyen & Martinez 2020): the number of values of ``x`` where "the relevance is
    below ``eps``" disagrees with "setting the value's step (``features_in_step`` values in raster
    order) to the baseline changes the target score by less than ``eps``". ``normalise`` divides
    ``a`` by its per-sample max |a| first. Lower is better (0: zero relevance exactly where the model
    does not care)."""
    x, y, a = _prep(model, x, y, a)
    a = prepare(a, abs=abs, normalise=normalise)
    groups, d = P.element_groups(x)
    steps = _steps(d, features_in_step, "features_in_step")
    fill = P.baseline(x, perturb_baseline, generator=generator(seed))
    y0 = P.predict(model, x, y, softmax=softmax, batch_size=batch_size)
    c = P.removal_curve(model, x, y, groups, steps, fill, softmax=softmax, batch_size=batch_size, window=True)
    insensitive = (c - y0[:, None]).abs() < eps
    step_of = torch.bucketize(groups.contiguous(), torch.tensor(steps, device=x.device), right=True)
    return (insensitive.gather(1, step_of) ^ (a.flatten(1) < eps)).sum(1).double()


def _info(name, fn, hib, source):
    return MetricInfo(name=name, fn=fn, higher_is_better=hib, family="faithfulness", needs=("model",), source=source)


FAITHFULNESS = (
    _info("pixel_flipping", pixel_flipping, False, "Bach et al. 2015"),
    _info("region_perturbation_morf", region_perturbation, True, "Samek et al. 2017"),
    _info("region_perturbation_lerf", functools.partial(region_perturbation, order="lerf"), False, "Samek et al. 2017"),
    _info("selectivity", selectivity, False, "Montavon et al. 2018"),
    _info("insertion", insertion, True, "Petsiuk et al. 2018"),
    _info("deletion", deletion, False, "Petsiuk et al. 2018"),
    _info("road_morf", road, False, "Rong et al. 2022"),
    _info("road_lerf", functools.partial(road, order="lerf"), True, "Rong et al. 2022"),
    _info("faithfulness_correlation", faithfulness_correlation, True, "Bhatt et al. 2020"),
    _info("monotonicity_correlation", monotonicity_correlation, True, "Nguyen & Martinez 2020"),
    _info("irof", irof, True, "Rieger & Hansen 2020"),
    _info("infidelity", infidelity, False, "Yeh et al. 2019"),
    MetricInfo(name="non_sensitivity", fn=non_sensitivity, higher_is_better=False, family="axiomatic",
               needs=("model",), source="Nguyen & Martinez 2020"),
)
