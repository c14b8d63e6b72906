"""The `heatlab` command: help everywhere, and bad input as one sentence with a non-zero exit."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import heatlab
from heatlab.cli import app

runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.mark.parametrize("cmd", [[], ["data"], ["data", "cells"], ["data", "verify"], ["data", "preview"],
                                 ["train"], ["evaluate"], ["report"], ["demo"]])
def test_every_command_has_help(cmd):
    code, text = _run(*cmd, "--help")
    assert code == 0 and "Usage" in text


def test_version():
    code, text = _run("--version")
    assert code == 0 and heatlab.__version__ in text


def _assert_one_clear_error(code, text, *needles):
    assert code != 0
    assert "Traceback" not in text
    assert "error:" in text
    for n in needles:
        assert n in text


def test_bad_cells_options_leave_nothing_behind(tmp_path):
    out = tmp_path / "cells"
    _assert_one_clear_error(*_run("data", "cells", "--out", out, "--shard-size", 0), "Shard size")
    _assert_one_clear_error(*_run("data", "cells", "--out", out, "--size", 8), "64")
    _assert_one_clear_error(*_run("data", "cells", "--out", out, "--shards", "train=x"))
    assert not out.exists()
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    _assert_one_clear_error(*_run("data", "cells", "--out", afile, "--size", 64, "--shards", "test=1", "--shard-size", 2), "file")


def test_cells_twice_with_one_seed_gives_identical_manifests(tmp_path):
    args = ["--size", 64, "--seed", 5, "--shards", "train=2,test=1", "--shard-size", 4]
    assert _run("data", "cells", "--out", tmp_path / "a", *args)[0] == 0
    assert _run("data", "cells", "--out", tmp_path / "b", *args)[0] == 0
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    code, text = _run("data", "verify", tmp_path / "a")
    assert code == 0
    shard = tmp_path / "a" / "train" / "shard-00001.safetensors"
    blob = bytearray(shard.read_bytes())
    blob[-1] ^= 0xFF
    shard.write_bytes(bytes(blob))
    _assert_one_clear_error(*_run("data", "verify", tmp_path / "a"), "shard-00001", "--repair")


def test_train_bad_input(tmp_path, tiny_run):
    data = json.loads((tiny_run / "config.json").read_text())["data_root"]
    _assert_one_clear_error(*_run("train", "--data", tmp_path / "missing", "--out", tmp_path / "r"))
    _assert_one_clear_error(*_run("train", "--data", data, "--out", tmp_path / "r", "--model", "nosuchnet"), "cellcnn")
    _assert_one_clear_error(*_run("train", "--data", data, "--out", tmp_path / "r", "--epochs", -1), "Epochs")
    assert not (tmp_path / "r").exists()


def test_evaluate_and_report_bad_input(tmp_path, tiny_run):
    _assert_one_clear_error(*_run("evaluate", tmp_path), "heatlab train")
    _assert_one_clear_error(*_run("evaluate", tiny_run, "--methods", "Magic"), "Unknown method")
    _assert_one_clear_error(*_run("report", tiny_run), "heatlab evaluate")


def test_train_on_a_table_file_and_refuse_an_image_model(tmp_path):
    """`heatlab train --data drybean:FILE` trains the tabular appendix model; cellcnn is refused clearly."""
    import numpy as np
    import pandas as pd

    from heatlab.data.tabular import DRYBEAN_FEATURES

    rng = np.random.default_rng(0)
    classes = ["SEKER", "BARBUNYA", "BOMBAY", "CALI", "HOROZ", "SIRA", "DERMASON"]
    rows = [list(rng.normal(i % 7, 1.0, 16)) + [classes[i % 7]] for i in range(140)]
    csv = tmp_path / "bean.csv"
    pd.DataFrame(rows, columns=[*DRYBEAN_FEATURES, "Class"]).to_csv(csv, index=False)
    code, text = _run("train", "--data", f"drybean:{csv}", "--model", "drybeanfpa", "--out", tmp_path / "r",
                      "--epochs", 1, "--branches", 1, "--batch-size", 16)
    assert code == 0, text
    assert (tmp_path / "r" / "model" / "branch-00" / "model.json").exists()
    _assert_one_clear_error(*_run("train", "--data", f"drybean:{csv}", "--out", tmp_path / "r2"), "tabular model")
    code, text = _run("evaluate", tmp_path / "r")  # no ground truth: heatmaps only, and it says so
    assert code == 0 and "ground truth" in text, text
