"""One writer per run folder (the run's lock) and completion markers that name the model they used."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from heatlab.cli import app
from heatlab.run import lock
from heatlab.run.evaluate import evaluate_run
from heatlab.run.rundir import RunDir

runner = CliRunner()
# Started in a child: import everything, then wait for the go file, so two children race for real.
RACER = """
import sys, time
from pathlib import Path
from heatlab.cli import app
import heatlab.run.evaluate
go = Path(sys.argv[1])
Path(sys.argv[2]).touch()
while not go.exists():
    time.sleep(0.005)
app(args=sys.argv[3:], prog_name="heatlab")
"""
# Holds the lock file argv[1] with a record naming pid argv[2], until argv[3] exists.
HOLDER = """
import fcntl, json, os, sys, time
from pathlib import Path
from heatlab.run.lock import HOST
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": int(sys.argv[2]), "host": HOST, "command": "heatlab evaluate", "since": "then"}).encode())
print("held", flush=True)
while not Path(sys.argv[3]).exists():
    time.sleep(0.01)
"""


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "HEATLAB_REEXECUTED")}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    shutil.copytree(tiny_run, tmp_path / "run")
    return tmp_path / "run"


def _methods(run: Path) -> set[str]:
    return set(pd.read_parquet(run / "tables" / "five_band.parquet")["method"])


def _wait_for(predicate, what: str, limit: float = 300.0) -> None:
    """Poll until ``predicate()``; the limit only keeps a broken build from hanging the suite."""
    end = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_two_concurrent_evaluates_keep_both_methods(run, tmp_path):
    go, ready = tmp_path / "go", [tmp_path / "ready-0", tmp_path / "ready-1"]
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(go), str(r), "evaluate", str(run), "--methods", m],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r, m in zip(ready, ("Saliency", "InputXGradient"))]
    _wait_for(lambda: all(r.exists() for r in ready), "both children to import")
    go.touch()  # both start together
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert _methods(run) == {"Saliency", "InputXGradient"}
    loc = pd.read_parquet(run / "tables" / "localisation.parquet")
    assert set(loc["method"]) == {"Saliency", "InputXGradient"}
    assert set(json.loads((run / "evaluate.json").read_text())["methods"]) == {"Saliency", "InputXGradient"}
    assert not RunDir(run).lock_path.exists()  # released and removed


def test_a_second_writer_waits_for_the_first_then_lands(run, tmp_path):
    err = tmp_path / "err.txt"
    with RunDir(run).writing("evaluate"):
        with open(err, "w") as stderr:
            child = subprocess.Popen([sys.executable, "-m", "heatlab", "evaluate", str(run), "--methods", "Saliency"],
                                     env=_env(), stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        _wait_for(lambda: "waiting for" in err.read_text(), "the waiting line")
        assert child.poll() is None  # still waiting: nothing was written while we held the lock
        assert not (run / "evaluate.json").exists()
        line, since = err.read_text().strip(), lock.holder(RunDir(run).lock_path)["since"]
    assert child.wait(timeout=600) == 0
    assert line == f"waiting for {run}: held by pid {os.getpid()} on {lock.HOST} (heatlab evaluate) since {since}"
    assert err.read_text().count("waiting for") == 1  # said once, however long it waited
    assert _methods(run) == {"Saliency"}


def test_a_lock_whose_holder_is_dead_does_not_block(run, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that ran on this host and is gone
    release = tmp_path / "release"
    # The lock is still held (a child that inherited it), but the record names the dead process.
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(RunDir(run).lock_path), str(dead.pid), str(release)],
                              env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        said = []
        with lock.holding(RunDir(run).lock_path, "heatlab evaluate", notify=said.append):
            assert lock.holder(RunDir(run).lock_path)["pid"] == os.getpid()
        assert said == []  # a stale lock is broken without waiting
        evaluate_run(run, methods="Saliency")
        assert _methods(run) == {"Saliency"} and not RunDir(run).lock_path.exists()
    finally:
        release.touch()
        holder.wait(timeout=60)


def test_a_lock_file_left_by_a_killed_run_does_not_block(run):
    RunDir(run).lock_path.write_text(json.dumps({"pid": 2**22 + 7, "host": lock.HOST, "command": "heatlab train"}))
    evaluate_run(run, methods="Saliency")
    assert _methods(run) == {"Saliency"} and not RunDir(run).lock_path.exists()


def test_the_lock_is_reentrant_in_one_process(run):
    path = RunDir(run).lock_path
    with RunDir(run).writing("mixer"):
        with RunDir(run).writing("mixer-ig"):
            assert lock.holder(path)["command"] == "heatlab mixer"
        assert path.exists()
    assert not path.exists()


def _swap_weights(run: Path) -> None:
    """Give branch-00 the base model's (valid) weights and a model.json that records them."""
    branch, base = run / "model" / "branch-00", run / "model" / "base"
    shutil.copy(base / "weights.safetensors", branch / "weights.safetensors")
    info = json.loads((branch / "model.json").read_text())
    info["weights_sha256"] = json.loads((base / "model.json").read_text())["weights_sha256"]
    (branch / "model.json").write_text(json.dumps(info))


def test_replaced_weights_are_evaluated_again(run):
    evaluate_run(run, methods="Saliency")
    before = pd.read_parquet(run / "tables" / "localisation.parquet")
    marker = next((run / "tables" / "parts" / "evaluate-test").rglob("*.done.json"))
    assert json.loads(marker.read_text())["settings"]["weights_sha256"] == RunDir(run).weights_sha256("branch-00")
    _swap_weights(run)
    evaluate_run(run, methods="Saliency")
    after = pd.read_parquet(run / "tables" / "localisation.parquet")
    assert json.loads(marker.read_text())["settings"]["weights_sha256"] == RunDir(run).weights_sha256("branch-00")
    # What a fresh evaluation of the new weights gives (the known answer), unlike the old table.
    fresh = run.parent / "fresh"
    shutil.copytree(run, fresh)
    shutil.rmtree(fresh / "tables" / "parts")
    evaluate_run(fresh, methods="Saliency", replace=True)
    pd.testing.assert_frame_equal(after, pd.read_parquet(fresh / "tables" / "localisation.parquet"))
    assert not before.equals(after)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_weights_are_one_sentence(run, damage):
    evaluate_run(run, methods="Saliency")
    weights = run / "model" / "branch-00" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        data[-5] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    weights.write_bytes(bytes(data))
    tables = {p: p.read_bytes() for p in (run / "tables").glob("*.parquet")}
    result = runner.invoke(app, ["evaluate", str(run), "--methods", "Saliency"])
    assert result.exit_code != 0
    message = result.stderr.strip()
    assert message == (f"error: Weights '{weights}' do not match the sha256 recorded in its model.json (changed or "
                       f"damaged); train branch-00 again (delete '{weights.parent}' and run `heatlab train --out "
                       f"{run}` with the run's settings) or restore the file."), message
    assert "Traceback" not in result.output
    assert tables == {p: p.read_bytes() for p in (run / "tables").glob("*.parquet")}  # nothing rewritten
    assert not RunDir(run).lock_path.exists()
