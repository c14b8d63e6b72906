"""Section "Localisation metrics": mean of each metric per method. Needs ``tables/localisation.parquet``
(data with level truth or binary masks, or a registered metric that needs no truth).

Each column's direction and citation come from its metric entry as ``heatlab evaluate`` recorded it
(``evaluate.json``, ``metrics``), else from the built-in registry (runs evaluated before entries
were recorded); a column of neither says that its direction is unknown."""

from __future__ import annotations

import math

import pandas as pd

from heatlab.report.context import ID_COLUMNS
from heatlab.report.page import ReportContext, Section, note
from heatlab.report.templates import number, render
from heatlab.score.metrics import METRICS

DIRECTIONS = {True: "higher is better", False: "lower is better", None: "neither direction is better"}


def in_range(values: pd.Series, low: float = 0.0, high: float = 1.0) -> bool:
    """Whether every non-NaN value lies in [low, high] (the range every localisation metric is defined in)."""
    v = values.dropna()
    return bool(((v >= low) & (v <= high)).all())


def _mask_of(column: str) -> str:
    return column.rsplit("/", 1)[1] if "/" in column else ""

BOLD = "<b>{{ value|num }}</b>"
#: A metric's column head; a line may break after each underscore of its name.
HEAD = '{% for part in name.split("_") %}{{ part }}{% if not loop.last %}_<wbr>{% endif %}{% endfor %} {{ what }}'
MASK_TABLE = """\
{% from "macros.html" import table %}
{{ table(header, rows) }}
{% if off %}
<p class="note caveat">{{ off|join(", ") }}: some values lie outside [0, 1] (signed relevance can make the ratio exceed 1 or go negative), so no mean is marked best there; the medians are the robust summary.</p>
{% endif %}
"""
TEMPLATE = """\
<p>Mean and median over all branches and samples of each metric of the channel-adjusted (standard) heatmap; “samples” counts those with a value (a metric is undefined where its mask is empty, e.g. for the empty class). {{ masks }}. {% for direction, names in directions %}{% if directions|length == 1 %}{{ direction|capitalize }} for every column{% else %}{{ direction|capitalize }}: {{ names|join(", ") }}{% endif %}{% if not loop.last %}; {% endif %}{% endfor %}. The best mean of a column with a direction is bold.</p>
{% for mask, table in tables %}
{% if mask %}<h3>{{ mask }} mask</h3>{% endif %}
{{ table }}
{% endfor %}
<p class="muted">Definitions: {% for k, v in sources.items() %}{{ k }}: {{ v }}{% if not loop.last %}; {% endif %}{% endfor %}.</p>
"""


def entries(ctx: ReportContext, columns: list[str]) -> dict[str, dict]:
    """Each column's metric entry (``higher_is_better``, ``source``, ...): as evaluate recorded it, else built-in."""
    recorded = ctx.evaluation.get("metrics") or {}
    return {c: recorded.get(c) or (METRICS[c].record() if c in METRICS else {"higher_is_better": None, "source": ""})
            for c in columns}


def mask_table(loc: pd.DataFrame, metrics: list[str], methods: list[str], up: dict[str, bool | None] | None = None) -> str:
    """Per method, each metric's mean and median over branches and samples, and the samples counted.

    up: each column's direction (True higher is better, False lower, None neither; default higher).
    The best mean of a column is bold only when it has a direction and all of its values lie in
    [0, 1]; a column with values outside (signed relevance) gets no bold, since its mean is then not
    a meaningful ranking.
    """
    up = {c: (up or {}).get(c, True) for c in metrics}
    stats = {m: {c: loc.loc[loc["method"] == m, c] for c in metrics} for m in methods}
    ranked = {c: in_range(loc[c]) and up[c] is not None for c in metrics}
    best = {c: (max if up[c] is not False else min)(
        (v.mean() for v in (stats[m][c] for m in methods) if v.notna().any()), default=math.nan) for c in metrics}
    rows = []
    for m in methods:
        counts = sorted({int(stats[m][c].notna().sum()) for c in metrics})
        cells = [m]
        for c in metrics:
            mean, median = stats[m][c].mean(), stats[m][c].median()
            cells.append(render(BOLD, value=mean) if ranked[c] and mean == best[c] else number(mean))
            cells.append(number(median))
        cells.append(str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}")
        rows.append(cells)
    header = ["method", *(render(HEAD, name=c.rsplit("/", 1)[0], what=w) for c in metrics for w in ("mean", "median")),
              "samples"]
    return render(MASK_TABLE, header=header, rows=rows, off=[c for c in metrics if not in_range(loc[c])])


def localisation_section(ctx: ReportContext) -> str:
    loc = ctx.localisation
    metrics = [c for c in loc.columns if c not in ID_COLUMNS]
    if not metrics:
        return note(f"The localisation table has no metric columns; run `heatlab evaluate {ctx.run_dir}` again.")
    groups = {k: [c for c in metrics if _mask_of(c) == k] for k in dict.fromkeys(_mask_of(c) for c in metrics)}
    truth = ctx.evaluation.get("truth_kind", "levels")
    masks = ("“/feature” uses the discriminative-feature mask (truth 0.9), “/cell” the whole cell (truth > 0)"
             if truth == "levels" else "the data's masks are binary, so “/feature” and “/cell” both use the mask"
             if truth == "mask" else "the data has no ground truth")
    found = entries(ctx, metrics)
    up = {c: e.get("higher_is_better") for c, e in found.items()}
    directions: dict[str, list[str]] = {}
    for c in metrics:
        directions.setdefault(DIRECTIONS[up[c]], []).append(c)
    sources = {c.rsplit("/", 1)[0]: e["source"] for c, e in found.items() if e.get("source")}
    return render(TEMPLATE, masks=masks, sources=sources, directions=list(directions.items()),
                  tables=[(k, mask_table(loc, cols, ctx.methods, up)) for k, cols in groups.items()])


SECTION = Section("localisation", "Localisation metrics", localisation_section, needs=("localisation",))
