"""`heatlab report RUN`: one self-contained HTML page about a run, assembled from its sections.

The page is a list of :class:`~heatlab.report.page.Section` objects (one module per section in
:mod:`heatlab.report.sections`), each a title, the inputs it needs and a builder that turns a
:class:`~heatlab.report.page.ReportContext` (what the run's stages stored, read by
:func:`~heatlab.report.context.load_context`) into an HTML fragment. :func:`build_report` runs the
sections whose inputs the run has, in order, writes their figures under ``<run>/report/figures/``
and writes ``<run>/report/index.html`` last. To add a section, pass
``sections=[*DEFAULT_SECTIONS, Section("my-id", "My title", my_builder)]``.

The report only reads: it never attributes, generates data or loads a model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from heatlab.files import write_text
from heatlab.progress import Progress, report
from heatlab.errors import HeatlabError
from heatlab.report.context import load_context, study_context
from heatlab.report.page import CSS, ReportContext, Section, build_sections, note, render_page
from heatlab.report.sections import (
    ax, data, features, gallery, gax, headline, localisation, lrp_filters, lrp_study, mixer, no_truth, overview,
    recall_precision, roc, summary, training,
)
from heatlab.report.sections.gallery import gallery_section
from heatlab.report.sections.summary import rank_methods
from heatlab.run.rundir import RunDir, StudyDir

DEFAULT_SECTIONS: tuple[Section, ...] = (
    headline.SECTION,
    overview.SECTION,
    summary.SECTION,
    data.SECTION,
    training.SECTION,
    features.SECTION,
    recall_precision.SECTION,
    roc.SECTION,
    gallery.SECTION,
    localisation.SECTION,
    no_truth.SECTION,
    lrp_filters.SECTION,
    lrp_study.SECTION,
    mixer.SECTION,
    ax.SECTION,
    gax.SECTION,
)

#: The sections that show each stage's results: their figures are the ones ``heatlab <stage>`` draws
#: (:func:`stage_figures`), so the report and the commands share one list of what a stage shows.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("training",),
    "ax": ("ax",),
    "gax": ("gax",),
    "lrp-filters": ("lrp-filters",),
    "lrp-study": ("lrp-study",),
    "mixer": ("mixer",),
}

__all__ = ["CSS", "DEFAULT_SECTIONS", "STAGE_SECTIONS", "ReportContext", "Section", "build_report", "gallery_section",
           "load_context", "note", "rank_methods", "render_page", "stage_figures"]


def build_report(
    run_dir: str | os.PathLike,
    *,
    gallery_branch: str | None = None,
    progress: Progress | None = None,
    sections: Sequence[Section] = DEFAULT_SECTIONS,
) -> Path:
    """Write ``<run>/report/index.html`` (and its figures) for a trained run; returns the page path.

    Sections whose inputs the run lacks are left out (the overview says which command makes them).
    ``gallery_branch`` picks the branch whose stored heatmaps the gallery, preview and feature
    charts show (default: the first evaluated); ``progress(task, done, total)`` is called after
    every section.
    """
    with RunDir(run_dir).writing("report"):  # reads the tables no stage is halfway through writing
        ctx = load_context(run_dir, gallery_branch=gallery_branch, progress=progress)
        fragments = build_sections(ctx, sections, lambda done, total: report(progress, "report", done, total))
        page = RunDir(run_dir).report_page
        write_text(page, render_page(ctx, fragments))
    return page


def stage_figures(folder: str | os.PathLike, stage: str, *, sections: Sequence[Section] = DEFAULT_SECTIONS) -> list[Path]:
    """Draw the figures the report shows for ``stage`` (a key of :data:`STAGE_SECTIONS`); returns their
    paths in page order ([] when the stage has not run or its section shows no figure).

    The stage's sections are built exactly as :func:`build_report` builds them, so the files are the
    ones the report writes, at the same paths (``<run>/report/figures/``). For ``"lrp-study"``,
    ``folder`` may be the study folder itself: a run's ``lrp-study`` draws into that run's report, a
    study outside a run into ``<study>/report/figures/``.
    """
    if stage not in STAGE_SECTIONS:
        raise HeatlabError(f"stage={stage!r} has no report section; choose one of {', '.join(STAGE_SECTIONS)}.")
    alone = None  # a study folder that no run's report shows
    if stage == "lrp-study" and not RunDir(folder).has_config():
        study = StudyDir(folder)
        folder, alone = (study.run.path, None) if study.run is not None else (folder, study)
    with (alone.host if alone else RunDir(folder)).writing("report"):  # no stage is halfway through writing
        ctx = study_context(alone) if alone else load_context(folder, require_results=False)
        for section in sections:
            if section.id in STAGE_SECTIONS[stage] and section.applies(ctx):
                section.build(ctx)
    return [path for path in ctx.shown if path.is_file()]
