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
def places(tiny_run, tmp_path_factory, png_claiming):
    """Paths the cases refer to by name ({run}, {cells}, ...), all made once for the module."""
    root = tmp_path_factory.mktemp("malformed")
    run = root / "run"
    shutil.copytree(tiny_run, run)
    cells = Path(json.loads((run / "config.json").read_text())["data_root"])
    p = {"run": run, "cells": cells, "root": root, "new": root / "new", "missing": root / "missing"}
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
