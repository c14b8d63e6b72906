"""The Parquet tables of a run folder: one :class:`TableSchema` per table, used by its writer and its readers.

A schema names the table's columns in their stored order with a kind each, and its id columns (what
one row is about). Its writer stores a frame through :meth:`TableSchema.write` (the named columns
first, in order, cast to their kinds, then any others); every reader, the report's included, reads
through :meth:`TableSchema.read`, so a damaged, hand-edited or foreign file is one sentence naming
the file, the column and the fix (like :mod:`heatlab.records` does for the JSON records), never a
KeyError in a figure.

Kinds: ``str``, ``int`` (whole numbers), ``float`` (any real number; whole numbers pass),
``bool`` (nullable too) and unions such as ``str|int`` (older tables hold branch indices). A column
name ending in ``?`` may be missing (older writers). Columns a schema does not name are kept; where
``extra`` is set they must be of that kind (a registry metric's scores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api import types

from heatlab.errors import HeatlabError
from heatlab.files import write_parquet

def _text_or_missing(value: object) -> bool:
    return isinstance(value, str) or value is None or value != value  # NaN: a missing value


_FITS = {
    "str": lambda s: types.is_string_dtype(s.dtype) or (s.dtype == object and s.map(_text_or_missing).all()),
    "int": lambda s: types.is_integer_dtype(s.dtype),
    "float": lambda s: (types.is_float_dtype(s.dtype) or types.is_integer_dtype(s.dtype)) and not types.is_bool_dtype(s.dtype),
    "bool": lambda s: types.is_bool_dtype(s.dtype),
}
_DTYPES = {"str": str, "int": "int64", "float": "float64", "bool": "bool"}
_NAMES = {"str": "text", "int": "whole numbers", "float": "numbers", "bool": "true/false values"}


def _fits(column: pd.Series, kind: str) -> bool:
    return any(_FITS[k](column) for k in kind.split("|"))


def _describe(kind: str) -> str:
    return " or ".join(_NAMES[k] for k in kind.split("|"))


@dataclass(frozen=True)
class TableSchema:
    """One table's columns (name -> kind, stored order; ``name?`` may be missing), id columns and fix.

    ``fix`` ends the error sentence; ``{run}`` in it becomes the folder the table's folder sits in
    (the run for ``tables/`` and ``gax/``, the study for an LRP study's table).
    """

    name: str
    columns: Mapping[str, str]
    ids: tuple[str, ...]
    fix: str
    extra: str | None = None

    @property
    def names(self) -> list[str]:
        """Every named column, in stored order."""
        return [c.rstrip("?") for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c for c in self.columns if not c.endswith("?")]

    def kind(self, column: str) -> str | None:
        """The kind of ``column`` (``extra`` for one the schema does not name)."""
        return self.columns.get(column, self.columns.get(f"{column}?", self.extra))

    def conform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` as stored: the named columns first in order, each cast to its kind, then the others."""
        missing = [c for c in self.required if c not in frame.columns]
        if missing:
            raise ValueError(f"The {self.name} table lacks column(s) {', '.join(missing)}; its writer must add them.")
        order = [c for c in self.names if c in frame.columns] + [c for c in frame.columns if c not in self.names]
        out = frame[order]
        casts = {c: _DTYPES[kind.split("|")[0]] for c in out.columns
                 if (kind := self.kind(c)) is not None and not _fits(out[c], kind)}
        return out.astype(casts) if casts else out

    def write(self, path: str | os.PathLike, frame: pd.DataFrame) -> None:
        """Atomically store ``frame`` at ``path`` through the schema (:meth:`conform`)."""
        write_parquet(path, self.conform(frame))

    def fix_for(self, path: str | os.PathLike) -> str:
        return self.fix.format(run=Path(path).parent.parent)

    def check(self, frame: pd.DataFrame, path: str | os.PathLike, *, fix: str | None = None) -> pd.DataFrame:
        """``frame`` when it has the required columns, each of its kind, else one HeatlabError naming the column."""
        fix = fix or self.fix_for(path)
        for column in self.required:
            if column not in frame.columns:
                raise HeatlabError(f"Table '{path}' lacks column {column}; {fix}.")
        for column in frame.columns:
            kind = self.kind(column)
            if kind is not None and not _fits(frame[column], kind):
                found = next((_NAMES[k] for k in ("bool", "int", "float", "str") if _FITS[k](frame[column])),
                             str(frame[column].dtype))
                raise HeatlabError(f"Table '{path}' holds {found} in column {column} where {_describe(kind)} are "
                                   f"expected; {fix}.")
        return frame

    def check_file(self, path: str | os.PathLike, *, fix: str | None = None,
                   columns: Sequence[str] | None = None) -> list[str]:
        """The column names of the Parquet file at ``path`` when its footer is readable and the required
        columns (or ``columns``) are there, each of its kind, read without loading the rows; else one
        HeatlabError naming the file, the column and the fix."""
        fix = fix or self.fix_for(path)
        if not Path(path).is_file():
            raise HeatlabError(f"Table '{path}' does not exist; {fix}.")
        try:
            stored = pq.read_schema(path)
        except Exception:  # pyarrow raises several types for a broken file
            raise HeatlabError(f"Table '{path}' is unreadable (not a Parquet table); {fix}.") from None
        wanted = self.required if columns is None else [c for c in columns if f"{c}?" not in self.columns]
        for column in wanted:
            if column not in stored.names:
                raise HeatlabError(f"Table '{path}' lacks column {column}; {fix}.")
        for column in stored.names if columns is None else [c for c in columns if c in stored.names]:
            kind, arrow = self.kind(column), stored.field(column).type
            if kind is not None and not _arrow_fits(arrow, kind):
                found = next((_NAMES[k] for k in ("bool", "int", "float", "str") if _arrow_fits(arrow, k)), str(arrow))
                raise HeatlabError(f"Table '{path}' holds {found} in column {column} where {_describe(kind)} are "
                                   f"expected; {fix}.")
        return list(stored.names)

    def read(self, path: str | os.PathLike, *, fix: str | None = None,
             columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The table at ``path`` (only ``columns`` when given) after :meth:`check_file`: a missing or
        unreadable file, a missing column or one of another kind is one HeatlabError with the fix."""
        fix = fix or self.fix_for(path)
        names = self.check_file(path, fix=fix, columns=columns)
        try:
            return pd.read_parquet(path, columns=None if columns is None else [c for c in columns if c in names])
        except Exception:  # pyarrow raises several types for a broken file
            raise HeatlabError(f"Table '{path}' is unreadable (not a Parquet table); {fix}.") from None


def _arrow_fits(arrow: pa.DataType, kind: str) -> bool:
    if pa.types.is_dictionary(arrow):
        arrow = arrow.value_type
    if pa.types.is_null(arrow):  # a column of an empty table written without a type
        return True
    return any(_ARROW[k](arrow) for k in kind.split("|"))


_ARROW = {
    "str": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t),
    "int": pa.types.is_integer,
    "float": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    "bool": pa.types.is_boolean,
}


_ID = {"shard": "int", "index": "int", "label": "int", "prediction": "int", "correct": "bool"}
_BRANCH = "str|int"  # older tables hold branch indices
_FIVE_BAND = {f"{m}_{s}": "float" for m in ("accuracy", "precision", "recall", "fpr") for s in ("avg", "best")}
_CO = {c: k for a in ("sum", "mult") for c, k in ((f"co_raw_{a}", "float"), (f"co_softmax_{a}", "float"),
                                                  (f"pred_after_{a}", "int"), (f"correct_after_{a}", "bool"))}
_AGREEMENT = {f"{c}{s}": "float" for c in ("tau", "rho") for s in ("", "_low", "_high")}
_EVALUATE = "run `heatlab evaluate {run}` again"
_NO_TRUTH = "run `heatlab evaluate {run} --metrics ...` again"
_AX = "run `heatlab ax {run}` again"
_LRP = "run `heatlab lrp-filters {run}` again"
_MIXER = "run `heatlab mixer {run}` again"
_TRAIN = "train the run again into a new folder"

_SCHEMAS = [
    TableSchema("training", {"phase": "str", "iteration": "int", "epoch": "int", "loss": "float"},
                ("phase", "iteration"), _TRAIN),
    TableSchema("validation", {"branch": "int", "iteration": "int", "epoch": "int", "shard": "int", "accuracy": "float",
                               "decision": "str", "saved": "bool"}, ("branch", "iteration", "shard"), _TRAIN),
    TableSchema("five_band", {"branch": _BRANCH, "method": "str", "variant": "str", **_ID, **_FIVE_BAND},
                ("branch", "method", "variant", "shard", "index"), _EVALUATE, extra="float"),
    TableSchema("roc", {"branch": _BRANCH, "method": "str", "variant": "str", "threshold": "int",
                        **{t: "float" for t in ("t1", "t2", "t3", "t4")}, "n": "int",
                        **{m: "float" for m in ("accuracy", "precision", "recall", "fpr")}},
                ("branch", "method", "variant", "threshold"), _EVALUATE),
    TableSchema("localisation", {"branch": _BRANCH, "method": "str", **_ID},
                ("branch", "method", "shard", "index"), _EVALUATE, extra="float"),
    TableSchema("no_truth", {"branch": _BRANCH, "method": "str", "metric": "str", "sample": "int", "value": "float"},
                ("branch", "method", "metric", "sample"), _NO_TRUTH),
    TableSchema("no_truth_curves", {"branch": "str", "method": "str", "metric": "str", "sample": "int", "step": "int",
                                    "fraction": "float", "value": "float"},
                ("branch", "method", "metric", "sample", "step"), _NO_TRUTH),
    TableSchema("metric_agreement", {"metric": "str", "reference": "str", **_AGREEMENT, "random_last": "bool", "n_methods": "int", "branches": "int", "samples": "int",
                                     "interval": "str|float"},  # what the interval resamples; NaN without one
                ("metric", "reference"), _NO_TRUTH),
    TableSchema("co", {"branch": _BRANCH, "method": "str", "split": "str", "space?": "str", "shard": "int", "index": "int",
                       "label": "int", "prediction": "int", "correct_before": "bool", **_CO},
                ("branch", "method", "split", "space", "shard", "index"), _AX),
    TableSchema("co_gap", {"branch": _BRANCH, "method": "str", "variant": "str", "grouping?": "str", "output?": "str",
                           "ax?": "str", "split?": "str", "threshold_split": "str", "auroc": "float",
                           "median_correct": "float", "median_wrong": "float", "threshold": "float",
                           "flag_precision": "float", "flag_recall": "float", "n_correct": "int", "n_wrong": "int",
                           "threshold_source?": "str", "note": "str", "interval_low": "float", "interval_high": "float"},
                ("branch", "method", "variant", "grouping"), _AX),
    TableSchema("lrp_filters", {"branch": _BRANCH, "filter": "str", "variant": "str", **_ID, **_FIVE_BAND},
                ("branch", "filter", "variant", "shard", "index"), _LRP, extra="float"),
    TableSchema("lrp_filters_localisation", {"branch": _BRANCH, "filter": "str", **_ID},
                ("branch", "filter", "shard", "index"), _LRP, extra="float"),
    TableSchema("lrp_filters_effects", {"filter": "str", "metric": "str", "what": "str", "higher_is_better": "bool",
                                        **{c: "float" for c in ("mean_none", "mean_filter", "difference", "low", "high",
                                                                "level")},
                                        "interval": "str", "verdict": "str", "branches": "int", "cells": "int", "n": "int"},
                ("filter", "metric"), _LRP),
    TableSchema("mixer", {"setting": "str", "seed": "int", "branch": "str", "test_samples": "int", "train_samples": "int",
                          "accuracy_plain": "float", "accuracy_masked": "float", "holdout_accuracy?": "float",
                          "holdout_loss?": "float", "best_epoch?": "int", "epochs_run?": "int", "batch_size?": "int",
                          "lr?": "float", "mask_mean": "float", "label_informed?": "bool", "leak_accuracy?": "float",
                          "leak_wrong_share?": "float", "plain_wrong_share?": "float"}, ("setting", "seed"), _MIXER),
    TableSchema("mixer_predictions", {"setting": "str", "seed": "int", "sample": "int", "label": "int", "plain": "int",
                                      "masked": "int", "wrong?": "int", "leak?": "int"}, ("setting", "seed", "sample"), _MIXER),
    TableSchema("mixer_history", {"batch_size?": "int", "lr?": "float", "epoch": "int", "loss": "float",
                                  "holdout_loss?": "float", "holdout_accuracy?": "float", "setting": "str", "seed": "int"},
                ("setting", "seed", "epoch"), _MIXER),
    TableSchema("gax_results", {"branch": _BRANCH, "shard": "int", "index": "int", "label": "int",
                                "steps_to_target": "int", "reached": "bool", "initial_co": "float", "final_co": "float",
                                "final_step": "int"}, ("branch", "shard", "index"), "run `heatlab gax {run}` again"),
    # GAX's resume state: the samples it optimises (readers pass the fix naming the run's parts folder)
    TableSchema("gax_selection", {"shard": "int", "index": "int", "label": "int"}, ("shard", "index"),
                "delete the run's gax/parts folder and run `heatlab gax` on the run again"),
    TableSchema("lrp_study", {"iteration": "int", "epoch": "int", "loss": "float", "accuracy": "float", "layer": "str",
                              "recorded_at?": "str", "mp_mean": "float", "mp_std": "float", "n": "int"},
                ("iteration", "layer"), "run `heatlab lrp-study --out {run}` again"),
]

#: Every table of a run folder by name: ``<run>/tables/<name>.parquet`` (:meth:`heatlab.run.rundir.RunDir.table`),
#: except ``gax_results`` (``<run>/gax/results.parquet``), ``gax_selection`` (``<run>/gax/parts/selection.parquet``)
#: and ``lrp_study`` (``<study>/tables/lrp_study.parquet``, and its resume state ``<study>/lrp_study/rows.parquet``).
TABLES: dict[str, TableSchema] = {s.name: s for s in _SCHEMAS}


def schema(name: str) -> TableSchema:
    """The schema of table ``name`` (one of :data:`TABLES`)."""
    if name not in TABLES:
        raise ValueError(f"{name!r} is no heatlab table; expected one of {', '.join(TABLES)}.")
    return TABLES[name]
