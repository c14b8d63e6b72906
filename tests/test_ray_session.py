"""One local Ray instance per command: a command of several stages on ``--backend ray`` without an
address starts Ray once (its own module: no cluster of another test may be running)."""

from __future__ import annotations

import shutil
import sys

import pytest

ray = pytest.importorskip("ray")

from heatlab.run import ray_local  # noqa: E402
from heatlab.run.runner import make_backend  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")


def test_mixer_on_a_local_ray_starts_it_once_for_its_three_stages(tiny_run, tmp_path, monkeypatch):
    from heatlab.improve.mixer import MixerConfig
    from heatlab.run.mixer import mixer_run

    if ray.is_initialized():
        pytest.skip("a Ray cluster of this process is running: the backend would join it")
    starts, sessions = [], []
    real = ray_local.LocalRay.start

    def counted(self, **options):
        starts.append(options)
        sessions.append(real(self, **options))
        return sessions[-1]

    monkeypatch.setattr(ray_local.LocalRay, "start", counted)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    backend = make_backend("ray", workers=1)
    mixer_run(run, settings="true-class", seeds=1, n_steps=2, test_samples=4, train_samples=8,
              config=MixerConfig(epochs=1, patience=1, batch_size=8), backend=backend)
    assert backend.summary()["units"] == 2 + 1 + 1  # IG (train and test shard), wrong-label IG, one Mixer
    assert len(starts) == 1 and starts[0]["num_cpus"] == 1  # the old code started one per stage: 3
    assert not ray.is_initialized() and not sessions[0].exists()  # stopped when the command ended


def test_a_command_with_backend_flags_runs_inside_its_backends_session(monkeypatch):
    """Every command with --backend (evaluate runs two stages) holds one session: one local Ray at most."""
    import contextlib

    from heatlab import cli_common

    events = []

    class Backend:
        @contextlib.contextmanager
        def session(self):
            events.append("open")
            yield self
            events.append("close")

    monkeypatch.setattr(cli_common, "backend_options", lambda *args: Backend())

    @cli_common.backend_flags
    def command(runner=None):
        events.append("run")

    command(backend="ray")
    assert events == ["open", "run", "close"]
