"""Issue 23 item 3: a model without trained weights gets one warning line on every stage that explains
or scores it, and its page shows it. Besides `explain --model` (tests/test_explain_cmd.py), such a model
reaches a stage as the base model of `train --epochs 0` without --weights (explain --run, mixer and gax
take --branch base) and as the model of `lrp-study --epochs 0`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from heatlab.cli import app

SENTENCE = "has random weights (no --weights given); its explanations say nothing about a trained model"


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """A run whose base model never trained (0 epochs, no --weights) and one trained branch."""
    from heatlab.data.shards import write_cells
    from heatlab.models.training import TrainConfig
    from heatlab.run.training import train_run

    root = tmp_path_factory.mktemp("untrained")
    write_cells(root / "data", size=64, seed=3, shards={"train": 1, "val": 1, "test": 1}, shard_size=10)
    train_run(root / "data", root / "run", TrainConfig(epochs=0, branches=1, branch_epochs=1, batch_size=10,
                                                       eval_every=1, n_l=1, seed=3))
    return root / "run"


def _warned(args, name):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert flat.count("warning:") == 1 and flat.count(f"warning: {name} {SENTENCE}") == 1, flat
    return flat


def test_every_stage_warns_once_about_an_untrained_model_and_its_page_shows_it(untrained_run, tmp_path):
    from heatlab.report.html import build_report

    run = untrained_run
    data = json.loads((run / "config.json").read_text())["data_root"]
    _warned(["explain", data, "--run", run, "--branch", "base", "--limit", 2, "--methods", "Saliency",
             "--out", tmp_path / "explained"], "cellcnn")
    assert SENTENCE in (tmp_path / "explained" / "index.html").read_text(encoding="utf-8")
    _warned(["mixer", run, "--branch", "base", "--settings", "none", "--seeds", 1, "--epochs", 1, "--patience", 1,
             "--train-samples", 8, "--test-samples", 4], f"base of {run}")
    _warned(["gax", run, "--branch", "base", "--first-n-correct", 1, "--max-steps", 2, "--snapshot-every", 1],
            f"base of {run}")
    _warned(["lrp-study", "--out", run / "lrp-study", "--epochs", 0, "--eval-samples", 4, "--heatmap-samples", 1,
             "--filters", "c0.2"], "smallnet trained for 0 epochs")
    page = " ".join(build_report(run).read_text(encoding="utf-8").split())
    for name in ("base of this run", "smallnet trained for 0 epochs"):
        assert f"Warning: {name} {SENTENCE}." in page, name
    assert page.count(SENTENCE) == 3  # the Mixer, GAX and the LRP study
    viewer = " ".join((run / "report" / "gax.html").read_text(encoding="utf-8").split())
    assert viewer.count(f"Warning: base of this run {SENTENCE}.") == 1  # the GAX viewer repeats its section's note
    # a trained branch: no warning anywhere
    result = CliRunner().invoke(app, ["explain", data, "--run", str(run), "--branch", "0", "--limit", "2",
                                      "--methods", "Saliency", "--out", str(tmp_path / "trained")])
    assert result.exit_code == 0 and "warning:" not in result.output, result.output
