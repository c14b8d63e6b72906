"""Random: a control method whose heatmap is seeded noise, uniform in (0, 1), of the input's shape.

The floor a real method must beat. Uniform in (0, 1) as Quantus's "Control Var. Random Uniform":
non-negative like the absolute maps (Saliency, the LRP maps after ``abs``), so metrics that take
``|a|`` or the positive part see the same noise as the others see relevance.

Each sample's map is a pure function of ``seed``, the sample's values and the model's parameters
(integer hashes, :func:`sample_keys`), so the batch, its order, chunking and the device do not
change it (batched equals one-by-one), while a model with other weights (e.g. randomised by
MPRT) gets another map. Hashing is done in int64 modulo the prime ``2**31 - 1``, so no product
overflows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from heatlab.explain.methods.common import MethodSpec, Options, Run

_P = 2**31 - 1
_MULTIPLIERS = (1103515245, 1664525, 2147483629)


def _mix(h: Tensor) -> Tensor:
    """A scrambling of int64 values in ``[0, P)`` onto ``[0, P)``."""
    for m in _MULTIPLIERS:
        h = (h * m + 12345) % _P
        h = (h ^ (h >> 13)) % _P
    return h


def _words(t: Tensor) -> Tensor:
    """The tensor's bits as int64 words in ``[0, P)``, ``N×W`` (one row per sample)."""
    flat = t.detach().contiguous().reshape(t.shape[0], -1)
    size = flat.element_size()
    flat = flat.view(torch.int32) if size in (4, 8) else flat.view(torch.int16) if size == 2 else flat.to(torch.int32)
    return flat.long() % _P


def _content(rows: Tensor) -> Tensor:
    """A hash of each row of words: ``Σ_j words_j · mix(j) mod P``."""
    weights = _mix(torch.arange(1, rows.shape[1] + 1, device=rows.device))
    return ((rows + 1) * weights % _P).sum(1) % _P


def model_key(model: nn.Module) -> int:
    """A hash of the model's parameters and buffers."""
    h = 0
    for i, t in enumerate(model.state_dict().values()):
        if torch.is_tensor(t) and t.numel():
            h = (h * 1000003 + int(_content(_words(t.reshape(1, -1)))[0]) + i) % _P
    return h


def sample_keys(x: Tensor, seed: int, extra: int = 0) -> Tensor:
    """One int64 key in ``[0, P)`` per sample of ``x`` (``N``), from ``seed``, its values and ``extra``."""
    base = int(_mix(torch.tensor([(int(seed) * 7919 + int(extra)) % _P]))[0])
    return _mix((_content(_words(x)) + base) % _P)


def uniform_maps(x: Tensor, keys: Tensor) -> Tensor:
    """Maps of ``x``'s shape, uniform in (0, 1), a pure function of each sample's key."""
    d = x[0].numel()
    j = _mix(torch.arange(d, device=x.device))
    h = _mix((keys.to(x.device).view(-1, 1) + j) % _P)
    return ((h.double() + 0.5) / _P).to(x.dtype if x.is_floating_point() else torch.float32).view(x.shape)


@dataclass(frozen=True)
class RandomOptions(Options):
    """``seed``: which noise."""

    seed: int = 0


@contextmanager
def build(model: nn.Module, options: RandomOptions, inputs: Tensor) -> Iterator[Run]:
    weights = model_key(model)
    yield lambda x, target, o: uniform_maps(x, sample_keys(x, o.seed, weights))


SPEC = MethodSpec("Random", build, RandomOptions)
