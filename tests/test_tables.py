"""What the stages store: every table the pipeline writes fits its schema (heatlab.tables) as written, a
table with a missing column or a column of another kind is one sentence naming the file, the column and the
fix, and each stage's result (heatlab.run.results) is its stored JSON summary plus what the caller needs."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pandas as pd
import pytest

from heatlab.errors import HeatlabError
from heatlab.tables import TABLES, schema


@pytest.fixture(scope="module")
def piped(tiny_run, tmp_path_factory):
    """The tiny run put through every stage that writes a table (small sizes), and the stages' results."""
    from heatlab.improve.mixer import MixerConfig
    from heatlab.run.ax import ax_run
    from heatlab.run.evaluate import evaluate_run
    from heatlab.run.gax import gax_run
    from heatlab.run.lrp_filters import lrp_filters_run
    from heatlab.run.lrp_study import lrp_study
    from heatlab.run.mixer import mixer_run

    run = tmp_path_factory.mktemp("piped") / "run"
    shutil.copytree(tiny_run, run)
    results = {
        "evaluate.json": evaluate_run(run, methods="Saliency", metric_set="sparseness,complexity,deletion"),
        "ax.json": ax_run(run, methods="Saliency", batch_size=10),
        "gax/gax.json": gax_run(run, first_n_correct=2, max_steps=2, batch_size=2),
        "lrp-filters.json": lrp_filters_run(run, filters="c0.2"),
        "lrp-study/lrp-study.json": lrp_study("digits", run / "lrp-study", epochs=1, batch_size=128, every=5,
                                              eval_samples=8, heatmap_samples=1, filters="c0.2", seed=1),
        "mixer.json": mixer_run(run, seeds=1, n_steps=2, train_samples=12,
                                config=MixerConfig(epochs=1, patience=1, batch_size=8)),
    }
    results["no_truth.json"] = results["evaluate.json"].no_truth
    return run, results


def _schema_of(path) -> str:
    """The schema a stored table's file name stands for (per-model step tables are the training table's parts)."""
    return {"results": "gax_results", "steps": "training"}.get(path.stem, path.stem)


def test_every_table_the_pipeline_writes_fits_its_schema_as_written(piped):
    piped, _ = piped
    found = sorted(p for p in piped.rglob("*.parquet") if "parts" not in p.parts)
    names = {_schema_of(p) for p in found}
    # every schema is exercised, no table lacks one; GAX's selection is resume state, gone once GAX completes
    # (test_malformed_inputs.py reads one mid-run)
    assert names == set(TABLES) - {"gax_selection"}, names ^ (set(TABLES) - {"gax_selection"})
    for path in found:
        table = schema(_schema_of(path))
        frame = table.read(path)
        assert set(table.required) <= set(frame.columns), path
        table.check(frame, path)
        written = table.conform(frame)  # the writer already stored it in the schema's order and kinds
        assert list(written.columns) == list(frame.columns) and (written.dtypes == frame.dtypes).all(), path


def test_each_result_is_its_stored_summary_plus_what_the_caller_needs(piped):
    run, results = piped
    for name, result in results.items():
        stored = json.loads((run / name).read_text())
        assert dataclasses.is_dataclass(result) and result.to_record() == stored, name
        assert type(result).from_record(stored, **{k: getattr(result, k) for k in result.extra}) == result, name
        with pytest.raises(dataclasses.FrozenInstanceError):
            result.complete = False
    assert results["evaluate.json"].paths["five_band"] == str(run / "tables" / "five_band.parquet")
    assert results["mixer.json"].table == str(run / "tables" / "mixer.parquet")
    from heatlab.run.agreement import write_metric_agreement

    agreement = write_metric_agreement(run)  # what evaluate wrote, written again (seeded: the same table)
    assert agreement.table == str(run / "tables" / "metric_agreement.parquet")
    stored = TABLES["metric_agreement"].read(agreement.table)
    assert agreement.metrics == list(dict.fromkeys(stored["metric"])) and set(agreement.metrics) == {"sparseness", "complexity", "deletion"}
    assert set(agreement.references) == {"recall_best", "precision_best", "auc/feature"}


def test_a_summary_written_by_an_older_heatlab_opens_with_defaults():
    from heatlab.run.results import AxResult

    old = {"split": "test", "methods": ["Saliency"], "branches": [0], "samples": 3, "complete": True, "retired": 1}
    result = AxResult.from_record(old)
    assert (result.space, result.groupings, result.largest_gap, result.paths) == (None, {}, None, {})
    assert "retired" not in result.to_record() and result.to_record()["branches"] == [0]


def _five_band(tmp_path, **change) -> object:
    run = tmp_path / "run"
    frame = pd.DataFrame({"branch": ["branch-00"] * 2, "method": ["Saliency"] * 2, "variant": ["standard"] * 2,
                          "shard": [0, 0], "index": [0, 1], "label": [1, 2], "prediction": [1, 0],
                          "correct": [True, False], **{c: [0.5, 0.25] for c in TABLES["five_band"].names[8:]}})
    frame = frame.assign(**{k: v for k, v in change.items() if v is not None})
    frame = frame.drop(columns=[k for k, v in change.items() if v is None])
    (run / "tables").mkdir(parents=True)
    frame.to_parquet(run / "tables" / "five_band.parquet", index=False)
    return run / "tables" / "five_band.parquet"


def test_a_column_of_another_kind_is_one_sentence_naming_the_file_the_column_and_the_fix(tmp_path):
    path = _five_band(tmp_path, recall_best=["high", "low"])
    with pytest.raises(HeatlabError) as err:
        TABLES["five_band"].read(path)
    assert str(err.value) == (f"Table '{path}' holds text in column recall_best where numbers are expected; "
                              f"run `heatlab evaluate {tmp_path / 'run'}` again.")


def test_a_missing_column_and_an_unreadable_file_are_one_sentence_each(tmp_path):
    path = _five_band(tmp_path, label=None)
    with pytest.raises(HeatlabError, match=r"^Table '.*five_band.parquet' lacks column label; run `heatlab "
                                           r"evaluate .*` again\.$"):
        TABLES["five_band"].read(path)
    path.write_bytes(b"PAR1 not a table")
    with pytest.raises(HeatlabError, match=r"^Table '.*five_band.parquet' is unreadable \(not a Parquet table\); "):
        TABLES["five_band"].read(path)


def test_read_checks_only_the_columns_asked_for_and_older_optional_columns_may_be_missing(tmp_path):
    path = _five_band(tmp_path, recall_best=["high", "low"])
    assert list(TABLES["five_band"].read(path, columns=["method", "label"]).columns) == ["method", "label"]
    co = pd.DataFrame({c: pd.Series([1], dtype="int64") if k == "int" else pd.Series([1.0]) if k == "float" else
                       pd.Series([True]) if k == "bool" else pd.Series(["x"]) for c, k in TABLES["co"].columns.items()
                       if not c.endswith("?")})
    co["branch"] = [0]  # a table written before branches had names: an index
    co.to_parquet(tmp_path / "co.parquet", index=False)
    assert "space" not in TABLES["co"].read(tmp_path / "co.parquet").columns  # an AX table from before spaces


def test_conform_orders_the_named_columns_first_and_casts_them_to_their_kinds():
    table = TABLES["no_truth"]
    frame = pd.DataFrame({"extra": ["e"], "value": [1], "sample": [3.0], "metric": ["m"], "method": ["a"],
                          "branch": ["branch-00"]})
    out = table.conform(frame)
    assert list(out.columns) == [*table.names, "extra"]
    assert str(out["value"].dtype) == "int64" and str(out["sample"].dtype) == "int64"  # a whole number is a number
    table.check(out, "x.parquet")
    with pytest.raises(ValueError, match="lacks column"):
        table.conform(frame.drop(columns="metric"))
    curves = TABLES["no_truth_curves"]
    assert curves.names == ["branch", "method", "metric", "sample", "step", "fraction", "value"]
