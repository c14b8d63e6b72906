"""The one data interface every stage reads: a :class:`Split` served shard by shard.

A split is a sequence of samples cut into shards in a fixed stored order. ``load_shard(k)``
returns a dict with

- ``"images"``: the inputs, float32 ``N×C×H×W`` (``input_kind == "image"``) or ``N×F``
  (``input_kind == "table"``); the key keeps its historical name for tables too;
- ``"labels"``: int64 ``N``;
- ``"truth"`` (only when ``truth_kind`` is not ``None``): float32 ``N×H×W`` ground truth, either
  the cells' three levels :data:`TRUTH_LEVELS` (``truth_kind == "levels"``) or a binary mask in
  {0, 1} (``truth_kind == "mask"``).

Splits also tell ``class_names``, ``input_shape`` (per sample), ``num_shards`` and ``len()``;
:func:`iter_shards` and :func:`iter_batches` walk one without loading everything.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from heatlab.errors import HeatlabError

#: Ground-truth levels of the cells (paper 002 §III-A): irrelevant, localisation, discriminative feature.
TRUTH_LEVELS = (0.0, 0.4, 0.9)
INPUT_KINDS = ("image", "table")
TRUTH_KINDS = ("levels", "mask")


@runtime_checkable
class Split(Protocol):
    """What a stage may rely on (see the module docstring)."""

    class_names: list[str]
    num_shards: int
    input_shape: tuple[int, ...]
    input_kind: str
    truth_kind: str | None

    def __len__(self) -> int: ...

    def load_shard(self, k: int) -> dict[str, torch.Tensor]: ...


def kind_of_shape(shape: Sequence[int]) -> str:
    """"image" for a per-sample shape C×H×W, "table" for F."""
    return "image" if len(shape) == 3 else "table"


def has_truth(split: Any) -> bool:
    return getattr(split, "truth_kind", None) is not None


def iter_shards(split: Any) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """(k, shard dict) for every shard in stored order."""
    for k in range(split.num_shards):
        yield k, split.load_shard(k)


def iter_batches(split: Any, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of at most ``batch_size`` samples in stored order (a batch never spans two shards)."""
    for _, shard in iter_shards(split):
        n = len(shard["labels"])
        for lo in range(0, n, batch_size):
            yield {key: value[lo : lo + batch_size] for key, value in shard.items()}


class ShardedSplit:
    """Base of the split objects: ``n`` samples cut into shards of ``shard_size`` in stored order.

    Subclasses implement ``_load(lo, hi) -> {"images", "labels"[, "truth"]}`` for samples ``lo:hi``
    and set ``truth_kind`` when they serve ground truth.
    """

    truth_kind: str | None = None

    def __init__(self, n: int, class_names: Sequence[str], *, shard_size: int, input_shape: tuple[int, ...]):
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise HeatlabError(f"Shard size must be a whole number >= 1, got {shard_size!r}; pass e.g. shard_size=1000.")
        if n < 1:
            raise HeatlabError("The split holds no samples; check the data file or folder.")
        self.class_names: list[str] = [str(c) for c in class_names]
        self.shard_size = shard_size
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_shards: int = math.ceil(n / shard_size)
        self._n = n

    @property
    def input_kind(self) -> str:
        return kind_of_shape(self.input_shape)

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        shape, classes = self.input_shape, len(self.class_names)
        return f"{type(self).__name__}(samples={len(self)}, input_shape={shape}, classes={classes}, shards={self.num_shards})"

    def shard_bounds(self, k: int) -> tuple[int, int]:
        """Sample range ``[lo, hi)`` of shard ``k``."""
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.num_shards:
            raise HeatlabError(f"Shard index {k!r} is out of range; use 0 to {self.num_shards - 1}.")
        return k * self.shard_size, min((k + 1) * self.shard_size, self._n)

    def load_shard(self, k: int) -> dict[str, torch.Tensor]:
        """Shard ``k``: images float32 N×C×H×W (or N×F), labels int64 N (and truth N×H×W if any)."""
        return self._load(*self.shard_bounds(k))

    def _load(self, lo: int, hi: int) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


class ArraySplit(ShardedSplit):
    """An in-memory split: ``X`` float32 N×F (or N×C×H×W), ``y`` int64 N, served in shards.

    ``info`` holds per-sample arrays in the same order (e.g. ``"row"``: the sample's row in the
    source file), ``normalization`` the training statistics ``{"mean", "std", "applied"}`` of a
    standardised table, ``feature_names`` the column names.
    """

    def __init__(
        self,
        X: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        class_names: Sequence[str],
        *,
        shard_size: int = 1000,
        info: Mapping[str, np.ndarray] | None = None,
        normalization: Mapping[str, Any] | None = None,
        feature_names: Sequence[str] | None = None,
    ):
        X = X.float() if isinstance(X, torch.Tensor) else torch.from_numpy(np.asarray(X, dtype=np.float32))
        y = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y))
        if X.dim() not in (2, 4) or y.dim() != 1 or len(X) != len(y):
            raise HeatlabError(
                f"ArraySplit needs inputs N×F or N×C×H×W and one label per input, got {tuple(X.shape)} and "
                f"{tuple(y.shape)}; pass matching arrays."
            )
        in_range = len(y) == 0 or 0 <= int(y.min()) <= int(y.max()) < len(class_names)
        if y.dtype.is_floating_point or y.dtype == torch.bool or not in_range:
            raise HeatlabError(f"Labels must be whole numbers in 0..{len(class_names) - 1}; pass one class index per sample.")
        if not torch.isfinite(X).all():
            raise HeatlabError("Inputs contain NaN or infinite values; clean the data first.")
        super().__init__(len(y), class_names, shard_size=shard_size, input_shape=tuple(X.shape[1:]))
        self.inputs, self.labels = X.contiguous(), y.to(torch.int64).contiguous()
        self.info = {k: np.asarray(v) for k, v in (info or {}).items()}
        for key, value in self.info.items():
            if len(value) != len(y):
                raise HeatlabError(f"info['{key}'] has {len(value)} entries for {len(y)} samples; pass one per sample.")
        self.normalization = dict(normalization) if normalization is not None else None
        self.feature_names = list(feature_names) if feature_names is not None else None

    def _load(self, lo: int, hi: int) -> dict[str, torch.Tensor]:
        return {"images": self.inputs[lo:hi].clone(), "labels": self.labels[lo:hi].clone()}


def input_shape(split: Any) -> tuple[int, ...]:
    """Per-sample input shape of any split object (C×H×W or F), read from its first shard if needed."""
    shape = getattr(split, "input_shape", None)
    if shape is not None:
        return tuple(shape)
    return tuple(split.load_shard(0)["images"].shape[1:])


def input_kind(split: Any) -> str:
    """"image" or "table" for any split object."""
    return getattr(split, "input_kind", None) or kind_of_shape(input_shape(split))


def feature_names(split: Any) -> list[str]:
    """Column names of a table split (``f0, f1, ...`` when it has none); [] for images."""
    if input_kind(split) != "table":
        return []
    names = getattr(split, "feature_names", None)
    return list(names) if names else [f"f{i}" for i in range(input_shape(split)[0])]


def channel_stats(split: Any, max_samples: int = 2000) -> dict[str, list[float]]:
    """Per-channel mean and std (population) of the first ``max_samples`` images of ``split``, in shard order.

    ``{"mean": [C floats], "std": [C floats]}``, rounded to 6 decimals so they store exactly in JSON;
    a constant channel gets std 1 (standardising it only shifts it).
    """
    total = total_sq = None
    n = 0
    for k in range(split.num_shards):
        x = split.load_shard(k)["images"][: max_samples - n].double()
        if x.ndim != 4:
            raise HeatlabError("channel_stats needs N×C×H×W images; tables are standardised by their loader.")
        s, sq = x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))
        total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
        n += x.shape[0]
        if n >= max_samples:
            break
    if not n:
        raise HeatlabError("channel_stats needs at least one image; the split is empty.")
    count = n * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}
