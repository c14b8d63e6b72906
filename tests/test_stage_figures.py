"""One owner of the run folder's paths, and a command's figures are the report's (issue 21 items 1-2).

`RunDir` (and `StudyDir`) in run/rundir.py alone build paths inside a run folder; every command that
shows its stage's figures draws them through `heatlab.report.stage_figures`, i.e. through the report's
own sections, so they are the files `build_report` writes, at the same paths.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import heatlab
from heatlab.cli import app

runner = CliRunner()

#: Every folder and file name of a run folder (and of an LRP study's folder).
LAYOUT_NAMES = (
    "tables", "figures", "report", "weights", "branches", "lrp-study", "lrp_study", "mixer", "cache", "gax", "model",
    "heatmaps", "parts", "data", "selection.parquet", "settings.json", "gallery.safetensors", "index.html",
    "gax.html", "heatmaps.safetensors", "lrp_study.parquet", "lrp-study.json", "weights.safetensors", "model.json",
    "training.parquet", "validation.parquet", "config.json", "evaluate.json", "gax.json", "results.parquet",
    "trajectories.safetensors", "snapshots.safetensors", "checkpoint.safetensors", "rows.parquet",
)
# `/ "name"`, `/ 'name'` and `/ f"name"`: a path joined from a literal (the grep, extended).
LITERAL_JOIN = re.compile(r"""/ *f?["'](?:""" + "|".join(map(re.escape, LAYOUT_NAMES)) + r""")["']""")


def test_no_module_but_rundir_joins_a_run_folder_name():
    src = Path(heatlab.__file__).parent
    hits = [f"{path.relative_to(src)}:{i}: {line.strip()}"
            for path in sorted(src.rglob("*.py")) if path != src / "run" / "rundir.py"
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if LITERAL_JOIN.search(line)]
    assert hits == []


def _figures(result) -> list[Path]:
    assert result.exit_code == 0, result.output
    return [Path(line.removeprefix("figure: ")) for line in result.output.splitlines() if line.startswith("figure: ")]


def _shown(html: str, section: str, run: Path) -> set[Path]:
    """The figures the report's page shows in ``section`` (its <img> sources, relative to report/)."""
    parts = html.split(f'<section id="{section}">')
    if len(parts) == 1:
        return set()
    fragment = parts[1].split("</section>")[0]
    return {run / "report" / src for src in re.findall(r'<img[^>]* src="([^"]+)"', fragment)}


@pytest.fixture(scope="module")
def commanded(tiny_run, tmp_path_factory):
    """A copy of the tiny run put through every stage by its command: {stage: (printed figures, their bytes)}."""
    run = tmp_path_factory.mktemp("stage-figures") / "run"
    shutil.copytree(tiny_run, run)
    commands = {
        # the session run's own settings: training resumes (nothing to train) and draws its curves
        "train": ["train", "--data", tiny_run.parent / "data", "--out", run, "--epochs", 1, "--branches", 1,
                  "--branch-epochs", 1, "--batch-size", 10, "--eval-every", 1, "--n-l", 1, "--seed", 3],
        "ax": ["ax", run, "--methods", "Saliency"],
        "gax": ["gax", run, "--first-n-correct", 2, "--max-steps", 3, "--batch-size", 2],
        "lrp-filters": ["lrp-filters", run, "--filters", "c0.2", "--batch-size", 8],
        "mixer": ["mixer", run, "--settings", "predicted,none", "--seeds", 1, "--n-steps", 2, "--epochs", 1,
                  "--patience", 1, "--train-samples", 8, "--batch-size", 8],
        "lrp-study": ["lrp-study", "--out", run / "lrp-study", "--epochs", 1, "--batch-size", 128, "--every", 5,
                      "--eval-samples", 8, "--heatmap-samples", 1, "--filters", "c0.2"],
    }
    printed = {}
    for stage, args in commands.items():
        result = runner.invoke(app, [str(a) for a in args])
        if stage == "train":  # train names its curves on its own line
            assert result.exit_code == 0, result.output
            figures = [Path(p) for p in re.search(r"loss curves: (.+)", result.output).group(1).split(", ")]
        else:
            figures = _figures(result)
        printed[stage] = (figures, {p: p.read_bytes() for p in figures})
    return run, printed


SECTION_OF = {"train": "training", "ax": "ax", "gax": "gax", "lrp-filters": "lrp-filters", "lrp-study": "lrp-study",
              "mixer": "mixer"}


def test_each_command_prints_the_figures_the_report_draws_for_its_stage(commanded):
    from heatlab.report.html import build_report

    run, printed = commanded
    page = build_report(run)
    html = page.read_text(encoding="utf-8")
    for stage, (figures, data) in printed.items():
        assert set(figures) == _shown(html, SECTION_OF[stage], run), stage
        for path in figures:
            assert path.parent == run / "report" / "figures", path
            assert path.read_bytes() == data[path], path  # the report drew the same file again
    drawn = {stage for stage, (figures, _) in printed.items() if figures}
    assert drawn >= {"train", "ax", "gax", "mixer", "lrp-study"}  # every stage with figures printed them


def test_a_study_outside_a_run_draws_into_its_own_folder(commanded, tmp_path):
    from heatlab.report import stage_figures

    run, printed = commanded
    alone = tmp_path / "study"
    shutil.copytree(run / "lrp-study", alone)
    figures = stage_figures(alone, "lrp-study")
    assert [p.name for p in figures] == [p.name for p in printed["lrp-study"][0]]
    for path, ref in zip(figures, printed["lrp-study"][0]):
        assert path.parent == alone / "report" / "figures"
        assert path.read_bytes() == printed["lrp-study"][1][ref]


def test_stage_figures_names_the_stages_it_knows(tiny_run):
    from heatlab.errors import HeatlabError
    from heatlab.report import stage_figures

    with pytest.raises(HeatlabError, match=r"stage='evaluat' has no report section; choose one of train, ax"):
        stage_figures(tiny_run, "evaluat")
