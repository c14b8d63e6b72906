"""The Ray backend: the same units as the local backend on a local Ray cluster, the same files.

One local cluster (2 CPUs) serves the module. Stages defined here travel to the workers by value
(Ray's cloudpickle), so a test can make a unit fail on its first try or kill its worker.
"""

from __future__ import annotations

import shutil
import sys

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
    evaluate_run(run, methods=METHODS, batch_size=7)
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
    evaluate_run(run, methods=METHODS, batch_size=7, backend=backend, progress=lambda t, d, n: seen.append(d))
    _same_files(local, run)
    summary = backend.summary()
    assert summary["units"] == 4 and summary["workers"] == 2 and summary["retried"] == 0 and seen[-1] == 4
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
    assert len(list((run / "tables" / "parts").rglob("*.done.json"))) == 2
    seen = []
    evaluate_run(run, methods=METHODS, batch_size=7, backend=make_backend("ray", workers=2),
                 progress=lambda t, d, n: seen.append(d))
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
