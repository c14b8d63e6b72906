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
                                 ["train"], ["evaluate"], ["report"], ["demo"], ["mixer"]])
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
    _assert_one_clear_error(*_run("train", "--data", f"drybean:{csv}", "--model", "cellcnn", "--out", tmp_path / "r2"),
                            "tabular model")
    assert not (tmp_path / "r2").exists()
    code, text = _run("train", "--data", f"drybean:{csv}", "--out", tmp_path / "r3", "--epochs", 1, "--branches", 0)
    assert code == 0, text  # no --model: a table gets the table default
    assert json.loads((tmp_path / "r3" / "config.json").read_text())["training"]["model"] == "mlp"
    code, text = _run("evaluate", tmp_path / "r")  # no ground truth: heatmaps only, and it says so
    assert code == 0 and "ground truth" in text, text


# ------------------------------------------------------------------ CLI structure (issue 7)
ALL_COMMANDS = ("data", "train", "evaluate", "report", "demo", "ax", "gax", "toy2d")


def test_help_lists_every_command():
    code, text = _run("--help")
    assert code == 0
    for name in ALL_COMMANDS:
        assert name in text, name
    code, text = _run("train", "--help")
    assert code == 0 and "--batch-size" in text


def test_cli_modules_import_no_circle():
    """The command modules take the shared pieces from cli_common, never from cli (which imports them)."""
    import ast
    import inspect

    from heatlab import cli_ax, cli_common, cli_gax, cli_lrp, cli_mixer, cli_toy2d

    for module in (cli_common, cli_ax, cli_gax, cli_lrp, cli_mixer, cli_toy2d):
        tree = ast.parse(inspect.getsource(module))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "heatlab.cli" not in imported, module.__name__


def test_library_words_become_the_commands_flags(tiny_run):
    """The library says `batch_size=25`; the CLI says `--batch-size 25`."""
    code, text = _run("evaluate", tiny_run, "--batch-size", 0)
    _assert_one_clear_error(code, text, "--batch-size")
    assert "batch_size=" not in text


def test_flag_words_rewrites_only_the_commands_options():
    import typer as _typer

    from heatlab.cli_common import _flags, flag_words

    def cmd(run_dir=_typer.Argument(...), batch_size: int = _typer.Option(25), device: str = _typer.Option("cpu"),
            out_dir=_typer.Option(None, "--out"), full: bool = _typer.Option(False, "--full")):
        pass

    flags = _flags(cmd)
    assert flag_words("pass e.g. batch_size=25.", flags) == "pass e.g. --batch-size 25."
    assert flag_words("pass device='cpu' or device=\"cuda\"", flags) == "pass --device cpu or --device cuda"
    assert flag_words("choose out_dir=/tmp/x, or full=True", flags) == "choose --out /tmp/x, or --full"
    # not an option of this command, a positional argument, a longer name or a comparison: left alone
    for text in ("pass seed=3.", "run_dir=/x", "max_batch_size=4", "batch_size==4", "x.batch_size=4"):
        assert flag_words(text, flags) == text


def test_paths_are_printed_literally(tmp_path):
    target = tmp_path / "D[test]"
    code, text = _run("data", "cells", "--out", target, "--size", 64, "--shards", "test=1", "--shard-size", 2)
    assert code == 0, text
    assert str(target) in text and str(target / "manifest.json") in text
    bad = tmp_path / "R[bold]x[/bold]"
    code, text = _run("evaluate", bad)
    _assert_one_clear_error(code, text, str(bad))


def test_control_characters_in_paths_are_shown_not_sent_to_the_terminal(tmp_path):
    bad = tmp_path / "R\x1b[31mred\x07"
    code, text = _run("evaluate", bad)
    _assert_one_clear_error(code, text, "R\\x1b[31mred\\x07")
    assert "\x1b" not in text and "\x07" not in text
    target = tmp_path / "C\x1b]0;title\x07"
    code, text = _run("data", "cells", "--out", target, "--size", 64, "--shards", "test=1", "--shard-size", 2)
    assert code == 0 and (target / "manifest.json").is_file()  # the folder itself is named as asked
    assert "\x1b" not in text and "C\\x1b]0;title\\x07" in text


def test_help_does_not_load_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom typer.testing import CliRunner\nfrom heatlab.cli import app\n"
            "for cmd in ([], ['train'], ['evaluate'], ['mixer'], ['data', 'cells']):\n"
            "    assert CliRunner().invoke(app, [*cmd, '--help']).exit_code == 0\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_demo_runs_the_whole_pipeline_through_run_demo(tmp_path, monkeypatch):
    """`heatlab demo` only calls heatlab.run.demo.run_demo (here with a tiny plan) and prints."""
    from heatlab.models.training import TrainConfig
    from heatlab.run import demo as demo_mod

    tiny = demo_mod.DemoPlan(size=64, shards={"train": 2, "val": 1, "test": 1}, shard_size=10,
                             train=TrainConfig(epochs=1, branches=1, branch_epochs=1, batch_size=10, eval_every=1, n_l=1),
                             methods="Saliency", ax_methods="Saliency", gax_images=2, lrp_filters="c0.2",
                             no_truth_methods="Saliency",
                             lrp_study={"epochs": 1, "batch_size": 128, "every": 5, "eval_samples": 8,
                                        "heatmap_samples": 1, "filters": "c0.2"},
                             mixer={"seeds": 1, "n_steps": 2, "train_samples": 8, "epochs": 1, "patience": 1})
    monkeypatch.setattr(demo_mod, "demo_plan", lambda *, full=False, seed=0: tiny)
    run = tmp_path / "demo[1]"
    code, text = _run("demo", "--out", run)
    assert code == 0, text
    assert f"report: {run / 'report' / 'index.html'}" in text
    assert "total" in text and "GAX:" in text and "LRP study (paper 004, digits)" in text and "Mixer (paper 003)" in text
    assert "LRP filters against none" in text and "c0.2: better on" in text  # the verdicts of the paired intervals
    assert (run / "report" / "figures" / "training.png").is_file()
    assert "no-truth scores" in text and "deletion (lower is better): best Saliency" in text
    import pandas as pd

    no_truth = pd.read_parquet(run / "tables" / "no_truth.parquet")
    assert set(no_truth["method"]) == {"Saliency", "Random"}
    assert set(no_truth["metric"]) == {"deletion", "insertion", "sparseness", "complexity", "emprt"}
    summary = demo_mod.run_demo(run)  # resumes: everything is already there
    assert set(summary.seconds) == {"data", "training", "evaluation", "no_truth", "ax", "gax", "lrp", "mixer",
                                          "report", "total"}
    assert summary.report is None and summary.training.branches


# --------------------------------------------------------------- fast allocator (DESIGN §5)
def _child_env(**extra):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "HEATLAB_REEXECUTED")}
    env.update(extra)
    return env


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc setting only on Linux")
def test_console_script_sets_the_allocator_setting_once():
    import subprocess
    import sys
    from pathlib import Path

    from heatlab.cli import GLIBC_TUNABLES

    script = Path(sys.executable).with_name("heatlab")
    done = subprocess.run([str(script), "--version"], env=_child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert heatlab.__version__ in done.stdout
    # what the process that finally runs the command sees (atexit does not run in a process that execs)
    probe = ("import atexit, os; atexit.register(lambda: print('SEEN', os.environ.get('GLIBC_TUNABLES', 'unset')));"
             "from heatlab.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", probe, "--version"], env=_child_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("SEEN") == 1 and f"SEEN {GLIBC_TUNABLES}" in done.stdout
    assert done.stdout.count(heatlab.__version__) == 1
    # a user's own setting wins and nothing is re-executed
    done = subprocess.run([sys.executable, "-c", probe, "--version"], env=_child_env(GLIBC_TUNABLES="glibc.malloc.arena_max=2"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "SEEN glibc.malloc.arena_max=2" in done.stdout
    done = subprocess.run([sys.executable, "-m", "heatlab", "--version"], env=_child_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and heatlab.__version__ in done.stdout, done.stderr
