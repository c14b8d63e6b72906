"""Page primitives of the report: the style sheet, escaping, number formatting, notes, tables,
the :class:`Section` declaration, the :class:`ReportContext` a section reads from, and
:func:`render_page`.

This module imports nothing else of :mod:`heatlab.report`; every other report module may import
it (section modules, the GAX viewer page), so no circle can form through it.

Every value that comes from a run (names, paths, numbers, messages) reaches the page through the
escaping template layer :mod:`heatlab.report.templates`; images are referenced by relative paths;
the page loads nothing from the network. :func:`esc`, :func:`fmt`, :func:`table_html` and
:meth:`ReportContext.img` return escaped ``str`` for the sections still built with f-strings (they
are thin wrappers of the layer); new code renders templates with :func:`render`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from markupsafe import Markup, escape

from heatlab.progress import Progress
from heatlab.report.templates import number, render

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#fff;line-height:1.45}
header{background:#24292f;color:#fff;padding:14px 28px}header h1{margin:0;font-size:1.35em}
header p{margin:4px 0 0;color:#c9d1d9;font-size:.9em;word-break:break-all}
nav{padding:8px 28px;background:#f6f8fa;border-bottom:1px solid #d0d7de;font-size:.9em}
nav a{margin-right:14px;color:#0969da;text-decoration:none}
main{padding:0 28px 40px;max-width:1200px}
section{border-bottom:1px solid #eaeef2;padding:10px 0 18px}
h2{font-size:1.2em;margin:18px 0 8px}
figure{margin:10px 0}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{font-size:.88em;color:#57606a;max-width:900px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.88em;margin:8px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right}td{white-space:nowrap}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
table.wrap td,table.wrap th{white-space:normal;text-align:left}.nw{white-space:nowrap}
.note{color:#9a6700;background:#fff8c5;border:1px solid #eac54f;padding:6px 10px;border-radius:4px}
.note.warn{color:#82071e;background:#ffebe9;border-color:#ff8182;font-weight:600}
.rank{margin:6px 0}.muted{color:#57606a;font-size:.88em}
.pair{display:flex;flex-wrap:wrap;gap:12px}.pair figure{flex:1 1 420px;min-width:0}
"""


def esc(value: object) -> str:
    """HTML-escape any value's text (quotes included)."""
    return str(escape(str(value)))


def fmt(value: object) -> str:
    """A number with 3 decimals; NaN or None as an en dash; anything else as escaped text."""
    return esc(number(value))


def note(message: object) -> Markup:
    """An escaped notice shown in place of a part that could not be drawn."""
    return render('{% from "macros.html" import note %}{{ note(message) }}', message=message)


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]], *, wrap: bool = False) -> str:
    """A table from already-escaped cells (:func:`esc`, :func:`fmt`), inside a box that scrolls if the
    table is still too wide; for sections not yet rendered by templates (those use the ``table`` macro).

    Cells keep numbers on one line; ``wrap=True`` lets the cells' text wrap (for sentences and lists).
    """
    return str(render('{% from "macros.html" import table %}{{ table(header, rows, wrap) }}',
                      header=[Markup(h) for h in header], rows=[[Markup(c) for c in row] for row in rows], wrap=wrap))


def class_name_of(class_names: Sequence[str], label: int) -> str:
    """The name of class ``label``, or the number itself when the names do not cover it (unescaped)."""
    return str(class_names[label]) if 0 <= label < len(class_names) else str(label)


@dataclass
class ReportContext:
    """What a section builder may use: the run's stored tables and records, and the output folders.

    Tables are the DataFrames of ``<run>/tables`` (empty when the stage did not write them);
    ``evaluation`` is evaluate.json ({} when evaluate has not run); ``heatmaps`` names the methods
    whose stored heatmap file exists for (``split``, ``gallery_branch``); ``available`` holds the
    names of every input the run has (see :meth:`has`).
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

    @property
    def input_kind(self) -> str | None:
        """"image" or "table" as evaluate recorded it (None when evaluate has not run)."""
        return self.evaluation.get("input_kind")

    def has(self, need: str) -> bool:
        """Whether the run holds input ``need``: a table name ("five_band", "roc", "localisation",
        "co", ...), "heatmaps", "image_heatmaps", "table_heatmaps", "evaluate", "ax" or "gax"."""
        if need in self.available:
            return True
        frame = getattr(self, need, None)
        return isinstance(frame, pd.DataFrame) and not frame.empty

    def figure_path(self, name: str) -> Path:
        """Where a section writes figure ``name`` (a fixed file name chosen by the code)."""
        return self.fig_dir / name

    def src(self, path: Path) -> str:
        """The address of ``path`` (inside the report folder) relative to the page."""
        return path.relative_to(self.out_dir).as_posix()

    def img(self, path: Path, alt: str, caption: str) -> str:
        """A ``<figure>`` for ``path`` with an escaped alt and a caption that is already HTML, for the
        sections still built with f-strings (templates use the ``figure`` macro with :meth:`src`)."""
        return str(render('{% from "macros.html" import figure %}{% call figure(src, alt) %}{{ caption }}{% endcall %}',
                          src=self.src(path), alt=alt, caption=Markup(caption)))


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


def render_page(ctx: ReportContext, fragments: Sequence[tuple[Section, str]]) -> str:
    """The whole HTML document from (section, fragment) pairs; a fragment is the HTML its builder made."""
    return str(render("page.html", css=Markup(CSS), run_name=ctx.run_dir.name, run_path=ctx.run_dir.resolve(),
                      fragments=[(s, Markup(fragment)) for s, fragment in fragments]))


ATTRIBUTION = """\
{%- if not record -%}
attribution settings: not recorded (this stage ran before presets existed)
{%- else -%}
attribution preset <b>{{ record.get("preset", "?") }}</b> ({{ record.get("description", "") }})
{%- set options = record.get("options", {}) -%}
{%- if options %}: {% for m, o in options.items() %}{{ m }} {{ o.items() | map("join", "=") | join(", ") }}
{%- if not loop.last %}; {% endif %}{% endfor %}{% endif %}
{%- endif %}"""


def attribution_text(record: dict | None) -> Markup:
    """The attribution preset a stage recorded (``config.json["attribution"][stage]``) as HTML text."""
    return render(ATTRIBUTION, record=record or {})
