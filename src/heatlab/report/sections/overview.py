"""Section "This run": the data, what evaluate explained or skipped (and why), and which stages
have not run yet with the command that produces them. Needs only a trained run."""

from __future__ import annotations

from heatlab.report.page import ReportContext, Section
from heatlab.report.templates import render

#: (input, what it gives the page, the command that produces it)
STAGES = (
    ("evaluate", "heatmaps, their scores and the gallery", "heatlab evaluate {run}"),
    ("ax", "the CO score and its correct/wrong gap", "heatlab ax {run}"),
    ("gax", "GAX heatmaps", "heatlab gax {run}"),
)


TRUTH = {"levels": "ground truth with the levels 0, 0.4, 0.9", "mask": "binary ground-truth masks", None: "no ground truth"}

TEMPLATE = """\
{% from "macros.html" import note %}
<p>Data: <b>{{ data }}</b> ({{ kind }}); {{ branches|length }} branch model(s): {{ branches|join(", ") }}.</p>
{% if ev %}
<p>heatlab evaluate explained the <b>{{ ev.get("split") }}</b> split ({{ ev.get("samples", "–") }} samples, {{ truth }}) with {{ methods|length }} method(s) ({{ methods|join(", ") }}); score tables: {{ tables|join(", ") or "none" }}.</p>
{% for sentence in ev.get("skipped", []) %}
{{ note(sentence) }}
{% endfor %}
{% endif %}
{% if missing %}
<p class="muted">Not in this run yet: {% for what, command in missing %}{{ what }} (<code>{{ command }}</code>){% if not loop.last %}; {% endif %}{% endfor %}.</p>
{% endif %}
"""


def overview_section(ctx: ReportContext) -> str:
    ev = ctx.evaluation
    return render(
        TEMPLATE, data=ctx.config.get("data_root", "–"), kind={"image": "images", "table": "a table"}.get(ctx.input_kind, "–"),
        branches=ctx.branches, ev=ev, truth=TRUTH.get(ev.get("truth_kind"), ev.get("truth_kind")),
        methods=[str(m) for m in ev.get("methods", [])], tables=[str(t) for t in ev.get("tables", [])],
        missing=[(what, command.format(run=ctx.run_dir)) for need, what, command in STAGES if not ctx.has(need)],
    )


SECTION = Section("overview", "This run", overview_section)
