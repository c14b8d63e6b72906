"""Section "This run": the data, what evaluate explained or skipped (and why), and which stages
have not run yet with the command that produces them. Needs only a trained run."""

from __future__ import annotations

from heatlab.report.page import ReportContext, Section, esc, note

#: (input, what it gives the page, the command that produces it)
STAGES = (
    ("evaluate", "heatmaps, their scores and the gallery", "heatlab evaluate {run}"),
    ("ax", "the CO score and its correct/wrong gap", "heatlab ax {run}"),
    ("gax", "GAX heatmaps", "heatlab gax {run}"),
)


def overview_section(ctx: ReportContext) -> str:
    ev = ctx.evaluation
    data = ctx.config.get("data_root", "–")
    kind = {"image": "images", "table": "a table"}.get(ctx.input_kind, "–")
    out = [f"<p>Data: <b>{esc(data)}</b> ({esc(kind)}); {len(ctx.branches)} branch model(s): "
           f"{esc(', '.join(ctx.branches))}.</p>"]
    if ev:
        tables = ", ".join(esc(t) for t in ev.get("tables", [])) or "none"
        truth = {"levels": "ground truth with the levels 0, 0.4, 0.9", "mask": "binary ground-truth masks",
                 None: "no ground truth"}.get(ev.get("truth_kind"), esc(ev.get("truth_kind")))
        out.append(f"<p>heatlab evaluate explained the <b>{esc(ev.get('split'))}</b> split ({esc(ev.get('samples', '–'))} "
                   f"samples, {truth}) with {len(ev.get('methods', []))} method(s) "
                   f"({esc(', '.join(str(m) for m in ev.get('methods', [])))}); score tables: {tables}.</p>")
        out += [note(str(sentence)) for sentence in ev.get("skipped", [])]
    missing = [f"{what} (<code>{esc(command.format(run=ctx.run_dir))}</code>)" for need, what, command in STAGES
               if not ctx.has(need)]
    if missing:
        out.append(f"<p class=\"muted\">Not in this run yet: {'; '.join(missing)}.</p>")
    return "\n".join(out)


SECTION = Section("overview", "This run", overview_section)
