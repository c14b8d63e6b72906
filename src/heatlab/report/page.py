"""Page primitives of the report: the style sheet, notes, the :class:`Section` declaration, the
:class:`ReportContext` a section reads from, and :func:`render_page`.

This module imports nothing else of :mod:`heatlab.report`; every other report module may import
it (section modules, the GAX viewer page), so no circle can form through it.

Every value that comes from a run (names, paths, numbers, messages) reaches the page through the
escaping template layer :mod:`heatlab.report.templates`; images are referenced by relative paths;
the page loads nothing from the network. Sections render their fragments with
:func:`~heatlab.report.templates.render` (tables and figures through the macros of
``templates/macros.html``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from markupsafe import Markup

from heatlab.progress import Progress
from heatlab.report.templates import render, template_text

#: The report's style sheet (templates/report.css), for pages that embed it.
CSS = template_text("report.css")


def note(message: object) -> Markup:
    """An escaped notice shown in place of a part that could not be drawn."""
    return render('{% from "macros.html" import note %}{{ note(message) }}', message=message)


def random_weights_note(random_weights: bool, name: str) -> Markup:
    """The stage's random-weights warning (:func:`heatlab.run.rundir.random_weights_warning`) about model
    ``name`` as a warning note when ``random_weights`` (the stage's summary says so), else nothing."""
    from heatlab.run.rundir import random_weights_warning

    if not random_weights:
        return Markup("")
    return render('{% from "macros.html" import note %}{{ note(message, "note warn") }}',
                  message=f"Warning: {random_weights_warning(name)}.")


def class_name_of(class_names: Sequence[str], label: int) -> str:
    """The name of class ``label``, or the number itself when the names do not cover it (unescaped)."""
    return str(class_names[label]) if 0 <= label < len(class_names) else str(label)


@dataclass
class ReportContext:
    """What a section builder may use: the run's stored tables and records, and the output folders.

    Tables are the DataFrames of ``<run>/tables`` (empty when the stage did not write them);
    ``evaluation`` is evaluate.json ({} when evaluate has not run); ``heatmaps`` names the methods
    whose stored heatmap file exists for (``split``, ``gallery_branch``); ``available`` holds the
    names of every input the run has (see :meth:`has`); ``study_dir`` is the LRP study folder the
    lrp-study section shows. ``shown`` collects the figures the sections put on the page, in order
    (every figure reaches the page through :meth:`src`), so :func:`heatlab.report.html.stage_figures`
    can name a stage's figures without a second list of them. ``pages`` maps a section's id to the page of
    its own it wrote next to the index (title, address; :meth:`page`), which the table of contents links.
    """

    run_dir: Path
    out_dir: Path
    fig_dir: Path
    config: dict
    evaluation: dict
    five_band: pd.DataFrame
    roc: pd.DataFrame
    localisation: pd.DataFrame
    branches: list[str]
    models: dict[str, dict]
    class_names: list[str]
    methods: list[str]
    split: str
    gallery_branch: str
    progress: Progress | None = None
    heatmaps: list[str] = field(default_factory=list)
    available: frozenset[str] = frozenset()
    study_dir: Path | None = None
    shown: list[Path] = field(default_factory=list)
    pages: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def input_kind(self) -> str | None:
        """"image" or "table" as evaluate recorded it (None when evaluate has not run)."""
        return self.evaluation.get("input_kind")

    def has(self, need: str) -> bool:
        """Whether the run holds input ``need``: a table name ("five_band", "roc", "localisation",
        "co", "no_truth", "metric_agreement", ...), "heatmaps", "image_heatmaps", "table_heatmaps", "evaluate", "ax" or "gax"."""
        if need in self.available:
            return True
        frame = getattr(self, need, None)
        return isinstance(frame, pd.DataFrame) and not frame.empty

    def figure_path(self, name: str) -> Path:
        """Where a section writes figure ``name`` (a fixed file name chosen by the code)."""
        return self.fig_dir / name

    def src(self, path: Path) -> str:
        """The address of ``path`` (inside the report folder) relative to the page; a figure is noted in :attr:`shown`."""
        if path.parent == self.fig_dir and path not in self.shown:
            self.shown.append(path)
        return path.relative_to(self.out_dir).as_posix()


    def page(self, section_id: str, name: str, title: str) -> Path:
        """Where section ``section_id`` writes its own page ``name`` (next to the index); the table of contents
        links it as ``title``."""
        path = self.out_dir / name
        self.pages[section_id] = (title, self.src(path))
        return path


@dataclass(frozen=True)
class Section:
    """One part of the page: an anchor id, a title, and a builder returning an HTML fragment (built
    with :func:`~heatlab.report.templates.render`, so that every value from the run is escaped).

    ``needs`` names the inputs the section draws from (:meth:`ReportContext.has`); the section is
    left out of the page when one is missing, and so is a section whose builder returns "".
    """

    id: str
    title: str
    build: Callable[[ReportContext], str]
    needs: tuple[str, ...] = ()

    def applies(self, ctx: ReportContext) -> bool:
        return all(ctx.has(need) for need in self.needs)


def build_sections(ctx: ReportContext, sections: Sequence[Section],
                   done: Callable[[int, int], None] | None = None) -> list[tuple[Section, str]]:
    """(section, fragment) of every section of ``sections`` that applies and draws something, in order;
    ``done(i, n)`` after each of the n sections."""
    fragments = []
    for i, section in enumerate(sections):
        if section.applies(ctx):
            fragment = section.build(ctx)
            if fragment:
                fragments.append((section, fragment))
        if done is not None:
            done(i + 1, len(sections))
    return fragments


def render_page(ctx: ReportContext, fragments: Sequence[tuple[Section, str]], *, title: str = "heatlab report",
                back: str | None = None) -> str:
    """The whole HTML document from (section, fragment) pairs; a fragment is the HTML its builder made.
    ``title``: the page's heading; ``back``: the address of the page it belongs to (a page of its own)."""
    return str(render("page.html", run_name=ctx.run_dir.name, run_path=ctx.run_dir.resolve(), title=title, back=back,
                      pages=ctx.pages, fragments=[(s, Markup(fragment)) for s, fragment in fragments]))


ATTRIBUTION = """\
{%- if not record -%}
attribution settings: not recorded (this stage ran before presets existed)
{%- else -%}
attribution preset <b>{{ record.get("preset", "?") }}</b> ({{ record.get("description", "") }})
{%- set options = record.get("options", {}) -%}
{%- if options %}: {% for m, o in options.items() %}{{ m }} {{ o.items() | map("join", "=") | join(", ") }}
{%- if not loop.last %}; {% endif %}{% endfor %}{% endif %}
{%- if record.get("cam_layer") %}; LayerGradCam and GuidedGradCam at layer <b>{{ record["cam_layer"] }}</b>{% endif %}
{%- endif %}"""


def attribution_text(record: dict | None) -> Markup:
    """The attribution preset a stage recorded (``config.json["attribution"][stage]``) as HTML text, with the
    CAM methods' layer when the stage ran one."""
    return render(ATTRIBUTION, record=record or {})
