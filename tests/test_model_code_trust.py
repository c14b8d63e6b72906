"""A run folder or a weights file never makes heatlab run code without the user's consent.

Hostile specs are planted in copies of the session's tiny run (made by the pipeline) with harmless
markers: ``os:system`` touching a marker file, and a ``file.py:fn`` builder whose import writes one.
Every stage that rebuilds a model must refuse them in one sentence with the marker absent;
``--trust-model-code`` (or ``trust_model_code=True``) rebuilds a legitimately recorded file builder,
and a file whose bytes changed is refused before it is imported.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
from typer.testing import CliRunner

from heatlab.cli import app
from heatlab.errors import HeatlabError

runner = CliRunner()
STAGES = ["model/base", "model/branch-00"]

#: A builder that writes a marker when its file runs and then builds the run's own cellcnn.
GOOD_BUILDER = """
from pathlib import Path
Path({marker!r}).write_text("imported")

def build(*, num_classes, in_channels, **kw):
    from heatlab.models.zoo import create
    return create("cellcnn", num_classes=num_classes, in_channels=in_channels, **kw)
"""


def _spec(run: Path, stage: str = "model/branch-00") -> dict:
    return json.loads((run / stage / "model.json").read_text())["spec"]


def _plant(run: Path, spec: object) -> None:
    """Write ``spec`` into the model.json of every stage of ``run``."""
    for stage in STAGES:
        path = run / stage / "model.json"
        info = json.loads(path.read_text())
        info["spec"] = spec
        path.write_text(json.dumps(info))


@pytest.fixture()
def run(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def _system_spec(run: Path, marker: Path) -> dict:
    return {**_spec(run), "name": "os:system", "command": f"touch '{marker}'"}


def _file_spec(run: Path, tmp_path: Path, marker: Path, *, sha: str | None = None) -> dict:
    """A recorded file builder (absolute path, sha256 of its bytes unless ``sha`` is given)."""
    path = tmp_path / "model_code.py"
    path.write_text(GOOD_BUILDER.format(marker=str(marker)))
    spec = {**_spec(run), "name": f"{path.resolve()}:build",
            "file_sha256": sha or hashlib.sha256(path.read_bytes()).hexdigest()}
    return spec


def _refused(result, marker: Path, *words: str) -> str:
    """The one error sentence of a refused command (checked: non-zero exit, no traceback, no marker)."""
    assert not marker.exists(), "the run's code ran"
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("."), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _explain_source(run: Path) -> str:
    """The run's dataset, as explain takes it."""
    return json.loads((run / "config.json").read_text())["data_root"]


def _args(stage: str, run: Path, tmp_path: Path) -> list[str]:
    return {
        "evaluate": ["evaluate", str(run), "--methods", "Saliency"],
        "ax": ["ax", str(run), "--methods", "Saliency"],
        "gax": ["gax", str(run), "--first-n-correct", "1", "--max-steps", "1"],
        "lrp-filters": ["lrp-filters", str(run), "--filters", "c0.6"],
        "mixer": ["mixer", str(run), "--seeds", "1", "--epochs", "1", "--settings", "none", "--train-samples", "4",
                  "--test-samples", "4"],
        "explain": ["explain", _explain_source(run), "--run", str(run), "--out", str(tmp_path / "explained"), "--limit", "1"],
    }[stage]


STAGE_NAMES = ["evaluate", "ax", "gax", "lrp-filters", "mixer", "explain"]


# ------------------------------------------------------------------------------ CLI, every stage
@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_stage_refuses_os_system_named_by_the_run(run, tmp_path, stage):
    marker = tmp_path / "MARKER"
    _plant(run, _system_spec(run, marker))
    result = runner.invoke(app, _args(stage, run, tmp_path))
    line = _refused(result, marker, "names model code 'os:system'", "--trust-model-code")
    assert str(run / "model") in line


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_stage_refuses_a_file_builder_named_by_the_run(run, tmp_path, stage):
    marker = tmp_path / "MARKER"
    _plant(run, _file_spec(run, tmp_path, marker))
    result = runner.invoke(app, _args(stage, run, tmp_path))
    _refused(result, marker, "model_code.py:build'", "rerun with --trust-model-code if you trust that code")


def test_trusted_file_builder_is_rebuilt_and_a_changed_one_is_refused_before_import(run, tmp_path):
    marker = tmp_path / "MARKER"
    spec = _file_spec(run, tmp_path, marker)
    _plant(run, spec)
    result = runner.invoke(app, ["evaluate", str(run), "--methods", "Saliency", "--trust-model-code"])
    assert result.exit_code == 0, result.output
    assert marker.read_text() == "imported"  # the recorded code ran because the user said so
    marker.unlink()
    _plant(run, {**spec, "file_sha256": "0" * 64})  # the file is not the one the run recorded
    result = runner.invoke(app, ["evaluate", str(run), "--methods", "Saliency", "--split", "val",
                                 "--trust-model-code"])
    _refused(result, marker, "changed since the model was built")


def test_trusted_code_that_returns_no_module_is_one_sentence(run, tmp_path):
    """With consent the named code runs (the user's call); a builder returning no module is one sentence."""
    marker = tmp_path / "MARKER"
    _plant(run, _system_spec(run, marker))
    result = runner.invoke(app, ["evaluate", str(run), "--methods", "Saliency", "--trust-model-code"])
    assert result.exit_code != 0 and "not a torch.nn.Module" in result.stderr, result.output


# ------------------------------------------------------------------------------------- Python API
def test_python_api_refuses_by_default_and_rebuilds_with_consent(run, tmp_path):
    from heatlab.run.evaluate import evaluate_run
    from heatlab.run.explain import explain_run
    from heatlab.run.rundir import RunDir, load_branch

    marker = tmp_path / "MARKER"
    file_spec = _file_spec(run, tmp_path, marker)
    _plant(run, _system_spec(run, marker))
    calls = [lambda: load_branch(run, 0), lambda: RunDir(run).load_model("branch-00"),
             lambda: evaluate_run(run, methods="Saliency"),
             lambda: explain_run(_explain_source(run), tmp_path / "out", run=run, limit=1)]
    for call in calls:
        with pytest.raises(HeatlabError, match=r"names model code 'os:system'; rerun with trust_model_code=True"):
            call()
        assert not marker.exists()
    _plant(run, file_spec)
    with pytest.raises(HeatlabError, match="names model code"):
        load_branch(run, 0)
    assert not marker.exists()
    model = RunDir(run, trust_model_code=True).load_model(0)
    assert marker.exists() and model.heatlab_spec["name"] == _spec(run)["name"]


def test_a_changed_file_is_refused_before_it_runs(run, tmp_path):
    from heatlab.run.rundir import load_branch

    marker = tmp_path / "MARKER"
    spec = _file_spec(run, tmp_path, marker)
    _plant(run, {**spec, "file_sha256": hashlib.sha256(b"another file").hexdigest()})
    with pytest.raises(HeatlabError, match="changed since the model was built"):
        load_branch(run, 0, trust_model_code=True)
    assert not marker.exists()


def test_the_hashed_bytes_are_the_bytes_that_run(tmp_path, monkeypatch):
    """The file is read once: a swap after the sha256 check (here: a second read_bytes) cannot run."""
    from heatlab.models import external

    path = tmp_path / "swap.py"
    path.write_text("def build(*, num_classes, in_channels):\n    import torch\n    return torch.nn.Linear(1, num_classes)\n")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    marker = tmp_path / "MARKER"
    real = Path.read_bytes
    reads = []

    def read_then_swap(self):
        data = real(self)
        if self == path.resolve():
            reads.append(1)
            path.write_text(f"open({str(marker)!r}, 'w').write('swapped')\n")
        return data

    monkeypatch.setattr(Path, "read_bytes", read_then_swap)
    found = external.resolve(f"{path}:build", file_sha256=sha)
    assert found.build(num_classes=2, in_channels=1).out_features == 2
    assert not marker.exists() and len(reads) == 1


# ---------------------------------------------------------------------------------- weights files
def _weights_with_spec(run: Path, tmp_path: Path, spec: dict) -> Path:
    tensors = safetensors.torch.load_file(str(run / "model" / "branch-00" / "weights.safetensors"))
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(tensors, str(path), metadata={"heatlab_spec": json.dumps(spec)})
    return path


@pytest.mark.parametrize("kind", ["os", "file"])
def test_weights_metadata_naming_code_is_not_run(run, tmp_path, kind):
    from heatlab.run.explain import explain_run

    marker = tmp_path / "MARKER"
    spec = _system_spec(run, marker) if kind == "os" else _file_spec(run, tmp_path, marker)
    weights = _weights_with_spec(run, tmp_path, spec)
    source = _explain_source(run)
    result = runner.invoke(app, ["explain", source, "--weights", str(weights), "--out", str(tmp_path / "o"),
                                 "--limit", "1"])
    _refused(result, marker, f"The heatlab_spec metadata of '{weights}' names model code", "--trust-model-code")
    with pytest.raises(HeatlabError, match="names model code"):
        explain_run(source, tmp_path / "o", weights=weights, limit=1)
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_weights_metadata_naming_the_code_the_user_passes_again_is_rebuilt(run, tmp_path):
    marker = tmp_path / "MARKER"
    spec = _file_spec(run, tmp_path, marker)
    weights = _weights_with_spec(run, tmp_path, spec)
    code = tmp_path / "model_code.py"
    result = runner.invoke(app, ["explain", _explain_source(run), "--weights", str(weights), "--model",
                                 f"{code}:build", "--out", str(tmp_path / "o"), "--limit", "1",
                                 "--methods", "Saliency"])
    assert result.exit_code == 0, result.output
    assert marker.exists() and (tmp_path / "o" / "attributions.safetensors").is_file()


# ---------------------------------------------------------------------------- damaged model.json
def _damage(run: Path, how: str) -> None:
    path = run / "model" / "branch-00" / "model.json"
    info = json.loads(path.read_text())
    spec = info["spec"]
    damaged = {
        "list": [info],
        "spec-string": {**info, "spec": "cellcnn"},
        "no-name": {**info, "spec": {k: v for k, v in spec.items() if k != "name"}},
        "name-number": {**info, "spec": {**spec, "name": 7}},
        "classes-1e10": {**info, "spec": {**spec, "num_classes": 1e10}},
        "classes-huge-int": {**info, "spec": {**spec, "num_classes": 10**10}},
        "classes-abc": {**info, "spec": {**spec, "num_classes": "abc"}},
        "channels-0": {**info, "spec": {**spec, "in_channels": 0}},
        "unknown-key": {**info, "spec": {**spec, "backbone_weights": "/etc/passwd"}},
        "widths-text": {**info, "spec": {**spec, "widths": "wide"}},
        "widths-huge": {**info, "spec": {**spec, "widths": [10**9, 10**9]}},
        "widths-product": {**info, "spec": {**spec, "widths": [65_536] * 5}},  # each in range, 1.5e11 numbers
    }[how]
    for stage in STAGES:
        (run / stage / "model.json").write_text(json.dumps(damaged))


@pytest.mark.parametrize("how", ["list", "spec-string", "no-name", "name-number", "classes-1e10", "classes-huge-int",
                                 "classes-abc", "channels-0", "unknown-key", "widths-text", "widths-huge",
                                 "widths-product"])
def test_damaged_model_json_is_one_sentence_naming_the_file(run, tmp_path, how):
    _damage(run, how)
    result = runner.invoke(app, ["evaluate", str(run), "--methods", "Saliency"])
    line = _refused(result, tmp_path / "MARKER", "model.json'", "train the model again or restore the file")
    assert str(run / "model") in line


def test_a_dataset_plugin_named_by_the_run_is_not_loaded_without_consent(tiny_run, tmp_path, monkeypatch):
    """config.json's data_root may name a dataset only an installed entry point provides; opening the
    run must not load that entry point unless the user says --trust-model-code."""
    import json
    import shutil

    from heatlab.data import registry
    from heatlab.errors import HeatlabError
    from heatlab.run.rundir import RunDir

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    config["data_root"] = "someplugin:/data"
    (run / "config.json").write_text(json.dumps(config))
    looked_up = []
    monkeypatch.setattr(registry, "dataset_registry", lambda: looked_up.append(1) or registry.DATASETS)
    with pytest.raises(HeatlabError, match="entry point can open; rerun with --trust-model-code"):
        RunDir(run).open_data("test")
    assert looked_up == []  # the plugin was never looked up, so never imported
    with pytest.raises(HeatlabError, match="nor a dataset spec"):  # with consent it is looked up (and absent here)
        RunDir(run, trust_model_code=True).open_data("test")
    assert looked_up
