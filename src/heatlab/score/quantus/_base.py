"""The one Quantus-style call shared by every class of :mod:`heatlab.score.quantus`.

:class:`TruthMetric` (localisation, five-band): ``metric(a_batch=, s_batch=)`` -> per-sample floats.
:class:`QuantusMetric` (no-truth families): Quantus 0.6's constructor arguments checked against
:data:`COMMON` and the class's ``options``; ``metric(model=, x_batch=, y_batch=, a_batch=,
explain_func=, device=)`` converts the batch to tensors on the model's device, checks the heatmaps
(:func:`heatlab.score._no_truth.check_heatmaps`), post-processes them as Quantus does (``normalise_func``
over the whole batch when ``normalise``, then ``|a|`` when ``abs``; re-explained batches the same),
calls :meth:`QuantusMetric.compute` and aggregates with ``return_aggregate``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.models.state import model_device
from heatlab.score._no_truth import check_heatmaps

#: Constructor arguments every Quantus 0.6 metric takes (``perturb_func`` must stay None here).
COMMON = ("abs", "normalise", "normalise_func", "normalise_func_kwargs", "return_aggregate", "aggregate_func",
          "default_plot_func", "disable_warnings", "display_progressbar", "perturb_func", "perturb_func_kwargs")


def tensor(x, what: str) -> Tensor:
    """A NumPy array or tensor as a detached tensor (bool or real numbers only)."""
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        if x.dtype == object or x.dtype.kind not in "biuf":
            raise HeatlabError(f"{what} must hold bool or real numbers, got NumPy dtype {x.dtype}.")
        return torch.from_numpy(np.ascontiguousarray(x))
    raise HeatlabError(f"{what} must be a NumPy array or torch tensor, got {type(x).__name__}.")


def floats(t: Tensor) -> list:
    """Per-sample values (or per-sample curves) as Python floats."""
    return t.double().cpu().tolist()


def np_normalise_by_max(a: np.ndarray) -> np.ndarray:
    """Quantus's ``normalise_by_max``: ``a / max |a|`` over the whole batch."""
    return a if np.all(a == 0) else a / np.max(np.abs(a))


def np_normalise_by_second_moment(a: np.ndarray) -> np.ndarray:
    """Quantus's ``normalise_by_average_second_moment_estimate`` over the whole batch."""
    m = np.sqrt(np.sum(a**2) / a.size)
    return a if np.all(a == 0) or m == 0 else a / m


def similarity(func):
    """A Quantus similarity function ``(a, b, batched=True)`` on NumPy rows as heatlab's torch one."""
    if func is None:
        return None
    return lambda a, b: torch.as_tensor(np.asarray(func(a.cpu().numpy(), b.cpu().numpy(), batched=True),
                                                   dtype=np.float64))


def missing_attributions(name: str, explain_func, a_batch, needs_explain: bool = False) -> None:
    """Raise unless ``a_batch`` is given or ``explain_func`` can compute it (or must be there anyway)."""
    if explain_func is None and (needs_explain or a_batch is None):
        raise HeatlabError(f"{name} needs explain_func (e.g. heatlab.explain.explain_func)"
                           f"{'' if needs_explain else ' or a_batch'}.")


class TruthMetric:
    """Ground-truth metrics: ``a_batch`` (given or from ``explain_func``) scored against ``s_batch``."""

    name = ""

    def __call__(self, model=None, x_batch=None, y_batch=None, a_batch=None, s_batch=None, *,
                 explain_func=None, explain_func_kwargs=None, **kwargs) -> list[float]:
        if s_batch is None:
            raise HeatlabError(f"{type(self).__name__} needs ground truth; pass s_batch (N×1×H×W masks).")
        missing_attributions(type(self).__name__, explain_func, a_batch)
        if a_batch is None:
            a_batch = explain_func(model=model, inputs=x_batch, targets=y_batch, **(explain_func_kwargs or {}))
        return floats(self.score(tensor(a_batch, "a_batch"), tensor(s_batch, "s_batch")))

    def score(self, a: Tensor, s: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class QuantusMetric:
    """No-truth metric called as Quantus 0.6 calls it; subclasses set ``options`` (their own
    constructor arguments with Quantus's defaults, plus heatlab's ``seed``/``noise`` where they draw),
    the ``*_default`` flags, and implement :meth:`compute` (and :meth:`configure` to check options)."""

    options: dict = {}
    abs_default, normalise_default, softmax_default, aggregate_default = False, True, True, False
    default_normalise: Callable = staticmethod(np_normalise_by_max)
    #: dtype a given ``a_batch`` is scored in (re-explained heatmaps keep float64 if they have it)
    heatmap_dtype = np.float64
    needs_model, needs_explain = True, False
    #: why ``perturb_func`` must stay None, and what to pass instead
    perturb_func_hint = "does not take a custom perturb_func; pick perturb_baseline instead"

    def __init__(self, **kwargs):
        name = type(self).__name__
        unknown = set(kwargs) - set(self.options) - set(COMMON)
        if unknown:
            raise HeatlabError(f"{name} got unknown argument(s) {sorted(unknown)}; "
                               f"it takes {sorted(self.options)} and Quantus's common ones.")
        if kwargs.get("perturb_func") is not None:
            raise HeatlabError(f"{name} {self.perturb_func_hint}.")
        self.abs = kwargs.get("abs", self.abs_default)
        self.normalise = kwargs.get("normalise", self.normalise_default)
        func = kwargs.get("normalise_func") or type(self).default_normalise
        func_kwargs = kwargs.get("normalise_func_kwargs") or {}
        self.normalise_func = (lambda a: func(a, **func_kwargs)) if func_kwargs else func
        self.return_aggregate = kwargs.get("return_aggregate", self.aggregate_default)
        self.aggregate_func = kwargs.get("aggregate_func") or np.mean
        self.perturb_func_kwargs = kwargs.get("perturb_func_kwargs") or {}
        self.kw = {k: kwargs.get(k, v) for k, v in self.options.items()}
        self.configure()

    def configure(self) -> None:
        """Check and derive options from ``self.kw`` (called once by ``__init__``)."""

    def post(self, a: np.ndarray) -> np.ndarray:
        """Quantus's post-processing of one batch of heatmaps: normalise (whole batch), then ``|a|``; in
        ``heatmap_dtype`` or wider."""
        a = np.asarray(a, dtype=np.result_type(np.asarray(a).dtype, self.heatmap_dtype))
        out = np.asarray(self.normalise_func(a.copy())) if self.normalise else a
        out = np.abs(out) if self.abs else out
        return out.astype(np.result_type(out.dtype, self.heatmap_dtype), copy=False)

    def __call__(self, model=None, x_batch=None, y_batch=None, a_batch=None, s_batch=None, channel_first=None,
                 explain_func=None, explain_func_kwargs=None, model_predict_kwargs=None, softmax=None, device=None,
                 batch_size: int = 64, **kwargs):
        name = type(self).__name__
        if self.needs_model:
            if model is None or x_batch is None or y_batch is None:
                raise HeatlabError(f"{name} needs model, x_batch and y_batch.")
            if getattr(model, "training", False):
                raise HeatlabError(f"{name} needs the model in evaluation mode; call model.eval() first.")
        if model is not None and not isinstance(model, nn.Module):
            raise HeatlabError(f"{name} needs a torch nn.Module as model, got {type(model).__name__}.")
        missing_attributions(name, explain_func, a_batch, self.needs_explain)
        if device is not None and model is not None:
            model = model.to(device)
        dev = model_device(model) if model is not None else torch.device("cpu")
        x = tensor(x_batch, "x_batch").float().to(dev) if x_batch is not None else None
        y = tensor(y_batch, "y_batch").long().reshape(-1).to(dev) if y_batch is not None else None
        explain = None
        if explain_func is not None:
            def explain(m, xx, yy):  # noqa: E306 - Quantus's call: NumPy in, post-processed heatmaps out
                out = explain_func(model=m, inputs=xx.detach().cpu().numpy(), targets=yy.detach().cpu().numpy(),
                                   **(explain_func_kwargs or {}))
                out = np.asarray(out.detach().cpu() if torch.is_tensor(out) else out)
                out = out[:, None] if out.ndim == xx.ndim - 1 else out
                return torch.from_numpy(self.post(out)).to(xx.device)
        if a_batch is None:
            a = explain(model, x, y)
        else:
            a = check_heatmaps(tensor(a_batch, "a_batch"), x, "a_batch")
            a = torch.from_numpy(self.post(a.cpu().numpy().astype(self.heatmap_dtype))).to(dev)
        out = self.compute(model, x, y, a, explain=explain, batch_size=max(batch_size, 1),
                           softmax=self.softmax_default if softmax is None else softmax)
        return [float(self.aggregate_func(out))] if self.return_aggregate and isinstance(out, list) else out

    def compute(self, model, x, y, a, *, explain, batch_size: int, softmax: bool):  # pragma: no cover - abstract
        raise NotImplementedError
