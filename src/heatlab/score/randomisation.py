"""Randomisation metrics: does the heatmap depend on the model's parameters and on the class?

No-truth signature ``fn(model, x, y, a, *, explain_func, ..., seed=0) -> float64 N``: ``x``
``N×C×H×W`` or ``N×F``, ``y`` the explained class per sample, ``a`` the heatmaps of ``x``,
``explain_func(model, x, y)`` re-explains. The user's model is never changed: layers are
randomised on a deep copy, with ``reset_parameters()`` after ``torch.manual_seed(seed + 1)``
inside :func:`torch.random.fork_rng` (Quantus 0.6's draws, so the same ``seed`` gives the same
weights as Quantus; the global RNG is left as it was). Layers are the modules that have
``reset_parameters``, in ``named_modules`` order (``bottom_up``) or reversed (``top_down``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.score._no_truth import (average_ranks, check_inputs, explainer, generator, pearson, predict, prepare, rows,
                                     spearman, ssim)
from heatlab.score.metric_info import MetricInfo

#: Orders of layer randomisation: cascading from the output, cascading from the input, one layer at a time.
LAYER_ORDERS = ("top_down", "bottom_up", "independent")

Similarity = Callable[[Tensor, Tensor], Tensor]


def randomised_layers(model: nn.Module, layer_order: str = "top_down", seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """``(layer name, model copy)`` after randomising each layer in turn (Adebayo et al. 2018).

    Cascading orders keep the earlier layers randomised; ``independent`` restores the others first.
    The same copy is yielded each time (use it before advancing).
    """
    if layer_order not in LAYER_ORDERS:
        raise HeatlabError(f"Unknown layer_order={layer_order!r}; pass one of {', '.join(LAYER_ORDERS)}.")
    work = copy.deepcopy(model)
    original = copy.deepcopy(model.state_dict()) if layer_order == "independent" else None
    layers = [(n, m) for n, m in work.named_modules() if hasattr(m, "reset_parameters")]
    if not layers:
        raise HeatlabError("The model has no layer with reset_parameters() to randomise; pass a model of torch layers.")
    if layer_order == "top_down":
        layers = layers[::-1]
    devices = list(range(torch.cuda.device_count()))  # restore every CUDA generator manual_seed touches
    for name, layer in layers:
        if layer_order == "independent":
            work.load_state_dict(original)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed + 1)
            layer.reset_parameters()
        yield name, work


def _similarity(similarity_func: Similarity | None) -> Similarity:
    return spearman if similarity_func is None else similarity_func


def mprt_layers(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, explain_func=None,
                similarity_func: Similarity | None = None, layer_order: str = "top_down", abs: bool = True,
                normalise: bool = True, skip_layers: bool = False, seed: int = 0,
                explain: Callable | None = None, original: bool = True) -> dict[str, Tensor]:
    """Similarity of ``a`` to the explanation of the model with its layers randomised, per layer:
    ``{"original": ..., layer name: ...}`` (float64 N each), as Quantus's ``MPRT`` reports it.
    ``skip_layers``: only the last (fully randomised, for cascading orders) model; ``original=False``
    leaves out the unrandomised model (one explanation fewer)."""
    x, y, a = check_inputs(model, x, y, a)
    explain = explain or explainer(explain_func, "mprt")
    post = lambda t: rows(prepare(t, abs=abs, normalise=normalise))  # noqa: E731
    a = post(a)
    if similarity_func is None:  # Spearman: rank the reference once
        ref = average_ranks(a)
        sim = lambda _a, b: pearson(ref, average_ranks(b))  # noqa: E731
    else:
        sim = similarity_func
    out = {"original": sim(a, post(explain(model, x, y))).double()} if original else {}
    layers = randomised_layers(model, layer_order, seed)
    n = sum(1 for _, m in model.named_modules() if hasattr(m, "reset_parameters"))
    for i, (name, random_model) in enumerate(layers):
        if skip_layers and i + 1 < n:
            continue
        out[name] = sim(a, post(explain(random_model, x, y))).double()
    return out


def mprt(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, explain_func=None,
         similarity_func: Similarity | None = None, layer_order: str = "top_down", abs: bool = True,
         normalise: bool = True, return_average_correlation: bool = False, seed: int = 0) -> Tensor:
    """Model parameter randomisation test (Adebayo et al. 2018): Spearman rank correlation (Quantus's
    default ``similarity_func``) of ``|a|`` with the explanation of the model whose layers were
    randomised cascading from the output (``layer_order``), after the last layer (all randomised), or
    the mean over layers with ``return_average_correlation``. Lower is better: an explanation that
    does not change with the weights (e.g. the input itself) scores 1 and fails the sanity check."""
    layers = mprt_layers(model, x, y, a, explain_func=explain_func, similarity_func=similarity_func,
                         layer_order=layer_order, abs=abs, normalise=normalise, seed=seed, original=False,
                         skip_layers=not return_average_correlation)  # explain only the models the score reads
    scores = torch.stack(list(layers.values()), 1)
    return scores.mean(1) if return_average_correlation else scores[:, -1]


def discrete_entropy(a: Tensor, n_bins: int = 100) -> Tensor:
    """Entropy of each row's histogram of ``n_bins`` equal bins over its own range, as
    ``scipy.stats.entropy(np.histogram(row, bins=n_bins)[0])`` (NumPy's binning rule included)."""
    v = rows(a)
    lo, hi = v.amin(1, keepdim=True), v.amax(1, keepdim=True)
    same = hi == lo  # NumPy widens an empty range to ±0.5
    lo, hi = torch.where(same, lo - 0.5, lo), torch.where(same, hi + 0.5, hi)
    # NumPy: edges by linspace in float64 cast to the data's dtype, index ((v - lo) / (hi - lo)) * n
    k = torch.arange(n_bins + 1, dtype=torch.float64, device=v.device)
    edges = (k * ((hi - lo).double() / n_bins) + lo.double()).to(v.dtype)
    edges[:, -1:] = hi
    idx = (((v - lo) / (hi - lo)) * n_bins).to(torch.int64)
    idx = torch.where(idx == n_bins, n_bins - 1, idx)
    idx = idx - (v < edges.gather(1, idx)).long()
    idx = idx + ((v >= edges.gather(1, idx + 1)) & (idx != n_bins - 1)).long()
    counts = torch.zeros(v.shape[0], n_bins, dtype=torch.float64, device=v.device).scatter_add_(
        1, idx, torch.ones_like(idx, dtype=torch.float64))
    p = counts / counts.sum(1, keepdim=True)
    return -torch.where(p > 0, p * p.log(), 0).sum(1)


def emprt(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, explain_func=None, n_bins: int = 100,
          layer_order: str = "bottom_up", abs: bool = False, normalise: bool = False, seed: int = 0) -> Tensor:
    """Efficient MPRT (Hedström et al. 2023): the relative rise of the explanation's complexity (the
    discrete entropy of its histogram of ``n_bins`` bins) once every layer is randomised,
    ``(H(a_random) − H(a)) / H(a)``. Higher is better; a model-independent explanation scores 0."""
    x, y, a = check_inputs(model, x, y, a)
    explain = explainer(explain_func, "emprt")
    post = lambda t: prepare(t, abs=abs, normalise=normalise, how="second_moment")  # noqa: E731
    h0 = discrete_entropy(post(a), n_bins)
    for _, random_model in randomised_layers(model, layer_order, seed):
        pass
    h1 = discrete_entropy(post(explain(random_model, x, y)), n_bins)
    return (h1 - h0) / h0


def smoothed(explain: Callable, nr_samples: int, noise_magnitude: float, seed: int) -> Callable:
    """``explain`` averaged over ``nr_samples`` inputs ``x + ε`` (the last with ε = 0), ε Gaussian with
    std ``noise_magnitude · (max x − min x)`` per sample; one seeded noise image per draw, shared by all
    samples (so a sample's result does not depend on its batch)."""

    def run(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        gen = generator(seed)
        flat = rows(x)
        std = (noise_magnitude * (flat.amax(1) - flat.amin(1))).view(-1, *[1] * (x.ndim - 1))
        total = None
        for k in range(nr_samples):
            eps = 0 if k == nr_samples - 1 else torch.randn((1, *x.shape[1:]), generator=gen).to(x.device, x.dtype) * std
            e = explain(model, x + eps, y).double() / nr_samples
            total = e if total is None else total + e
        return total

    return run


def smprt(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, explain_func=None,
          similarity_func: Similarity | None = None, layer_order: str = "bottom_up", nr_samples: int = 50,
          noise_magnitude: float = 0.1, abs: bool = True, normalise: bool = True,
          return_average_correlation: bool = False, seed: int = 0) -> Tensor:
    """Smooth MPRT (Hedström et al. 2023): MPRT with both explanations denoised by averaging over
    ``nr_samples`` noisy copies of the input (:func:`smoothed`), normalised by their second moment.
    The reference is the smoothed explanation of the original model (``a`` is only checked).
    Lower is better."""
    x, y, a = check_inputs(model, x, y, a)
    explain = smoothed(explainer(explain_func, "smprt"), nr_samples, noise_magnitude, seed)
    sim = _similarity(similarity_func)
    post = lambda t: rows(prepare(t, abs=abs, normalise=normalise, how="second_moment"))  # noqa: E731
    ref = post(explain(model, x, y))
    n = sum(1 for _, m in model.named_modules() if hasattr(m, "reset_parameters"))
    scores = torch.stack([sim(ref, post(explain(m, x, y))).double()
                          for i, (_, m) in enumerate(randomised_layers(model, layer_order, seed))
                          if return_average_correlation or i + 1 == n], 1)  # the last layer alone by default
    return scores.mean(1)


def off_classes(x: Tensor, y: Tensor, num_classes: int, seed: int) -> Tensor:
    """A class other than ``y`` per sample, uniform over the others, drawn from the sample's own content
    (:func:`heatlab.explain.methods.random.sample_keys`) so it does not depend on the batch."""
    from heatlab.explain.methods.random import sample_keys

    if num_classes < 2:
        raise HeatlabError(f"num_classes={num_classes} must be at least 2 for a random other class.")
    y = y.to(x.device).long()
    return (y + 1 + sample_keys(x, seed) % (num_classes - 1)) % num_classes


def random_logit(model: nn.Module, x: Tensor, y: Tensor, a: Tensor, *, explain_func=None,
                 similarity_func: Similarity | None = None, num_classes: int | None = None, abs: bool = False,
                 normalise: bool = True, y_off: Tensor | None = None, seed: int = 0) -> Tensor:
    """Random logit (Sixt et al. 2020): SSIM (Quantus's default ``similarity_func``, on the flattened
    heatmaps) between ``a`` and the explanation of a random other class (``y_off``, or
    :func:`off_classes` of ``num_classes``, default the model's output width). Lower is better: an
    explanation that ignores the class scores 1."""
    x, y, a = check_inputs(model, x, y, a)
    explain = explainer(explain_func, "random_logit")
    if y_off is None:
        num_classes = num_classes or predict(model, x[:1]).shape[1]
        y_off = off_classes(x, y, num_classes, seed)
    sim = ssim if similarity_func is None else similarity_func
    post = lambda t: rows(prepare(t, abs=abs, normalise=normalise))  # noqa: E731
    return sim(post(a), post(explain(model, x, torch.as_tensor(y_off).to(x.device).long()))).double()


RANDOMISATION = (
    MetricInfo("mprt", mprt, False, "randomisation", ("model", "explain"), "Adebayo et al. 2018"),
    MetricInfo("emprt", emprt, True, "randomisation", ("model", "explain"), "Hedström et al. 2023"),
    MetricInfo("smprt", smprt, False, "randomisation", ("model", "explain"), "Hedström et al. 2023"),
    MetricInfo("random_logit", random_logit, False, "randomisation", ("model", "explain"), "Sixt et al. 2020"),
)

__all__ = ["LAYER_ORDERS", "RANDOMISATION", "discrete_entropy", "emprt", "mprt", "mprt_layers", "off_classes",
           "random_logit", "randomised_layers", "smoothed", "smprt"]
