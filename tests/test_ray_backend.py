"""The Ray backend: the same units as the local backend on a local Ray cluster, the same files.

One local cluster (2 CPUs) serves the module. Stages defined here travel to the workers by value
(Ray's cloudpickle), so a test can make a unit fail on its first try or kill its worker.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

ray = pytest.importorskip("ray")

from heatlab.errors import HeatlabError  # noqa: E402
from heatlab.run.ax import ax_run  # noqa: E402
from heatlab.run.evaluate import Evaluate, evaluate_run  # noqa: E402
from heatlab.run.rundir import RunDir  # noqa: E402
from heatlab.run.runner import make_backend, run_stage  # noqa: E402

METHODS = "Saliency,GradientShap"
pytestmark = pytest.mark.xdist_group("ray")  # one xdist worker, one local cluster (make test: --dist loadgroup)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def local(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("local") / "run"
    shutil.copytree(tiny_run, run)
    evaluate_run(run, methods=METHODS, batch_size=7, metric_set="fast")  # the cells have truth: ask for the no-truth set
    ax_run(run, methods="Saliency", batch_size=7)
    return run


def _tables(run, names=("five_band", "roc", "localisation", "co", "co_gap")):
    return {k: pd.read_parquet(run / "tables" / f"{k}.parquet") for k in names if (run / "tables" / f"{k}.parquet").exists()}


def _same_files(a, b, names=("five_band", "roc", "localisation")):
    ta, tb = _tables(a, names), _tables(b, names)
    assert set(ta) == set(tb) and ta
    for k in ta:
        pd.testing.assert_frame_equal(ta[k], tb[k], check_exact=True)
    for path in sorted((a / "heatmaps").rglob("*.safetensors")):
        other = load_file(str(b / path.relative_to(a)))
        mine = load_file(str(path))
        assert mine.keys() == other.keys() and all(mine[k].equal(other[k]) for k in mine), path


def test_ray_writes_the_tables_the_local_backend_writes(cluster, local, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    backend = make_backend("ray", workers=2)
    seen = []
    evaluate_run(run, methods=METHODS, batch_size=7, backend=backend, progress=lambda t, d, n: seen.append(d),
                 metric_set="fast")
    _same_files(local, run, ("five_band", "roc", "localisation", "no_truth", "no_truth_curves"))
    summary = backend.summary()
    # evaluate's 4 units (2 methods × 2 shards), which also score the fast set for the no-truth stage, then
    # the no-truth stage's 2 left (Random × 2 shards) of its 6
    assert summary["units"] == 6 and summary["workers"] == 2 and summary["retried"] == 0 and seen[-1] == 6
    ax_run(run, methods="Saliency", batch_size=7, backend=make_backend("ray", workers=2))
    _same_files(local, run, ("co", "co_gap"))


class _FirstTryFails(Evaluate):
    """Evaluate whose unit (Saliency, shard 1) raises on its first try, or kills its worker."""

    flag_dir = None
    how = "raise"

    def run_unit(self, work, unit):
        flag = self.flag_dir / f"{unit.method}-{unit.shard}"
        if unit.method == "Saliency" and unit.shard == 1 and not flag.exists():
            flag.touch()
            if self.how == "die":
                import os

                os._exit(1)
            raise RuntimeError("flaky disk")
        return super().run_unit(work, unit)


def _flaky(run, tmp_path, how):
    stage = _FirstTryFails(RunDir(run), methods=METHODS, batch_size=7)
    stage.flag_dir, stage.how = tmp_path, how
    return stage


@pytest.mark.parametrize("how", ["raise", "die"])
def test_a_failed_unit_is_retried_and_a_lost_worker_replaced(cluster, local, tiny_run, tmp_path, how):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    backend = make_backend("ray", workers=2)
    run_stage(_flaky(run, tmp_path, how), backend=backend)
    _same_files(local, run)
    summary = backend.summary()
    assert summary["units"] == 4
    assert (summary["retried"], summary["workers_replaced"]) == ((1, 0) if how == "raise" else (0, 1))


def test_a_unit_that_keeps_failing_stops_the_run_with_one_sentence(cluster, tiny_run, tmp_path):
    class Broken(Evaluate):
        def run_unit(self, work, unit):
            raise RuntimeError("disk on fire")

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with pytest.raises(HeatlabError, match=r"Unit \w+ of branch-00, test shard \d \(evaluate\) failed 2 times on Ray "
                                           r"workers \(RuntimeError: disk on fire\); fix the cause"):
        run_stage(Broken(RunDir(run), methods="Saliency", batch_size=7), backend=make_backend("ray", max_retries=1))
    assert not (run / "tables" / "five_band.parquet").exists()


def test_a_driver_stopped_part_way_resumes_to_identical_tables(cluster, local, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)

    def stop_after_two(task, done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run, methods=METHODS, batch_size=7, backend=make_backend("ray", workers=2), progress=stop_after_two)
    assert len(list((run / "tables" / "parts" / "evaluate-test").rglob("*.done.json"))) == 2
    seen = []
    evaluate_run(run, methods=METHODS, batch_size=7, backend=make_backend("ray", workers=2),
                 progress=lambda t, d, n: t == "evaluate" and seen.append(d))
    assert seen == [2, 3, 4]  # only the two unfinished units ran again
    _same_files(local, run)


def test_bad_backend_options_are_one_sentence(monkeypatch):
    with pytest.raises(HeatlabError, match="Unknown backend 'spark'"):
        make_backend("spark")
    with pytest.raises(HeatlabError, match="workers is a Ray option; pass backend='ray' or drop it"):
        make_backend("local", workers=2)
    with pytest.raises(HeatlabError, match="workers must be a whole number"):
        make_backend("ray", workers=0)
    with pytest.raises(HeatlabError, match=r"No Ray cluster answers at '127.0.0.1:1' within 5 s"):
        make_backend("ray", address="127.0.0.1:1")
    with pytest.raises(HeatlabError, match="is not host:port"):
        make_backend("ray", address="nowhere")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    from heatlab.run.ray_backend import _import_ray

    with pytest.raises(HeatlabError, match=r"run pip install 'heatlab\[ray\]'"):
        _import_ray()


def test_a_real_cluster_passes_the_address_check_and_a_plain_socket_does_not(cluster):
    """Ray's GCS answers the HTTP/2 preface (it speaks gRPC); a server that accepts and stays silent
    is one sentence after the stated time-out, not a hang (in a subprocess, guarded by a timeout)."""
    from heatlab.run.ray_backend import _check_address

    _check_address(ray.get_runtime_context().gcs_address)  # no error: it is Ray
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        address = f"127.0.0.1:{server.getsockname()[1]}"
        done = subprocess.run([sys.executable, "-m", "heatlab", "evaluate", "no-such-run", "--backend", "ray",
                               "--address", address], capture_output=True, text=True, timeout=240)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"error: Something answers at '{address}' but not as a Ray cluster (no gRPC answer "
                                   "within 5 s); pass the address of the cluster's head (its GCS port, 6379 by default, "
                                   "or ray://host:10001) or 'auto'.")


def _alive(record: dict) -> list[int]:
    """The processes a driver record names (pid and start time) that still run, and any process
    whose command line names the record's session folder."""
    import psutil  # Ray's copy is on the path once ray is imported

    alive = []
    for proc in psutil.process_iter(["cmdline", "status", "create_time"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        named = [proc.pid, proc.info["create_time"]] in record["processes"]
        if named or any(record["session"] in part for part in proc.info["cmdline"] or ()):
            alive.append(proc.pid)
    return alive


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the machine has a GPU: the request is met")
def test_a_killed_driver_leaves_no_ray_process_after_the_next_run_which_refuses_a_gpu_it_lacks(tiny_run, tmp_path):
    """Driver A starts a local Ray and is killed with SIGKILL (Ray's agents outlive it); driver B,
    asking for a GPU on a machine without one, ends A's leftovers when it starts its own instance,
    then refuses before starting any worker and stops its instance. Both run in subprocesses
    guarded by timeouts (the old code hung on B)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    tmp = tempfile.mkdtemp(prefix="hl-", dir="/tmp")  # short: Ray's socket paths live below it
    root = Path(tmp) / f"heatlab-ray-{os.getuid()}"
    env = {**os.environ, "TMPDIR": tmp}
    try:
        a = subprocess.Popen([sys.executable, "-m", "heatlab", "evaluate", str(run), "--backend", "ray", "--workers", "1"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        path = root / "drivers" / f"{a.pid}.json"
        for _ in range(1200):  # at most 2 minutes for A to start its instance
            if path.is_file() or a.poll() is not None:
                break
            time.sleep(0.1)
        a.kill()
        a.wait(timeout=30)
        assert path.is_file(), "driver A recorded no local instance"
        record = json.loads(path.read_text())
        assert record["session"].startswith(str(root / "session_")) and record["processes"]
        b = subprocess.run([sys.executable, "-m", "heatlab", "evaluate", str(run), "--backend", "ray", "--gpus-per-worker", "1"],
                           env=env, capture_output=True, text=True, timeout=300)
        assert b.returncode == 2, b.stderr
        assert re.fullmatch(r"error: --gpus-per-worker 1 asks for GPUs but the Ray cluster has none \(\d+ CPUs and 0 GPUs "
                            r"on 1 node\); pass --gpus-per-worker 0 with --device cpu, or join a cluster with GPUs\.",
                            b.stderr.strip().splitlines()[-1]), b.stderr  # (after the bar: another item of issue 19)
        assert _alive(record) == [] and not path.exists() and not Path(record["session"]).exists()
        assert list(root.glob("session_*")) == [] and list(root.glob("drivers/*")) == []  # B stopped its own too
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Nodes:
    """A stand-in for the ``ray`` module's ``nodes()``: live nodes with the given resources."""

    def __init__(self, *resources):
        self.resources = resources

    def nodes(self):
        return [{"Alive": True, "Resources": r} for r in self.resources] + [{"Alive": False, "Resources": {"GPU": 8}}]


def test_worker_requests_are_checked_against_the_nodes_before_any_actor(tiny_run):
    from heatlab.run.ray_backend import RayBackend

    stage = Evaluate(RunDir(tiny_run), methods="Saliency", batch_size=7)
    cpu_only, two_gpus = _Nodes({"CPU": 2.0}), _Nodes({"CPU": 8.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 1.0})
    assert RayBackend()._fit(cpu_only, stage, 4) == 2  # default: as many workers as slots, at most one per unit
    assert RayBackend(workers=1)._fit(cpu_only, stage, 4) == 1
    assert RayBackend(gpus_per_worker=0.5)._fit(two_gpus, stage, 9) == 4  # 2 per GPU, 1 CPU each
    with pytest.raises(HeatlabError, match=r"^gpus_per_worker=1 asks for GPUs but the Ray cluster has none \(2 CPUs and 0 GPUs on 1 node\)"):
        RayBackend(gpus_per_worker=1)._fit(cpu_only, stage, 4)
    with pytest.raises(HeatlabError, match=r"^gpus_per_worker=2 is more than any node .*; pass gpus_per_worker=1 or less\.$"):
        RayBackend(gpus_per_worker=2)._fit(two_gpus, stage, 4)
    with pytest.raises(HeatlabError, match=r"can hold 2 workers of 1 CPU each \(2 CPUs and 0 GPUs on 1 node\), not 3; pass workers=2"):
        RayBackend(workers=3)._fit(cpu_only, stage, 4)  # the third actor would wait forever
    stage.device = "cuda"
    with pytest.raises(HeatlabError, match=r"device='cuda' on Ray workers needs GPUs reserved for them; pass gpus_per_worker=1"):
        RayBackend()._fit(cpu_only, stage, 4)


@pytest.mark.parametrize("gpus", [float("nan"), float("inf"), -1.0, 1.5])
def test_gpus_per_worker_must_be_a_share_ray_can_reserve(gpus):
    with pytest.raises(HeatlabError, match=r"^gpus_per_worker must be a finite number >= 0"):
        make_backend("ray", gpus_per_worker=gpus)
    assert make_backend("ray", gpus_per_worker=0.25).gpus == 0.25 and make_backend("ray", gpus_per_worker=2).gpus == 2


# ------------------------------------------------------------------------------- train and mixer
TRAIN_ARGS = {"epochs": 1, "branches": 2, "branch_epochs": 40, "batch_size": 10, "eval_every": 100, "n_l": 1, "seed": 3}


@pytest.fixture(scope="module")
def train_local(tmp_path_factory):
    """Cells and a run trained on them by the local backend, the driver on 2 torch threads (a unit runs on 1)."""
    import torch

    from heatlab.data.shards import write_cells
    from heatlab.models.training import TrainConfig
    from heatlab.run.training import train_run

    root = tmp_path_factory.mktemp("train")
    write_cells(root / "data", size=64, seed=3, shards={"train": 2, "val": 1, "test": 1}, shard_size=10)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # a sum split over 2 threads may round otherwise: units must not depend on it
    try:
        train_run(root / "data", root / "run", TrainConfig(**TRAIN_ARGS))
    finally:
        torch.set_num_threads(before)
    return root / "data", root / "run"


def _model_files(run) -> dict[str, str]:
    """sha256 of every file of the run's model folders (weights, model.json, steps, validations) and tables."""
    import hashlib

    files = [*sorted((run / "model").rglob("*.*")), run / "tables" / "training.parquet", run / "tables" / "validation.parquet"]
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_train_on_ray_writes_byte_identical_weights_to_local_training(cluster, train_local, tmp_path):
    from heatlab.models.training import TrainConfig
    from heatlab.run.training import train_run

    data, local = train_local
    backend = make_backend("ray", workers=2)
    summary = train_run(data, tmp_path / "run", TrainConfig(**TRAIN_ARGS), backend=backend)
    assert backend.summary()["units"] == 3 and backend.summary()["workers"] == 2  # the base, then 2 branches
    assert [b["branch"] for b in summary.branches] == [0, 1] and summary.skipped == []
    mine = _model_files(tmp_path / "run")
    assert len(mine) == 3 * 3 + 2 + 2 and mine == _model_files(local)  # weights, model.json, steps (+2 validations)


def test_a_train_driver_killed_on_ray_resumes_to_identical_weights(cluster, train_local, tmp_path):
    """`heatlab train --backend ray` (a subprocess joining the module's cluster) is killed with SIGKILL
    once the base model is written, while the branches train on the workers; the same training run
    again on Ray keeps the base and ends with the local backend's files."""
    from heatlab.models.training import TrainConfig
    from heatlab.run.rundir import list_branches
    from heatlab.run.training import train_run

    data, local = train_local
    run = tmp_path / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TRAIN_ARGS.items()]
    driver = subprocess.Popen([sys.executable, "-m", "heatlab", "train", "--data", str(data), "--out", str(run), *flags,
                               "--backend", "ray", "--address", ray.get_runtime_context().gcs_address, "--workers", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = run / "model" / "base" / "model.json"
    try:
        for _ in range(3000):  # at most 5 minutes to start, join and train the base
            if base.is_file() or driver.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        driver.kill()
        driver.wait(timeout=30)
    assert base.is_file() and list_branches(run) == []  # killed with the branches on the workers
    stamp = base.stat().st_mtime_ns
    summary = train_run(data, run, TrainConfig(**TRAIN_ARGS), backend=make_backend("ray", workers=2))
    assert summary.skipped == ["base"] and base.stat().st_mtime_ns == stamp
    assert _model_files(run) == _model_files(local)


def test_mixer_on_ray_writes_the_tables_the_local_backend_writes(cluster, tiny_run, tmp_path):
    """The local run's driver is on 2 torch threads: the units must not depend on that (they run on 1)."""
    import torch

    from heatlab.improve.mixer import MixerConfig
    from heatlab.run.mixer import mixer_run

    small = {"settings": "true-class,none", "seeds": 2, "n_steps": 4, "test_samples": 12,
             "config": MixerConfig(epochs=2, patience=2, batch_size=8)}
    runs = {}
    for name, backend in (("local", None), ("ray", make_backend("ray", workers=2))):
        runs[name] = tmp_path / name
        shutil.copytree(tiny_run, runs[name])
        before = torch.get_num_threads()
        torch.set_num_threads(2 if backend is None else before)
        try:
            summary = mixer_run(runs[name], **small, backend=backend)
        finally:
            torch.set_num_threads(before)
    assert backend.summary()["units"] == 4 + 2 + 4  # IG shards (train 2, test 2 for 12 samples), wrong-label IG, 2x2 Mixers
    for table in ("mixer", "mixer_predictions", "mixer_history"):
        pd.testing.assert_frame_equal(pd.read_parquet(runs["local"] / "tables" / f"{table}.parquet"),
                                      pd.read_parquet(runs["ray"] / "tables" / f"{table}.parquet"), check_exact=True)
    for path in sorted((runs["local"] / "mixer").rglob("*.safetensors")):
        assert path.read_bytes() == (runs["ray"] / path.relative_to(runs["local"])).read_bytes(), path
    assert json.loads((runs["ray"] / "mixer.json").read_text())["settings"] == summary.settings


# ------------------------------------------------------------------------------- lrp-study and explain
STUDY_ARGS = {"epochs": 2, "batch_size": 256, "every": 4, "eval_samples": 8, "heatmap_samples": 2, "filters": "c0.2",
              "seed": 2}


def test_lrp_study_on_ray_writes_byte_identical_files_to_the_local_backend(cluster, tmp_path):
    """One unit per epoch (each from the checkpoint the one before wrote), then the heatmaps; the local
    driver on 2 torch threads (a unit runs on 1), so the weights must not depend on the driver's setting."""
    import torch

    from heatlab.run.lrp_study import lrp_study

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        local = lrp_study("digits", tmp_path / "local", **STUDY_ARGS)
    finally:
        torch.set_num_threads(before)
    backend = make_backend("ray", workers=2)
    remote = lrp_study("digits", tmp_path / "ray", backend=backend, **STUDY_ARGS)
    assert backend.summary()["units"] == 3 and remote == local  # epoch 0, epoch 1, the heatmaps
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "local" / "tables" / "lrp_study.parquet"),
                                  pd.read_parquet(tmp_path / "ray" / "tables" / "lrp_study.parquet"), check_exact=True)
    for name in ("model/weights.safetensors", "lrp_study/heatmaps.safetensors"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name
    assert not (tmp_path / "ray" / "lrp_study" / "checkpoint.safetensors").exists()


def test_explain_on_ray_writes_the_attributions_the_local_backend_writes(cluster, tiny_run, tmp_path, monkeypatch):
    """The local driver on 3 torch threads, a Ray worker on 1: the units must not depend on either (Stage.threads)."""
    import torch

    from heatlab.run import explain

    monkeypatch.setattr(explain, "SHARD", 4)  # 10 images: shards of 4, 4, 2 per method
    args = dict(methods="Saliency,IntegratedGradients", run=tiny_run, branch="0", limit=10, batch_size=2)
    data = json.loads((tiny_run / "config.json").read_text())["data_root"]
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # a gradient summed over 3 threads differs in a few values from one over 1
    try:
        local = explain.explain_run(data, tmp_path / "local", **args)
    finally:
        torch.set_num_threads(before)
    backend = make_backend("ray", workers=2)
    remote = explain.explain_run(data, tmp_path / "ray", backend=backend, **args)
    assert backend.summary()["units"] == 6 and dataclasses.replace(remote, path="") == dataclasses.replace(local, path="")
    assert (tmp_path / "local" / "attributions.safetensors").read_bytes() == \
        (tmp_path / "ray" / "attributions.safetensors").read_bytes()
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["attributions.safetensors"]  # parts removed
