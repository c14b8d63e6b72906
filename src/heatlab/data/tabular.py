"""Tabular datasets of paper 000's appendix (dry bean, credit-card fraud) and scikit-learn stand-ins.

Every loader returns ``{"train", "val", "test"}`` :class:`~heatlab.data.registry.ArraySplit`
objects with inputs float32 N×F; ``info["row"]`` gives each sample's row in the source table
(0-based, header excluded) and each split is stored in a seeded mixed order so shards mix classes.

* **Dry bean** (Appendix A.4): 16 feature columns and ``Class`` (7 classes in the real file;
  class order = sorted names). Per class, the i-th row in file order goes to train if
  ``i mod 3 == 0``, to val if 1, to test if 2.
* **wine**, **breast_cancer**: scikit-learn's bundled tables, split the same way.
* Standardisation of these three: mean and population std (ddof 0) of the **training split
  only**; a constant feature gets std 1. With ``standardize=True`` (default) the arrays are
  standardised, so heatmaps and ``x+h`` live in the standardised space; with ``False`` they stay
  raw. Either way ``split.normalization = {"mean", "std", "applied"}`` holds the statistics, so a
  model on raw inputs can carry its own Normalize layer.
* **Credit-card fraud** (Appendix A.4): features V1..V28, label ``Class`` (1 = fraud); each
  feature is clipped to [-3, 3] and mapped by ``v/3 + 0.5`` (into [-0.5, 1.5], as the paper
  states it). The positives (file order) are split by index mod 3 *before* any augmentation;
  the negatives are permuted with a generator seeded by ``seed`` and cut into disjoint blocks of
  ``c·|P_split|`` (c = cross factor, 5). Train and val hold their block N' of real negatives plus
  the cross projective augmentation of their own positives: the k-th negative of the block is
  paired with positive ``k // c`` and gives the synthetic positive ``λ·p + (1−λ)·n`` (λ = 0.95),
  so each positive seeds exactly c synthetic samples near itself and each negative partners
  exactly one positive. The real positives are not in train or val themselves (the paper's
  training set is N' plus the synthetic samples). Test holds the real test positives and their
  block of c real negatives per positive (the paper does not state its test set; we keep the
  cross factor's ratio). ``info["positive_row"]`` / ``info["negative_row"]`` name the seed rows
  of every sample (-1 where none), so leakage can be checked. The formula is garbled in the
  paper's extracted text; we read it as the point 95% of the way from the negative partner to
  the positive, the reading under which a synthetic sample labelled fraud lies near a fraud.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from heatlab.data.registry import MOD3_REMAINDER, SPLITS, ArraySplit, mixed_order
from heatlab.errors import HeatlabError

LABEL = "Class"
DRYBEAN_FEATURES = (
    "Area", "Perimeter", "MajorAxisLength", "MinorAxisLength", "AspectRation", "Eccentricity",
    "ConvexArea", "EquivDiameter", "Extent", "Solidity", "roundness", "Compactness",
    "ShapeFactor1", "ShapeFactor2", "ShapeFactor3", "ShapeFactor4",
)  # fmt: skip
# The original file spells "AspectRation"; some copies of it correct the spelling.
_ALIASES = {"aspectratio": "aspectration"}
CREDIT_FEATURES = tuple(f"V{i}" for i in range(1, 29))
CREDIT_CLASSES = ("normal", "fraud")
DEFAULT_SHARD_SIZE = 1000


# ---------------------------------------------------------------------------------------- reading
def _key(name: object) -> str:
    key = str(name).strip().lower()
    return _ALIASES.get(key, key)


def _match_columns(header: Sequence[object], wanted: Sequence[str], path: Path) -> list[object]:
    """Actual header entries for ``wanted`` (case-insensitive); HeatlabError naming the missing ones."""
    found = {_key(h): h for h in header}
    missing = [w for w in wanted if _key(w) not in found]
    if missing:
        raise HeatlabError(f"'{path}' lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; use the original table.")
    return [found[_key(w)] for w in wanted]


def read_table(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    """The ``columns`` of a .csv or .xlsx file (matched case-insensitively), renamed to ``columns``."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise HeatlabError(f"Cannot read '{path}': tables must be .csv or .xlsx files; convert it to one of those.")
    if not path.is_file():
        raise HeatlabError(f"Table '{path}' does not exist; check the path.")
    try:
        if suffix == ".csv":
            actual = _match_columns(pd.read_csv(path, nrows=0).columns, columns, path)
            df = pd.read_csv(path, usecols=actual)
        else:
            df = pd.read_excel(path, engine="openpyxl")
            actual = _match_columns(df.columns, columns, path)
    except ImportError:
        raise HeatlabError(f"Reading '{path}' needs openpyxl; install it (pip install openpyxl) or save the table as .csv.") from None
    except HeatlabError:
        raise
    except Exception as exc:  # pandas/openpyxl raise many types for a broken file
        raise HeatlabError(f"Cannot read table '{path}' ({type(exc).__name__}); check that it is a valid {suffix[1:]} file.") from None
    df = df[actual]
    df.columns = list(columns)
    if len(df) == 0:
        raise HeatlabError(f"Table '{path}' has no data rows; use the full table.")
    return df


def numeric_columns(df: pd.DataFrame, columns: Sequence[str], path: str | os.PathLike) -> np.ndarray:
    """float64 array N×len(columns); HeatlabError naming a column with a missing or non-numeric value."""
    out = np.empty((len(df), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise HeatlabError(
                f"Column '{name}' of '{path}' has a missing or non-numeric value in data row {bad[0] + 1}; fix or drop that row."
            )
        out[:, j] = values
    return out


# ------------------------------------------------------------------------------------ split rules
def mod3_parts(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices of each split: within each class, the i-th row goes to the split with remainder i mod 3."""
    labels = np.asarray(labels)
    parts = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        for s, r in MOD3_REMAINDER.items():
            parts[s].append(rows[r::3])
    return {s: np.sort(np.concatenate(p)) for s, p in parts.items()}


def train_statistics(X: np.ndarray, train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std (ddof 0) of ``X[train_rows]`` per feature; a zero std becomes 1."""
    mean = X[train_rows].mean(axis=0)
    std = X[train_rows].std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def _split_of(X, y, rows, class_names, *, name, split, seed, shard_size, info=None, **kw) -> ArraySplit:
    order = mixed_order(len(y), seed, name, split)
    info = {"row": rows, **(info or {})}
    return ArraySplit(X[order], y[order], class_names, shard_size=shard_size, info={k: v[order] for k, v in info.items()}, **kw)


def table_splits(
    X: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str],
    *,
    name: str,
    feature_names: Sequence[str],
    standardize: bool,
    seed: int,
    shard_size: int,
) -> dict[str, ArraySplit]:
    """Per-class mod-3 splits of a table with training-only standardisation (module docstring)."""
    parts = mod3_parts(y)
    if any(len(p) == 0 for p in parts.values()):
        raise HeatlabError(f"The {name} table is too small: every split needs at least one row; use the full table.")
    mean, std = train_statistics(X, parts["train"])
    Z = (X - mean) / std if standardize else X
    norm = {"mean": mean.tolist(), "std": std.tolist(), "applied": bool(standardize)}
    return {
        s: _split_of(Z[rows].astype(np.float32), y[rows], rows, class_names, name=name, split=s, seed=seed,
                     shard_size=shard_size, normalization=norm, feature_names=feature_names)
        for s, rows in parts.items()
    }  # fmt: skip


def _encode_labels(values: pd.Series, path: Path) -> tuple[np.ndarray, list[str]]:
    text = values.astype(str).str.strip()
    if values.isna().any() or (text == "").any():
        row = int(np.flatnonzero(values.isna().to_numpy() | (text == "").to_numpy())[0])
        raise HeatlabError(f"Column '{LABEL}' of '{path}' is empty in data row {row + 1}; fix or drop that row.")
    class_names = sorted(text.unique())
    if len(class_names) < 2:
        raise HeatlabError(f"Column '{LABEL}' of '{path}' holds only one class; a classifier needs at least two.")
    lookup = {c: i for i, c in enumerate(class_names)}
    return text.map(lookup).to_numpy(dtype=np.int64), class_names


# ------------------------------------------------------------------------------------------ loaders
def drybean(
    path: str | os.PathLike, *, standardize: bool = True, seed: int = 0, shard_size: int = DEFAULT_SHARD_SIZE
) -> dict[str, ArraySplit]:
    """The dry bean table (.xlsx or .csv): 16 features, classes from ``Class``, mod-3 splits."""
    path = Path(path).expanduser()
    df = read_table(path, (*DRYBEAN_FEATURES, LABEL))
    X = numeric_columns(df, DRYBEAN_FEATURES, path)
    y, class_names = _encode_labels(df[LABEL], path)
    return table_splits(X, y, class_names, name="drybean", feature_names=DRYBEAN_FEATURES,
                        standardize=standardize, seed=seed, shard_size=shard_size)  # fmt: skip


def _sklearn_table(loader: str, name: str, *, standardize: bool, seed: int, shard_size: int) -> dict[str, ArraySplit]:
    try:
        from sklearn import datasets
    except ImportError:
        raise HeatlabError(f"The '{name}' table ships with scikit-learn; install it (pip install scikit-learn).") from None
    bunch = getattr(datasets, loader)()
    return table_splits(np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64),
                        [str(c) for c in bunch.target_names], name=name, feature_names=[str(f) for f in bunch.feature_names],
                        standardize=standardize, seed=seed, shard_size=shard_size)  # fmt: skip


def wine(*, standardize: bool = True, seed: int = 0, shard_size: int = DEFAULT_SHARD_SIZE) -> dict[str, ArraySplit]:
    """scikit-learn's wine table: 178 samples, 13 features, 3 classes; mod-3 splits."""
    return _sklearn_table("load_wine", "wine", standardize=standardize, seed=seed, shard_size=shard_size)


def breast_cancer(*, standardize: bool = True, seed: int = 0, shard_size: int = DEFAULT_SHARD_SIZE) -> dict[str, ArraySplit]:
    """scikit-learn's breast cancer table: 569 samples, 30 features, 2 classes; mod-3 splits."""
    return _sklearn_table("load_breast_cancer", "breast_cancer", standardize=standardize, seed=seed, shard_size=shard_size)


def _check_augment_args(cross_factor: int, lam: float) -> None:
    if isinstance(cross_factor, bool) or not isinstance(cross_factor, int) or cross_factor < 1:
        raise HeatlabError(f"The cross factor must be a whole number >= 1, got {cross_factor!r}; pass e.g. cross_factor=5.")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 < lam <= 1:
        raise HeatlabError(f"lam must be in (0, 1], got {lam!r}; pass e.g. lam=0.95.")


def cross_projective_augment(
    positives: np.ndarray, negatives: np.ndarray, *, cross_factor: int = 5, lam: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic positives from ``positives`` P×F and ``negatives`` (c·P)×F (paper 000, App. A.4).

    Negative k is paired with positive ``k // c`` and gives ``lam·p + (1−lam)·n``. Returns the
    samples (c·P)×F and, for each, the index of its seed positive and of its seed negative.
    """
    _check_augment_args(cross_factor, lam)
    positives, negatives = np.asarray(positives), np.asarray(negatives)
    if positives.ndim != 2 or negatives.shape != (cross_factor * len(positives), positives.shape[1]):
        raise HeatlabError(
            f"Cross projective augmentation needs {cross_factor} negatives per positive with the same features, got "
            f"{tuple(positives.shape)} positives and {tuple(negatives.shape)} negatives; pass matching arrays."
        )
    neg_index = np.arange(len(negatives))
    pos_index = neg_index // cross_factor
    return lam * positives[pos_index] + (1 - lam) * negatives, pos_index, neg_index


def creditcard(
    path: str | os.PathLike,
    *,
    cross_factor: int = 5,
    lam: float = 0.95,
    seed: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[str, ArraySplit]:
    """The credit-card fraud CSV with the leakage-free cross projective augmentation (module docstring)."""
    _check_augment_args(cross_factor, lam)
    path = Path(path).expanduser()
    df = read_table(path, (*CREDIT_FEATURES, LABEL))
    X = np.clip(numeric_columns(df, CREDIT_FEATURES, path), -3.0, 3.0) / 3.0 + 0.5
    label = numeric_columns(df, (LABEL,), path)[:, 0]
    if not np.isin(label, (0, 1)).all():
        raise HeatlabError(f"Column '{LABEL}' of '{path}' must hold only 0 (normal) and 1 (fraud); fix the labels.")
    positives = np.flatnonzero(label == 1)
    pos_parts = {s: positives[r::3] for s, r in MOD3_REMAINDER.items()}
    if any(len(p) == 0 for p in pos_parts.values()):
        raise HeatlabError(f"'{path}' has {len(positives)} fraud rows; the split needs at least 3 (one per split).")
    negatives = np.flatnonzero(label == 0)
    need = cross_factor * len(positives)
    if len(negatives) < need:
        raise HeatlabError(
            f"'{path}' has {len(negatives)} normal rows but cross factor {cross_factor} needs {need}; lower the cross factor."
        )
    negatives = negatives[mixed_order(len(negatives), seed, "creditcard", "negatives")]
    splits, start = {}, 0
    for s in SPLITS:
        pos = pos_parts[s]
        neg = negatives[start : start + cross_factor * len(pos)]
        start += len(neg)
        if s == "test":
            xs, ys = [X[pos], X[neg]], [np.ones(len(pos)), np.zeros(len(neg))]
            pos_rows, neg_rows = [pos, np.full(len(neg), -1)], [np.full(len(pos), -1), neg]
        else:
            synth, pi, ni = cross_projective_augment(X[pos], X[neg], cross_factor=cross_factor, lam=lam)
            xs, ys = [X[neg], synth], [np.zeros(len(neg)), np.ones(len(synth))]
            pos_rows, neg_rows = [np.full(len(neg), -1), pos[pi]], [neg, neg[ni]]
        pos_rows, neg_rows = np.concatenate(pos_rows), np.concatenate(neg_rows)
        rows = np.where(neg_rows < 0, pos_rows, np.where(pos_rows < 0, neg_rows, -1))  # -1: synthetic
        splits[s] = _split_of(
            np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64), rows, CREDIT_CLASSES,
            name="creditcard", split=s, seed=seed, shard_size=shard_size, feature_names=CREDIT_FEATURES,
            info={"positive_row": pos_rows, "negative_row": neg_rows},
        )  # fmt: skip
    return splits
