"""Reading a run for the report: :func:`load_context` gathers what the stages stored.

Everything comes through :class:`heatlab.run.rundir.RunDir`: config.json, the branches' model.json,
evaluate.json, the tables evaluate and AX wrote, which heatmap files exist and whether GAX ran.
Nothing is computed from a model or from data here; a missing input only means its sections are
left out (:meth:`heatlab.report.page.ReportContext.has`). Everything the sections will read is
checked here first (the JSON records against their schemas, the tables and tensor files for a
readable header), so a damaged run is one sentence and the report writes nothing into it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from safetensors import safe_open

from heatlab.errors import HeatlabError
from heatlab.files import ensure_dir
from heatlab.progress import Progress
from heatlab.report.heatmaps import has_heatmaps
from heatlab.report.page import ReportContext
from heatlab.run import gax as gax_stage
from heatlab.run.lrp_study import read_study_summary
from heatlab.run.rundir import GAX_FILES, GAX_SUMMARY, RunDir, StudyDir, branch_name
from heatlab.tables import schema

#: The score tables of ``heatlab evaluate`` (each only when the data's truth allows it).
TABLES = ("five_band", "roc", "localisation")
ID_COLUMNS = ("branch", "method", "shard", "index", "label", "prediction", "correct")
#: The tables of ``heatlab ax``.
AX_TABLES = ("co", "co_gap")


def branch_label(value: object) -> str:
    """A branch as the tables and folders name it: 0, "0" or "branch-00" -> "branch-00"; "base" stays."""
    text = str(value)
    return branch_name(int(text)) if text.isdigit() else text


def _read_table(path, name: str, run: RunDir) -> pd.DataFrame:
    df = schema(name).read(path)
    if df.empty:
        raise HeatlabError(f"Table '{path}' has no rows; run `heatlab evaluate {run.path}` again.")
    df["branch"] = [branch_label(b) for b in df["branch"]]  # older tables hold branch indices
    df["method"] = df["method"].astype(str)
    return df


def _check_readable(path: Path, fix: str) -> None:
    """HeatlabError unless ``path`` (when present) is a table fitting its schema (columns and kinds, read
    from the footer) or has a readable safetensors header."""
    if not path.is_file():
        return
    if path.suffix == ".parquet":  # a table's schema is named by its file (GAX's results.parquet: gax_results)
        schema("gax_results" if path.stem == "results" else path.stem).check_file(path, fix=fix)
        return
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception:  # safetensors raises several types for a broken file
        raise HeatlabError(f"'{path}' is unreadable; {fix}.") from None


def _check_filter_means(summary: dict, run: RunDir) -> None:
    """lrp-filters.json's means: keys "branch/filter", every row with the same score columns."""
    means = summary.get("means") or {}
    columns = {tuple(sorted(row)) for row in means.values()}
    if any("/" not in key for key in means) or len(columns) > 1:
        raise HeatlabError(f"'{run.summary_path('lrp-filters')}' has means that are not one row of the same scores per "
                           f"branch/filter; delete it and run `heatlab lrp-filters {run.path}` again.")


def load_context(run_dir: str | os.PathLike, *, gallery_branch: str | None = None,
                 progress: Progress | None = None, require_results: bool = True) -> ReportContext:
    """Read and check what the run's stages stored (raises HeatlabError with the fix).

    A trained run with at least one of evaluate, AX, GAX, the LRP or the Mixer results (each of them
    optional); ``require_results=False`` accepts a run with its training alone (even a base model without
    branches), for the training section.
    """
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise HeatlabError(f"Run folder '{run.path}' does not exist; pass the folder `heatlab train` wrote.")
    config = run.config()
    branches = run.branches()
    if require_results and not branches:
        raise HeatlabError(f"Run '{run.path}' has no trained branch model; run `heatlab train --out {run.path}` first.")
    evaluation = run.stage_summary("evaluate") or {}
    if evaluation and not evaluation.get("complete", False):
        raise HeatlabError(f"The evaluation of '{run.path}' is incomplete; run `heatlab evaluate {run.path}` again to finish it.")
    # Only the tables the last evaluation wrote count (data without level truth writes no five_band).
    listed = evaluation.get("tables", TABLES)
    tables = {n: _read_table(run.table(n), n, run) if run.table(n).is_file() and n in listed else pd.DataFrame()
              for n in TABLES}
    split = str(evaluation.get("split", "test"))

    listed_methods = [str(m) for m in evaluation.get("methods", [])]
    fb = tables["five_band"] if not tables["five_band"].empty else tables["localisation"]
    seen = list(dict.fromkeys(fb["method"])) if not fb.empty else listed_methods
    methods = [m for m in listed_methods if m in seen] + [m for m in seen if m not in listed_methods]
    evaluated = [branch_label(b) for b in evaluation.get("branches", [])] or (
        list(dict.fromkeys(fb["branch"])) if not fb.empty else [])
    if evaluated:
        ordered = [b for b in branches if b in evaluated] + [b for b in evaluated if b not in branches]
    else:
        ordered = branches
    if gallery_branch is None:
        gallery_branch = ordered[0] if ordered else ""
    else:
        gallery_branch = branch_label(gallery_branch)
        if gallery_branch not in ordered:
            what = "evaluated" if evaluated else "trained"
            raise HeatlabError(f"Branch '{gallery_branch}' was not {what}; choose one of {', '.join(ordered)}.")

    available = set()
    if evaluation:
        available.add("evaluate")
    heatmaps = [m for m in methods if has_heatmaps(run.path, split, gallery_branch, m)] if evaluation else []
    if heatmaps:
        available |= {"heatmaps", "table_heatmaps" if evaluation.get("input_kind") == "table" else "image_heatmaps"}
    if all(run.table(n).is_file() for n in AX_TABLES):
        available |= {"ax", *AX_TABLES}
    if run.gax(GAX_SUMMARY).is_file():
        gax_stage.read_gax_summary(run.path)  # checked now: the GAX section would only note a damaged one
        available.add("gax")
    if (filters := run.stage_summary("lrp-filters") or {}).get("complete"):
        _check_filter_means(filters, run)
        available.add("lrp-filters")
    if (run.stage_summary("mixer") or {}).get("complete"):
        available.add("mixer")
    study = run.study
    if study.summary.is_file() and read_study_summary(study.summary).get("complete"):
        available.add("lrp-study")
    if run.no_truth_table.is_file():
        available.add("no_truth")
    if run.agreement_table.is_file():
        available.add("metric_agreement")
    if require_results and not available & {"evaluate", "ax", "gax", "lrp-filters", "lrp-study", "mixer"}:
        raise HeatlabError(f"Run '{run.path}' has no results to report yet (its training curves are in "
                           f"{run.figure('training.png')}); run `heatlab evaluate {run.path}` (or "
                           f"`heatlab ax {run.path}`) first.")
    run.stage_summary("ax")  # read by the AX section
    files = {
        "train the run again into a new folder": [run.table("training"), run.table("validation")],
        f"run `heatlab evaluate {run.path}` again": [run.heatmaps(split, gallery_branch, m) for m in heatmaps],
        f"run `heatlab evaluate {run.path} --metrics ...` again": [run.no_truth_table, run.agreement_table],
        f"run `heatlab ax {run.path}` again": [run.table(n) for n in AX_TABLES],
        f"run `heatlab gax {run.path}` again": [run.gax(f) for f in GAX_FILES],
        f"run `heatlab mixer {run.path}` again": [run.table("mixer"), run.mixer_gallery],
        "run `heatlab lrp-study` into that folder again": [study.table, study.heatmaps],
    }
    for fix, paths in files.items():
        for path in paths:
            _check_readable(path, fix)

    out_dir = ensure_dir(run.report_dir)
    return ReportContext(
        run_dir=run.path, out_dir=out_dir, fig_dir=ensure_dir(run.figures_dir), config=config,
        evaluation=evaluation, five_band=tables["five_band"], roc=tables["roc"], localisation=tables["localisation"],
        branches=branches, models={b: run.model_info(b) for b in branches}, class_names=run.class_names(),
        methods=methods, split=split, gallery_branch=gallery_branch, progress=progress, heatmaps=heatmaps,
        available=frozenset(available), study_dir=study.path,
    )


def study_context(study: StudyDir) -> ReportContext:
    """A context holding one LRP study that no run's report shows: its figures go to ``<study>/report/figures``."""
    if not (study.summary.is_file() and read_study_summary(study.summary).get("complete")):
        raise HeatlabError(f"'{study.path}' holds no finished LRP study; run `heatlab lrp-study --out {study.path}` first.")
    for path in (study.table, study.heatmaps):
        _check_readable(path, "run `heatlab lrp-study` into that folder again")
    empty = pd.DataFrame()
    return ReportContext(
        run_dir=study.path, out_dir=ensure_dir(study.report_dir), fig_dir=ensure_dir(study.figures_dir), config={},
        evaluation={}, five_band=empty, roc=empty, localisation=empty, branches=[], models={}, class_names=[],
        methods=[], split="test", gallery_branch="", available=frozenset({"lrp-study"}), study_dir=study.path,
    )
