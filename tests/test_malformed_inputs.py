"""Malformed input at the `heatlab` command: each case exits non-zero with one sentence on stderr,
no traceback, and leaves every folder it was given exactly as it was (nothing half-written).

The run and data folders are made by the pipeline (the session's tiny run); the broken variants
are copies with one thing damaged.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from heatlab.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def places(tiny_run, tiny_wine_run, tmp_path_factory, png_claiming):
    """Paths the cases refer to by name ({run}, {cells}, ...), all made once for the module."""
    root = tmp_path_factory.mktemp("malformed")
    run = root / "run"
    shutil.copytree(tiny_run, run)
    cells = Path(json.loads((run / "config.json").read_text())["data_root"])
    p = {"run": run, "cells": cells, "root": root, "new": root / "new", "missing": root / "missing"}
    p["wine"] = root / "wine"
    shutil.copytree(tiny_wine_run, p["wine"])
    p["file"] = root / "notes.txt"
    p["file"].write_text("not a model\n")
    p["pickle"] = root / "weights.pt"
    p["pickle"].write_bytes(pickle.dumps({"conv.weight": [1.0, 2.0]}))
    p["folder"] = root / "a-folder"
    p["folder"].mkdir()
    # A config without data_root (an old or hand-edited run).
    p["nodata"] = root / "nodata"
    shutil.copytree(run, p["nodata"])
    config = json.loads((p["nodata"] / "config.json").read_text())
    del config["data_root"]
    (p["nodata"] / "config.json").write_text(json.dumps(config))
    # Cells whose manifest lost its splits, and cells with one changed shard.
    p["nosplits"] = root / "nosplits"
    shutil.copytree(cells, p["nosplits"])
    manifest = json.loads((p["nosplits"] / "manifest.json").read_text())
    del manifest["splits"]
    (p["nosplits"] / "manifest.json").write_text(json.dumps(manifest))
    p["changed"] = root / "changed"
    shutil.copytree(cells, p["changed"])
    shard = p["changed"] / "train" / "shard-00000.safetensors"
    blob = bytearray(shard.read_bytes())
    blob[-1] ^= 0x01
    shard.write_bytes(bytes(blob))
    # MNIST IDX files whose images have 0×0 pixels (header and lengths otherwise consistent).
    p["mnist0"] = root / "mnist0"
    p["mnist0"].mkdir()
    for name, header in (("train-images-idx3-ubyte", (2051, 3, 0, 0)), ("t10k-images-idx3-ubyte", (2051, 2, 0, 0)),
                         ("train-labels-idx1-ubyte", (2049, 3)), ("t10k-labels-idx1-ubyte", (2049, 2))):
        body = bytes(header[1]) if header[0] == 2049 else b""
        (p["mnist0"] / name).write_bytes(b"".join(v.to_bytes(4, "big") for v in header) + body)
    # An image whose header claims 10,000 × 10,000 pixels (100 megapixels; Pillow would warn).
    p["huge"] = png_claiming(root / "huge.png", 10_000, 10_000)
    return p


# (id, command line with {name} placeholders); every case must fail cleanly.
CASES = [
    ("cells-size-too-small", "data cells --out {new} --size 8"),
    ("cells-size-too-big", "data cells --out {new} --size 100000 --shards train=1 --shard-size 1"),
    ("cells-shard-too-big", "data cells --out {new} --size 2048 --shards train=1"),
    ("cells-shard-size-0", "data cells --out {new} --shard-size 0"),
    ("cells-shards-text", "data cells --out {new} --shards train=x"),
    ("cells-shards-zero", "data cells --out {new} --size 64 --shards train=0 --shard-size 2"),
    ("cells-shards-unknown-split", "data cells --out {new} --shards holdout=1"),
    ("cells-out-is-a-file", "data cells --out {file} --size 64 --shards test=1 --shard-size 2"),
    ("verify-missing", "data verify {missing}"),
    ("verify-no-splits", "data verify {nosplits}"),
    ("verify-changed-shard", "data verify {changed}"),
    ("preview-out-is-a-folder", "data preview {cells} --out {folder}"),
    ("preview-missing", "data preview {missing}"),
    ("train-data-missing", "train --data {missing} --out {new}"),
    ("train-data-unknown-spec", "train --data nosuchset:x --out {new}"),
    ("train-data-no-splits", "train --data {nosplits} --out {new}"),
    ("train-data-changed-shard", "train --data {changed} --out {new} --epochs 1 --branches 0"),
    ("train-model-unknown", "train --data {cells} --out {new} --model nosuchnet"),
    ("train-epochs-negative", "train --data {cells} --out {new} --epochs -1"),
    ("train-batch-size-0", "train --data {cells} --out {new} --batch-size 0"),
    ("train-lr-negative", "train --data {cells} --out {new} --lr -1"),
    ("train-r-f-too-big", "train --data {cells} --out {new} --r-f 1.5"),
    ("train-schedule-unknown", "train --data {cells} --out {new} --schedule sometimes"),
    ("train-normalize-unknown", "train --data {cells} --out {new} --normalize maybe"),
    ("train-device-meta", "train --data {cells} --out {new} --device meta"),
    ("train-device-unknown", "train --data {cells} --out {new} --device gpu0"),
    ("train-weights-pickle", "train --data {cells} --out {new} --weights {pickle}"),
    ("train-weights-text", "train --data {cells} --out {new} --weights {file}"),
    ("train-weights-missing", "train --data {cells} --out {new} --weights {missing}"),
    ("train-image-model-on-table", "train --data wine --out {new} --model cellcnn"),
    ("train-out-is-a-file", "train --data {cells} --out {file}"),
    ("evaluate-not-a-run", "evaluate {folder}"),
    ("evaluate-method-unknown", "evaluate {run} --methods Magic"),
    ("evaluate-split-unknown", "evaluate {run} --split holdout"),
    ("evaluate-split-escapes", "evaluate {run} --split ../../x"),
    ("evaluate-batch-size-0", "evaluate {run} --batch-size 0"),
    ("evaluate-preset-unknown", "evaluate {run} --preset paper999"),
    ("evaluate-device-meta", "evaluate {run} --device meta"),
    ("evaluate-config-without-data", "evaluate {nodata}"),
    ("evaluate-backend-unknown", "evaluate {run} --backend spark"),
    ("evaluate-ray-option-without-ray", "evaluate {run} --workers 3"),
    ("ax-ray-address-not-host-port", "ax {run} --backend ray --address nowhere"),
    ("report-not-evaluated", "report {run}"),
    ("report-missing", "report {missing}"),
    ("ax-method-unknown", "ax {run} --methods Magic"),
    ("ax-space-unknown", "ax {run} --ax-space nowhere"),
    ("ax-holdout-unknown", "ax {run} --holdout-split later"),
    ("gax-first-n-0", "gax {run} --first-n-correct 0"),
    ("gax-branch-missing", "gax {run} --branch 7"),
    ("gax-max-steps-0", "gax {run} --max-steps 0"),
    ("lrp-filters-filter-unknown", "lrp-filters {run} --filters z9"),
    ("lrp-filters-composite-unknown", "lrp-filters {run} --composite nope"),
    ("lrp-study-model-unknown", "lrp-study --data digits --out {new} --model nosuchnet"),
    ("lrp-study-table-data", "lrp-study --data wine --out {new}"),
    ("mixer-setting-unknown", "mixer {run} --settings magic"),
    ("mixer-seeds-0", "mixer {run} --seeds 0"),
    ("mixer-holdout-too-big", "mixer {run} --holdout 1.5"),
    ("mixer-branch-missing", "mixer {run} --branch branch-09"),
    # --device checked against what this torch build has here (none of these is on a CPU-only build)
    ("train-device-xpu", "train --data {cells} --out {new} --device xpu"),
    ("train-device-mps", "train --data {cells} --out {new} --device mps"),
    ("train-device-cuda-99", "train --data {cells} --out {new} --device cuda:99"),
    ("evaluate-device-xpu", "evaluate {run} --device xpu"),
    ("evaluate-device-mps", "evaluate {run} --device mps"),
    ("evaluate-device-cuda-99", "evaluate {run} --device cuda:99"),
    ("evaluate-device-unknown-type", "evaluate {run} --device hpu"),
    ("ax-device-xpu", "ax {run} --device xpu"),
    ("gax-device-mps", "gax {run} --device mps"),
    ("lrp-filters-device-xpu", "lrp-filters {run} --device xpu"),
    ("mixer-device-xpu", "mixer {run} --device xpu"),
    ("explain-device-xpu", "explain {cells} --run {run} --out {new} --device xpu"),
    ("lrp-study-device-mps", "lrp-study --data digits --out {new} --device mps"),
    # Ray flags
    ("evaluate-gpus-per-worker-nan", "evaluate {run} --backend ray --gpus-per-worker nan"),
    ("evaluate-gpus-per-worker-inf", "evaluate {run} --backend ray --gpus-per-worker inf"),
    ("evaluate-gpus-per-worker-negative", "evaluate {run} --backend ray --gpus-per-worker -1"),
    ("evaluate-gpus-per-worker-1.5", "evaluate {run} --backend ray --gpus-per-worker 1.5"),
    ("mixer-holdout-leaves-too-few", "mixer {run} --holdout 0.99"),
    ("mixer-settings-twice", "mixer {run} --settings predicted,none,predicted"),
    ("mixer-ig-batch-size-0", "mixer {run} --ig-batch-size 0"),
    ("lrp-study-out-is-a-file", "lrp-study --data digits --out {file}"),
    ("train-mnist-zero-pixel-images", "train --data mnist:{mnist0} --out {new} --epochs 1 --branches 0"),
    ("explain-image-over-pixel-limit", "explain {huge} --run {run} --out {new}"),
    # no-truth metrics (issue 22)
    ("evaluate-metric-unknown", "evaluate {run} --metrics nosuch"),
    ("evaluate-patch-metric-on-a-table", "evaluate {wine} --metrics region_perturbation_morf"),
    ("evaluate-truth-metric-without-truth", "evaluate {wine} --metrics localisation"),
    ("evaluate-patch-size-larger-than-image", "evaluate {run} --patch-size 65"),
    ("evaluate-perturb-baseline-unknown", "evaluate {run} --perturb-baseline purple"),
    ("evaluate-blur-baseline-on-a-table", "evaluate {wine} --perturb-baseline blur"),
    # Typer's parse errors: one sentence like every other error, not a usage box.
    ("parse-size-not-a-number", "train --data {cells} --out {new} --size abc"),
    ("parse-lr-not-a-number", "train --data {cells} --out {new} --lr fast"),
    ("parse-unknown-option", "evaluate {run} --bogus 3"),
    ("parse-missing-argument", "evaluate"),
    ("parse-missing-option", "train --data {cells}"),
    ("parse-option-without-value", "evaluate {run} --batch-size"),
    ("parse-unknown-command", "nosuchcommand {run}"),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file below ``root`` (relative name -> sha256 of its bytes)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("line", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_one_sentence_and_changes_nothing(places, line):
    args = [part.format(**{k: str(v) for k, v in places.items()}) for part in line.split()]
    before = {k: _snapshot(places[k]) for k in ("root", "cells")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, args)
    assert not caught, f"a warning came before the sentence: {caught[0].message}"
    err = result.stderr.strip()
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("."), err
    message = lines[0][len("error: "):]
    assert message[:1].isupper() or message[:1].isdigit() or message.startswith(("'", "--")), message  # a sentence
    assert {k: _snapshot(places[k]) for k in before} == before, "the command changed files it was given"
    assert not places["new"].exists(), "the command left an output folder behind"


def test_mixer_errors_name_the_flag_given(places):
    """The IG batch size is --ig-batch-size (the library's ig_batch_size), not the Mixer's --batch-size."""
    result = runner.invoke(app, ["mixer", str(places["run"]), "--ig-batch-size", "0"])
    assert result.stderr.startswith("error: --ig-batch-size must be") and "--ig-batch-size 3" in result.stderr
    result = runner.invoke(app, ["mixer", str(places["run"]), "--holdout", "0.99"])
    assert "--holdout must be a share in (0, 0.5]" in result.stderr and "got 0.99" in result.stderr


def test_parse_error_names_the_flag_and_the_fix(places):
    result = runner.invoke(app, ["data", "cells", "--out", str(places["new"]), "--size", "abc"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --size expects a whole number, got 'abc'; pass e.g. --size 128."
    result = runner.invoke(app, ["evaluate", str(places["run"]), "--bogus"])
    assert result.stderr.strip().startswith("error: No such option --bogus; ")
    assert runner.invoke(app, ["--help"]).exit_code == 0 and runner.invoke(app, ["evaluate", "--help"]).exit_code == 0


def _screen(raw: str) -> list[str]:
    """The lines a terminal shows after ``raw``: handles the carriage returns, erase-line and
    cursor-up sequences rich's live display writes; other escape sequences are dropped."""
    import re

    lines, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", raw):
        if token == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif token == "\r":
            col = 0
        elif token == "\x1b[2K":
            lines[row] = ""
        elif token.startswith("\x1b[") and token.endswith("A"):
            row = max(0, row - int(token[2:-1] or 1))
        elif not token.startswith("\x1b"):
            lines[row] = lines[row][:col] + token + lines[row][col + len(token):]
            col += len(token)
    return [line for line in lines if line.strip()]


def test_an_error_after_a_progress_bar_is_the_last_thing_on_a_terminal(monkeypatch):
    """In a terminal a bar that started is erased before the error sentence (pytest disables bars
    otherwise, so the console is forced to be a terminal here)."""
    import io

    import typer
    from rich.console import Console

    from heatlab import cli_common
    from heatlab.errors import HeatlabError

    stream = io.StringIO()
    monkeypatch.setattr(cli_common, "console", Console(file=stream, force_terminal=True, width=80))

    @cli_common.guarded
    def stage() -> None:
        with cli_common.progress_bars() as progress:
            progress("evaluate", 2, 4)
            raise HeatlabError("Shard 3 is damaged; run it again.")

    with pytest.raises(typer.Exit):
        stage()
    screen = _screen(stream.getvalue())
    assert "evaluate" in stream.getvalue()  # the bar was drawn ...
    assert screen == ["error: Shard 3 is damaged; run it again."]  # ... and is gone before the sentence
    # A stage that ends well keeps its finished bar.
    stream.truncate(0), stream.seek(0)
    with cli_common.progress_bars() as progress:
        progress("evaluate", 4, 4)
    assert [line.split()[0] for line in _screen(stream.getvalue())] == ["evaluate"]


def test_the_heatlab_group_keeps_exit_codes_and_other_errors():
    """Only parse errors become sentences: a command's own exit code and a programming error pass through."""
    import typer

    from heatlab.cli_common import HeatlabGroup

    toy = typer.Typer(cls=HeatlabGroup)

    @toy.command()
    def stop() -> None:
        raise typer.Exit(3)

    @toy.command()
    def crash() -> None:
        raise RuntimeError("a bug")

    assert runner.invoke(toy, ["stop"]).exit_code == 3
    assert isinstance(runner.invoke(toy, ["crash"]).exception, RuntimeError)
    result = runner.invoke(toy, ["stop", "--nope"])
    assert result.exit_code == 2 and result.stderr.startswith("error: No such option --nope; ")
# ------------------------------------------------------------------- damaged files of a run folder
STUDY = dict(epochs=2, batch_size=128, every=5, eval_samples=8, heatmap_samples=2, filters="c0.2", seed=1)


@pytest.fixture(scope="module")
def full_run(tiny_run, tmp_path_factory):
    """The tiny run put through evaluate, GAX, the LRP filter study, the Mixer and a tiny LRP study, by the pipeline."""
    from heatlab.improve.mixer import MixerConfig
    from heatlab.run.evaluate import evaluate_run
    from heatlab.run.gax import gax_run
    from heatlab.run.lrp_filters import lrp_filters_run
    from heatlab.run.lrp_study import lrp_study
    from heatlab.run.mixer import mixer_run

    run = tmp_path_factory.mktemp("full") / "run"
    shutil.copytree(tiny_run, run)
    evaluate_run(run, methods="Saliency", split="test")
    gax_run(run, split="test", first_n_correct=2, max_steps=3, batch_size=2)
    lrp_filters_run(run, filters="c0.2")
    lrp_study("digits", run / "lrp-study", **{**STUDY, "epochs": 1})
    mixer_run(run, seeds=1, n_steps=2, train_samples=12, config=MixerConfig(epochs=1, patience=1, batch_size=8))
    return run


def _text(content: str | bytes):
    def damage(path: Path) -> None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return damage


def _field(*keys: str, value):
    def damage(path: Path) -> None:
        record = json.loads(path.read_text())
        inner = record
        for key in keys[:-1]:
            inner = inner[key]
        inner[keys[-1]] = value
        path.write_text(json.dumps(record))
    return damage


def _table(change):
    def damage(path: Path) -> None:
        import pandas as pd

        change(pd.read_parquet(path)).to_parquet(path, index=False)
    return damage


def _huge(path: Path) -> None:
    with path.open("w") as f:  # valid JSON of 65 MiB
        f.write('{"pad": "' + "x" * (65 << 20) + '"}')


MARKUP = "<img src=x onerror=alert(1)>"
# (id, file in the run, damage, command with {run}); every case must fail cleanly and change nothing.
DAMAGED = [
    ("config-nested-100000-deep", "config.json", _text("[" * 100000 + "]" * 100000), "report {run}"),
    ("config-over-64-mib", "config.json", _huge, "report {run}"),
    ("config-seed-text", "config.json", _field("seed", value="abc"), "evaluate {run} --methods Saliency"),
    ("config-a-list", "config.json", _text("[1, 2]"), "report {run}"),
    ("config-data-options-text", "config.json", _field("data_options", value="big"), "report {run}"),
    ("config-training-a-list", "config.json", _field("training", value=[1]), "ax {run} --methods Saliency"),
    ("config-target-acc-text", "config.json", _field("training", "target_acc", value=MARKUP), "report {run}"),
    ("evaluate-json-methods-text", "evaluate.json", _field("methods", value="Saliency"), "report {run}"),
    ("lrp-filters-json-samples-markup", "lrp-filters.json", _field("samples", value=MARKUP), "report {run}"),
    ("lrp-filters-json-means-key-without-filter", "lrp-filters.json",
     _field("means", value={"branch-00": {"recall_best": 0.5}}), "report {run}"),
    ("lrp-study-json-iterations-markup", "lrp-study/lrp-study.json", _field("iterations", value=MARKUP),
     "report {run}"),
    ("lrp-study-json-every-markup", "lrp-study/lrp-study.json", _field("settings", "every", value=MARKUP),
     "report {run}"),
    ("mixer-json-train-samples-markup", "mixer.json", _field("train_samples", value=MARKUP), "report {run}"),
    ("mixer-json-test-samples-markup", "mixer.json", _field("test_samples", value=MARKUP), "report {run}"),
    ("gax-json-max-steps-markup", "gax/gax.json", _field("max_steps", value=MARKUP), "report {run}"),
    ("gax-results-garbage", "gax/results.parquet", _text(b"not parquet"), "report {run}"),
    ("lrp-study-table-garbage", "lrp-study/tables/lrp_study.parquet", _text(b"PAR1 garbage"), "report {run}"),
    ("five-band-recall-text", "tables/five_band.parquet", _table(lambda df: df.assign(recall_best="high")),
     "report {run}"),
    ("localisation-metric-text", "tables/localisation.parquet", _table(lambda df: df.assign(**{"auc/cell": MARKUP})),
     "report {run}"),
    ("roc-without-precision", "tables/roc.parquet", _table(lambda df: df.drop(columns="precision")), "report {run}"),
    ("mixer-table-accuracy-text", "tables/mixer.parquet", _table(lambda df: df.assign(accuracy_masked=MARKUP)),
     "report {run}"),
    ("gax-results-reached-text", "gax/results.parquet", _table(lambda df: df.assign(reached="yes")), "report {run}"),
    ("lrp-study-table-without-layer", "lrp-study/tables/lrp_study.parquet",
     _table(lambda df: df.drop(columns="layer")), "report {run}"),
    ("training-table-loss-text", "tables/training.parquet", _table(lambda df: df.assign(loss="low")), "report {run}"),
]


@pytest.mark.parametrize("name,damage,line", [c[1:] for c in DAMAGED], ids=[c[0] for c in DAMAGED])
def test_a_damaged_run_file_is_one_sentence_and_the_run_is_left_as_it_was(full_run, tmp_path, name, damage, line):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    damage(run / name)
    before = _snapshot(run)
    result = runner.invoke(app, [part.format(run=str(run)) for part in line.split()])
    err = result.stderr.strip()
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("."), err
    assert str(run / name) in lines[0] or name.startswith("config") and str(run / "config.json") in lines[0], err
    assert _snapshot(run) == before, "the command changed the damaged run"


@pytest.fixture(scope="module")
def whole_study(tmp_path_factory):
    """A study that never stopped (the reference a restarted one must equal)."""
    from heatlab.run.lrp_study import lrp_study

    out = tmp_path_factory.mktemp("whole") / "study"
    return out, lrp_study("digits", out, **STUDY)


@pytest.mark.parametrize("name", ["checkpoint.safetensors", "rows.parquet"])
def test_damaged_lrp_study_resume_state_restarts_the_study(whole_study, tmp_path, name):
    from heatlab.run.lrp_study import lrp_study

    class Kill(Exception):
        pass

    def kill_in_second_epoch(task, done, total):
        if done == total // 2 + 1:
            raise Kill

    out = tmp_path / "study"
    with pytest.raises(Kill):
        lrp_study("digits", out, progress=kill_in_second_epoch, **STUDY)
    state = out / "lrp_study" / name
    assert state.is_file()
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # truncated
    args = ["lrp-study", "--data", "digits", "--out", str(out)] + [
        f"--{k.replace('_', '-')}={v}" for k, v in STUDY.items()]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "lrp-study.json").read_text()) == whole_study[1].to_record()
    for rel in ("tables/lrp_study.parquet", "model/weights.safetensors", "lrp_study/heatmaps.safetensors"):
        assert (out / rel).read_bytes() == (whole_study[0] / rel).read_bytes(), rel
    assert not (out / "lrp_study" / name).exists()


class Kill(Exception):
    pass


def _kill_at(task_name: str | None, at):
    """A progress callback that stops the stage when ``task_name`` (any task for None) reaches ``at(total)``."""
    def progress(task, done, total):
        if task_name in (None, task) and done == at(total):
            raise Kill
    return progress


def _refused_unchanged(root: Path, args: list[str], damaged: Path, column: str) -> None:
    """``heatlab args`` fails in one sentence naming ``damaged``, its ``column`` and the command; ``root`` unchanged."""
    before = _snapshot(root)
    result = runner.invoke(app, args)
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("."), result.stderr
    assert str(damaged) in lines[0] and column in lines[0] and f"heatlab {args[0]}" in lines[0], lines[0]
    assert _snapshot(root) == before, "the command changed the folder"


def _retype(path: Path, column: str) -> None:
    """Overwrite ``column`` of the Parquet table at ``path`` with text: readable, but not the table it was."""
    import pandas as pd

    pd.read_parquet(path).assign(**{column: MARKUP}).to_parquet(path, index=False)


def test_a_lrp_study_resume_table_of_another_kind_is_one_sentence_and_changes_nothing(tmp_path):
    from heatlab.run.lrp_study import lrp_study

    out = tmp_path / "study"
    with pytest.raises(Kill):
        lrp_study("digits", out, progress=_kill_at(None, lambda total: total // 2 + 1), **STUDY)
    rows = out / "lrp_study" / "rows.parquet"
    _retype(rows, "mp_mean")
    _refused_unchanged(out, ["lrp-study", "--data", "digits", "--out", str(out)]
                       + [f"--{k.replace('_', '-')}={v}" for k, v in STUDY.items()], rows, "mp_mean")


def test_a_gax_selection_of_another_kind_is_one_sentence_and_changes_nothing(tiny_run, tmp_path):
    from heatlab.run.gax import gax_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    options = dict(split="test", first_n_correct=2, max_steps=3, batch_size=1)
    with pytest.raises(Kill):
        gax_run(run, progress=_kill_at("gax batches", lambda total: 1), **options)
    selection = run / "gax" / "parts" / "selection.parquet"
    _retype(selection, "index")
    _refused_unchanged(run, ["gax", str(run), "--first-n-correct", "2", "--max-steps", "3", "--batch-size", "1"],
                       selection, "index")


def test_json_limits_are_checked_before_parsing(tmp_path):
    from heatlab.errors import HeatlabError
    from heatlab.files import MAX_JSON_DEPTH, json_depth, read_json

    assert json_depth(b'{"a": "[[[{{", "b": [1, {"c": []}]}') == 4  # brackets in strings do not count
    ok, deep = tmp_path / "ok.json", tmp_path / "deep.json"
    ok.write_text("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    deep.write_text("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    assert json_depth(ok.read_bytes()) == MAX_JSON_DEPTH and read_json(ok) is not None
    with pytest.raises(HeatlabError, match="nests deeper than the 100 levels"):
        read_json(deep)
