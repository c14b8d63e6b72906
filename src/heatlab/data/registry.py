"""One registry for every dataset heatlab reads, and :func:`open_data` (``heatlab.data.open``).

Every stage opens data only through ``open_data(spec, split)``, which returns a
:class:`heatlab.data.split.Split` (``load_shard(k)``, ``class_names``, ``input_kind``,
``truth_kind``, ...). A dataset *spec* names a registered dataset and, when it reads a file, the
path; a bare folder written by ``heatlab data cells`` works as well as ``cells:DIR``::

    cells:/data/cells                  synthetic cells with ground truth (paper 002)
    chest_xray:/data/chest_xray        folders train/val/test/{NORMAL,PNEUMONIA} (paper 000)
    covid:/data/COVID-19_Radiography   <class>/images/*.png, index mod 3 split (paper 000, App. A.4)
    folder:/data/pets                  generic <split>/<class>/* image folders, or flat <class>/* (seeded split)
    drybean:/data/Dry_Bean_Dataset.xlsx   (or .csv), per-class index mod 3 split (paper 000, App. A.4)
    creditcard:/data/creditcard.csv    cross projective augmentation (paper 000, App. A.4)
    wine, breast_cancer                scikit-learn's bundled tables (offline)
    mnist:/data/mnist, fashion_mnist:DIR   IDX files (plain or .gz), truth = digit pixels (paper 004)
    digits                             scikit-learn's bundled 8x8 digits at 28 px (offline)
    cifar10:/data/cifar-10-batches-bin CIFAR-10 binary batches data_batch_1..5.bin, test_batch.bin
    stl10:/data/stl10_binary           STL-10 binary train_X/y.bin, test_X/y.bin (unlabeled ignored)

Loader modules are imported on first use, so opening a cell dataset never imports scikit-learn.
A package adds a dataset with a ``heatlab.datasets`` entry point naming a :class:`DatasetEntry`
(the registry pattern is :mod:`heatlab.registry`); a name is looked up there only when no built-in
name fits.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from heatlab.data.shards import MANIFEST, open_split
from heatlab.seeds import derive_seed
from heatlab.data.split import ArraySplit, ShardedSplit, Split, feature_names, input_kind, input_shape  # noqa: F401  (re-exported)
from heatlab.errors import HeatlabError
from heatlab.registry import Registry

SPLITS = ("train", "val", "test")
#: Paper 000, Appendix A.4: the i-th sample of a class goes to the split whose remainder is i mod 3.
MOD3_REMAINDER = {"train": 0, "val": 1, "test": 2}


def mixed_order(n: int, seed: int, *parts: object) -> np.ndarray:
    """A seeded permutation of ``range(n)`` (from ``(seed, *parts)``).

    Loaders store each split in this order so that every shard mixes the classes: the training
    code draws batches shard by shard and validates on one shard at a time.
    """
    g = torch.Generator().manual_seed(derive_seed(seed, *parts, "order"))
    return torch.randperm(n, generator=g).numpy()


# ----------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: ``module.function`` loads it.

    ``per_split`` loaders are called as ``function(path, split, **options) -> split object``;
    the others read their file once: ``function(path, **options) -> {split: split object}``.
    """

    name: str
    module: str
    function: str
    needs_path: bool
    per_split: bool
    summary: str


#: The built-in datasets (immutable; ``register`` returns a new registry).
DATASETS: Registry[DatasetEntry] = Registry("datasets", DatasetEntry, (
        DatasetEntry("chest_xray", "heatlab.data.images", "chest_xray", True, True,
                     "chest X-ray pneumonia folders train/val/test/{NORMAL,PNEUMONIA}"),
        DatasetEntry("covid", "heatlab.data.images", "covid_radiography", True, True,
                     "COVID-19 radiography folders <class>/images/*.png"),
        DatasetEntry("folder", "heatlab.data.images", "split_folder", True, True,
                     "image folders <split>/<class>/* or <class>/* (split 70/15/15, seeded), masks optional "
                     "in masks/[<split>/]<class>/"),
        DatasetEntry("drybean", "heatlab.data.tabular", "drybean", True, False,
                     "dry bean table (.xlsx or .csv)"),
        DatasetEntry("creditcard", "heatlab.data.tabular", "creditcard", True, False,
                     "credit-card fraud table (.csv)"),
        DatasetEntry("wine", "heatlab.data.tabular", "wine", False, False, "scikit-learn's wine table"),
        DatasetEntry("breast_cancer", "heatlab.data.tabular", "breast_cancer", False, False,
                     "scikit-learn's breast cancer table"),
        DatasetEntry("cells", "heatlab.data.shards", "open_split", True, True,
                     "synthetic cells written by `heatlab data cells` (ground truth 0/0.4/0.9)"),
        DatasetEntry("mnist", "heatlab.data.digits", "mnist", True, False,
                     "MNIST IDX files (plain or .gz) in a folder, truth = digit pixels > 0.5"),
        DatasetEntry("fashion_mnist", "heatlab.data.digits", "fashion_mnist", True, False,
                     "Fashion-MNIST IDX files (plain or .gz) in a folder, truth = pixels > 0.5"),
        DatasetEntry("digits", "heatlab.data.digits", "digits", False, False,
                     "scikit-learn's 8x8 digits enlarged to 28 px, truth = digit pixels > 0.5"),
        DatasetEntry("cifar10", "heatlab.data.natural", "cifar10", True, False,
                     "CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin), 3x32x32, no truth"),
        DatasetEntry("stl10", "heatlab.data.natural", "stl10", True, False,
                     "STL-10 binary files (train_X/y.bin, test_X/y.bin), 3x96x96, no truth"),
))  # fmt: skip


def dataset_registry() -> Registry[DatasetEntry]:
    """The built-in datasets plus those of the ``heatlab.datasets`` entry points."""
    return DATASETS.with_entry_points()


def available_datasets() -> list[str]:
    """Registered dataset names (built-in, then entry points), in registry order."""
    return list(dataset_registry())


def _find(name: str) -> DatasetEntry | None:
    """The entry of dataset ``name`` (case-insensitive): built-in, else an entry point, else None."""
    name = name.strip().lower()
    return DATASETS.get(name) or dataset_registry().get(name)


def names_plugin(spec: str | os.PathLike) -> bool:
    """True when ``spec`` names no cell folder and no built-in dataset, so opening it would load an
    installed package's ``heatlab.datasets`` entry point (code that a run folder alone must not choose)."""
    if is_cell_folder(spec):
        return False
    return str(spec).partition(":")[0].strip().lower() not in DATASETS


def _usage() -> str:
    return ", ".join(f"{e.name}:PATH" if e.needs_path else e.name for e in DATASETS.values())


def parse_spec(spec: str) -> tuple[DatasetEntry, Path | None]:
    """``"name:path"`` or ``"name"`` -> (registry entry, absolute path or None)."""
    name, sep, path = str(spec).partition(":")
    entry = _find(name)
    if entry is None:
        raise HeatlabError(f"Unknown dataset '{spec}'; use one of {_usage()}.")
    if entry.needs_path and not path.strip():
        raise HeatlabError(f"Dataset '{entry.name}' reads a file or folder; write it as '{entry.name}:PATH'.")
    if not entry.needs_path and sep:
        raise HeatlabError(f"Dataset '{entry.name}' is bundled and takes no path; write it as '{entry.name}'.")
    return entry, (Path(path.strip()).expanduser().resolve() if entry.needs_path else None)


def canonical_spec(spec: str) -> str:
    """The spec with its path made absolute (what a run should record to find the data again)."""
    entry, path = parse_spec(spec)
    return f"{entry.name}:{path}" if path is not None else entry.name


def check_split(split: str) -> str:
    """``split`` if it is one of train, val, test; HeatlabError otherwise."""
    if split not in SPLITS:
        raise HeatlabError(f"Split '{split}' is not one of {', '.join(SPLITS)}; pass one of those.")
    return split


def _check_splits(splits: Sequence[str]) -> tuple[str, ...]:
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    if not splits:
        raise HeatlabError(f"No split asked for; use one or more of {', '.join(SPLITS)}.")
    return tuple(check_split(s) for s in splits)


def _loader(entry: DatasetEntry, options: Mapping[str, Any]):
    fn = getattr(importlib.import_module(entry.module), entry.function)
    allowed = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    for key in options:
        if key not in allowed:
            raise HeatlabError(f"Option '{key}' does not apply to dataset '{entry.name}'; use one of {', '.join(allowed)}.")
    return fn


def open_splits(spec: str, splits: Sequence[str] = SPLITS, **options: Any) -> dict[str, Any]:
    """Open several splits of a registered dataset at once (a table file is read only once)."""
    entry, path = parse_spec(spec)
    splits = _check_splits(splits)
    fn = _loader(entry, options)
    if entry.per_split:
        return {s: fn(path, s, **options) for s in splits}
    every = fn(path, **options) if entry.needs_path else fn(**options)
    return {s: every[s] for s in splits}


def open_dataset(spec: str, split: str, **options: Any) -> Any:
    """One split (``"train"``, ``"val"`` or ``"test"``) of the dataset named by ``spec``."""
    return open_splits(spec, _check_splits(split), **options)[split]


# ------------------------------------------------------------------------------ cells or registry
def is_cell_folder(data: str | os.PathLike) -> bool:
    """True when ``data`` is a folder written by :func:`heatlab.data.shards.write_cells`."""
    return (Path(data).expanduser() / MANIFEST).is_file()


def _not_found(data: object) -> HeatlabError:
    return HeatlabError(
        f"'{data}' is neither a cell dataset folder (with {MANIFEST}) nor a dataset spec; "
        f"pass a folder written by `heatlab data cells` or one of {_usage()}."
    )


def open_all(data: str | os.PathLike, splits: Sequence[str] = SPLITS, **options: Any) -> dict[str, Any]:
    """Splits of a cell folder (``CellSplit``) or of a registry spec (reading a table once)."""
    splits = _check_splits(splits)
    if is_cell_folder(data):
        if options:
            raise HeatlabError(f"A cell dataset folder takes no options (got {', '.join(options)}); drop them.")
        return {s: open_split(data, s) for s in splits}
    if _find(str(data).partition(":")[0]) is None:
        raise _not_found(data)
    return open_splits(str(data), splits, **options)


def open_any(data: str | os.PathLike, split: str, **options: Any) -> Any:
    """One split of a cell folder (``CellSplit``) or of a registry spec."""
    return open_all(data, (split,), **options)[split]


def open_data(spec: str | os.PathLike, split: str, **options: Any) -> Split:
    """Split ``split`` of the dataset ``spec`` (a registry spec or a cell folder): the one way stages read data."""
    return open_any(spec, split, **options)


def describe_data(data: str | os.PathLike) -> str:
    """What a run should record as its data: the absolute cell folder, or the canonical spec."""
    if is_cell_folder(data):
        return str(Path(data).expanduser().resolve())
    if _find(str(data).partition(":")[0]) is None:
        raise _not_found(data)
    return canonical_spec(str(data))
