"""heatlab's attribution methods as a Quantus ``explain_func`` (NumPy in, NumPy out).

Quantus calls ``explain_func(model=model, inputs=x_batch, targets=y_batch, **explain_func_kwargs)``
with NumPy ``x_batch`` (N×C×H×W) and ``y_batch`` (N) and expects a NumPy array of attributions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.explain.postprocess import CHANNEL_RULES
from heatlab.models.state import model_device


def explain_func(model: nn.Module, inputs, targets, **kwargs) -> np.ndarray:
    """Attributions of ``model`` for ``inputs`` and ``targets`` as a float32 NumPy array of ``inputs``' shape.

    inputs: NumPy or torch ``N×C×H×W`` (any shape :func:`~heatlab.explain.attribute` takes);
    targets: class per sample (NumPy/torch ``N``, an int, or ``None`` for the predicted class).
    kwargs: ``method=`` any heatlab method name (default ``"Saliency"``) plus that method's options
    (``abs``, ``layer``, ``n_steps``, ``seed``, ...; see :func:`heatlab.explain.attribute`).
    ``channels=`` (``"sum"``, ``"mean"``, ``"abs_sum"``, ``"max"``; default None = keep all)
    reduces the channel axis of a 4-D result to N×1×H×W, which Quantus's localisation metrics
    need against N×1×H×W masks. ``device`` (passed by some Quantus versions) is ignored: the
    model's device is used.
    """
    kwargs.pop("device", None)
    method = kwargs.pop("method", "Saliency")
    channels = kwargs.pop("channels", None)
    if channels is not None and channels not in CHANNEL_RULES:
        raise HeatlabError(f"Unknown channel rule channels={channels!r}; pass one of {sorted(CHANNEL_RULES)} or None.")
    if not isinstance(model, nn.Module):
        raise HeatlabError(f"explain_func needs a torch nn.Module as model, got {type(model).__name__}; "
                           "pass the PyTorch model itself.")
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
    if not x.is_floating_point():
        x = x.float()
    device = model_device(model)
    target = targets
    if target is not None and not isinstance(target, int):
        target = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target)
        target = target.long().reshape(-1).to(device)
    a = attribute(model, x.to(device), method, target=target, **kwargs)
    if channels is not None and a.ndim == 4:
        a = CHANNEL_RULES[channels](a).unsqueeze(1)
    return a.detach().float().cpu().numpy()
