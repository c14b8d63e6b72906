"""The Ray backend of the resumable-stage runner: the same units, run by actors across a cluster.

One actor per worker holds a :class:`~heatlab.run.runner.Work` (so each branch model is loaded
once per actor and kept while that actor's units use it), reads shards from the run folder, and
returns a unit's pieces to the driver; the driver alone writes them (pieces, then the marker), so
the files are those a local run writes, and a driver killed and started again resumes from them.
Units are handed out in :func:`~heatlab.run.runner.execution_order`, one at a time to whichever
actor is free; a unit of a later wave (e.g. a training branch) only once every unit of the earlier
waves (the base model) is written.

Failures: a unit whose code raises on a worker is tried again up to ``max_retries`` times, then
the run stops with one sentence naming the unit (a HeatlabError, i.e. bad input, stops it at once); a worker that dies (its process or node lost)
is replaced and its unit handed out again, without counting as a try. Nothing of a lost unit was
written, so no row is lost or doubled.

Ray is an optional extra (``pip install 'heatlab[ray]'``); this module imports it only when a
backend is built.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
import time
from collections import deque
from typing import Any, Callable, Iterator, Sequence

import torch

from heatlab.errors import HeatlabError
from heatlab.run.ray_local import LocalRay
from heatlab.run.runner import Deliver, Stage, Unit, Work, call_unit, execution_order

_CONNECT_TIMEOUT = 5.0  # seconds to wait for a cluster address to answer


def _import_ray():
    try:
        import ray
    except ImportError:
        raise HeatlabError("The Ray backend needs Ray, which is not installed; run pip install 'heatlab[ray]'.") from None
    return ray


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + empty SETTINGS


def _check_address(address: str) -> None:
    """One sentence within :data:`_CONNECT_TIMEOUT` s (instead of Ray's endless wait) when ``host:port``
    does not answer, or answers but does not speak Ray's protocol: Ray's GCS and client server speak
    gRPC, so they answer an HTTP/2 connection preface with a SETTINGS frame."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise HeatlabError(f"Ray address {address!r} is not host:port; pass e.g. address='10.0.0.1:6379' or 'auto'.")
    deadline = time.monotonic() + _CONNECT_TIMEOUT
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_TIMEOUT)
    except (OSError, OverflowError):
        raise HeatlabError(f"No Ray cluster answers at {address!r} within {_CONNECT_TIMEOUT:.0f} s; start one there with "
                           "`ray start --head` or pass the right address.") from None
    with sock:
        try:
            sock.sendall(_HTTP2_PREFACE)
            head = b""
            while len(head) < 9:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
        except OSError:  # timed out or reset
            pass
    if len(head) < 9 or head[3] != 4:  # frame type 4: SETTINGS
        raise HeatlabError(f"Something answers at {address!r} but not as a Ray cluster (no gRPC answer within "
                           f"{_CONNECT_TIMEOUT:.0f} s); pass the address of the cluster's head (its GCS port, 6379 by "
                           "default, or ray://host:10001) or 'auto'.")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (Ray's C++ core logs each connection retry there; Python errors still raise)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _Worker:
    """The actor: one Work per worker, kept across units (model and shard caches)."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.work = Work(stage.run, device=stage.device, batch_size=stage.batch_size)

    def ready(self) -> tuple[str, bool]:
        return socket.gethostname(), os.access(self.stage.shared_file(), os.R_OK)

    def run(self, unit: Unit) -> tuple[dict, float]:
        t0 = time.perf_counter()
        pieces = call_unit(self.stage, self.work, unit)
        return pieces, time.perf_counter() - t0


class RayBackend:
    """Schedule a stage's units on Ray actors (``workers`` of them, default: one per CPU Ray offers).

    ``address``: a running cluster (``host:port``, ``ray://host:port`` or ``"auto"``), checked within
    5 s; ``None`` joins the cluster this process already started, or starts a local one for each
    :meth:`run` (see :mod:`heatlab.run.ray_local`; ``note`` is told where its files are), or once for
    all the runs inside :meth:`session` (a command of several stages, e.g. the Mixer's three).
    ``gpus_per_worker`` reserves GPUs per actor (the stage's ``device`` decides where models run);
    a request the cluster's nodes cannot meet is refused before any actor starts. After :meth:`run`,
    :meth:`summary` tells units done, tries repeated, workers replaced, time per unit (on the worker)
    and the seconds the workers took to start (importing heatlab and torch in each).
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, gpus_per_worker: float | None = None,
                 max_retries: int | None = None, note: Callable[[str], None] | None = None):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise HeatlabError(f"workers must be a whole number of at least 1, got {workers!r}; pass e.g. workers=2.")
        gpus = 0.0 if gpus_per_worker is None else gpus_per_worker
        if (isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or gpus < 0
                or (gpus > 1 and gpus != int(gpus))):
            raise HeatlabError(f"gpus_per_worker must be a finite number >= 0, a fraction up to 1 or a whole number (as "
                               f"Ray shares GPUs), got {gpus_per_worker!r}; pass e.g. gpus_per_worker=1 or 0.5.")
        retries = 2 if max_retries is None else max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise HeatlabError(f"max_retries must be a whole number >= 0, got {max_retries!r}; pass e.g. max_retries=2.")
        self.address, self.workers, self.gpus, self.max_retries = address, workers, float(gpus), retries
        self.note, self._local, self._held = note, None, 0
        self.stats: dict[str, Any] = {"backend": self.name, "units": 0, "retried": 0, "workers_replaced": 0,
                                      "seconds_per_unit": None, "workers": 0,
                                      "startup_seconds": None}
        if address is not None:  # a remote cluster is joined now, before any work: a wrong address fails fast
            _check_address(str(address))
            self._connect(_import_ray())

    def _connect(self, ray, num_cpus: int | None = None) -> None:
        """Join ``self.address``, or start a local instance (:class:`~heatlab.run.ray_local.LocalRay`,
        ``num_cpus`` CPUs, default all) when none is given and this process has not started one."""
        if ray.is_initialized():
            return
        # Ray retries a silent address for about 20 s and logs every retry; heatlab says so in seconds.
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(int(_CONNECT_TIMEOUT)))
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
        options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        try:
            with _quiet_stderr():
                if self.address is None:
                    self._local = LocalRay(ray)
                    self._local.start(**options, **({} if num_cpus is None else {"num_cpus": num_cpus}))
                    self.stats["local_starts"] = self.stats.get("local_starts", 0) + 1
                    if self.note is not None:
                        self.note(f"ray: started a local Ray instance for this command; its session files are in "
                                  f"{self._local.session} until it stops")
                else:
                    ray.init(address=self.address, **options)
        except ConnectionError:
            raise HeatlabError(f"No Ray cluster answers at {self.address!r}; start one there with `ray start --head` "
                               "or pass the right address.") from None

    def _fit(self, ray, stage: Stage, count: int) -> int:
        """How many workers to start for ``count`` units, checked against what the cluster's live
        nodes offer (1 CPU and ``gpus`` GPUs per worker), so a request no node can meet is one
        sentence now instead of actors that wait forever."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        cpus, gpus = sum(r.get("CPU", 0) for r in nodes), sum(r.get("GPU", 0) for r in nodes)
        have = f"{cpus:g} CPUs and {gpus:g} GPUs on {len(nodes)} node{'' if len(nodes) == 1 else 's'}"
        if self.gpus > 0 and gpus == 0:
            raise HeatlabError(f"gpus_per_worker={self.gpus:g} asks for GPUs but the Ray cluster has none ({have}); pass "
                               "gpus_per_worker=0 with device='cpu', or join a cluster with GPUs.")
        most = max((r.get("GPU", 0) for r in nodes), default=0)
        if self.gpus > most:
            raise HeatlabError(f"gpus_per_worker={self.gpus:g} is more than any node of the Ray cluster has ({have}); "
                               f"pass gpus_per_worker={most:g} or less.")
        with contextlib.suppress(RuntimeError, TypeError):  # a bad device name is the worker's sentence
            if torch.device(stage.device).type == "cuda" and self.gpus == 0:
                raise HeatlabError(f"device={stage.device!r} on Ray workers needs GPUs reserved for them; pass "
                                   "gpus_per_worker=1 (or device='cpu').")
        slots = sum(int(r.get("CPU", 0)) if self.gpus == 0 else min(int(r.get("CPU", 0)), int(r.get("GPU", 0) / self.gpus + 1e-9))
                    for r in nodes)
        n = min(self.workers or slots, count)
        if n < 1 or n > slots:
            what = "1 CPU" + (f" and {self.gpus:g} GPUs" if self.gpus else "")
            raise HeatlabError(f"The Ray cluster can hold {slots} worker{'' if slots == 1 else 's'} of {what} each "
                               f"({have}), not {max(n, 1)}; pass workers={max(slots, 1)} or add nodes.")
        return n

    def _actors(self, ray, cls, blob, n: int, run_path: str) -> list:
        actors = [cls.remote(blob) for _ in range(n)]
        self._pool.extend(actors)
        try:
            answers = ray.get([a.ready.remote() for a in actors])
        except ray.exceptions.RayError as exc:
            raise HeatlabError(f"Ray workers could not set up the stage ({type(exc).__name__}); check that heatlab is "
                               "installed on every node.") from None
        for host, readable in answers:
            if not readable:
                raise HeatlabError(f"Ray workers on {host} cannot read the folder '{run_path}'; put it on storage "
                                   "every node can read (e.g. NFS) and pass that path.")
        return actors

    def run(self, stage: Stage, units: Sequence[Unit], deliver: Deliver) -> None:
        ray = _import_ray()
        self._pool: list = []
        try:
            # held for later stages: as many CPUs as workers asked for, not as this stage's units need
            self._connect(ray, None if self.workers is None else self.workers if self._held else min(self.workers, len(units)))
            n = self._fit(ray, stage, len(units))
            blob = ray.put(stage)  # Stage.__getstate__ leaves the progress callable here
            cls = ray.remote(num_cpus=1, num_gpus=self.gpus)(_Worker)
            self._schedule(ray, stage, units, deliver, cls, blob, n, str(stage.run.path))
        finally:
            for actor in self._pool:
                ray.kill(actor, no_restart=True)
            if not self._held:  # the instance this run started ends with it
                self._stop_local()

    def _schedule(self, ray, stage: Stage, units: Sequence[Unit], deliver: Deliver, cls, blob, n: int, path: str) -> None:
        t0 = time.perf_counter()
        idle = self._actors(ray, cls, blob, n, path)
        if self._local is not None:
            self._local.record()  # the workers now exist: a killed driver's next run ends them too
        self.stats["workers"], self.stats["startup_seconds"] = n, time.perf_counter() - t0
        queue: deque[tuple[Unit, int]] = deque((u, 0) for u in execution_order(units))
        running: dict[Any, tuple[Any, Unit, int]] = {}
        times: list[float] = []
        wave = 0
        while queue or running:
            # a unit of a later wave waits until every unit of the running wave is delivered
            while queue and idle and (not running or queue[0][0].wave == wave):
                unit, tries = queue.popleft()
                wave = unit.wave
                actor = idle.pop(0)
                running[actor.run.remote(unit)] = (actor, unit, tries)
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, unit, tries = running.pop(ready[0])
            try:
                pieces, seconds = ray.get(ready[0])
            except ray.exceptions.RayActorError:  # the worker died: replace it, hand the unit out again
                self.stats["workers_replaced"] += 1
                idle.extend(self._actors(ray, cls, blob, 1, path))
                queue.appendleft((unit, tries))
                continue
            except ray.exceptions.RayTaskError as exc:
                idle.append(actor)
                if tries < self.max_retries and not isinstance(exc.cause, HeatlabError):  # bad input: no retry
                    self.stats["retried"] += 1
                    queue.appendleft((unit, tries + 1))
                    continue
                raise _unit_failed(stage, unit, tries + 1, exc) from None
            idle.append(actor)
            times.append(seconds)
            deliver(unit, pieces)
            self.stats["units"] += 1
        self.stats["seconds_per_unit"] = sum(times) / len(times) if times else None

    @contextlib.contextmanager
    def session(self) -> Iterator["RayBackend"]:
        """Keep the local instance the first :meth:`run` inside the block starts for every later run in
        it, and stop it when the block ends: one local Ray per command, whatever its number of stages."""
        self._held += 1
        try:
            yield self
        finally:
            self._held -= 1
            if not self._held:
                self._stop_local()

    def _stop_local(self) -> None:
        if self._local is not None:
            self._local.stop()
            self._local = None

    def summary(self) -> dict:
        return dict(self.stats)


def _unit_failed(stage: Stage, unit: Unit, tries: int, exc: Exception) -> HeatlabError:
    """The sentence for a unit that failed on every try (a HeatlabError from the unit itself is kept)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, HeatlabError):
        return cause
    cause = cause if isinstance(cause, BaseException) else exc
    first = str(cause).strip().splitlines()[0].rstrip(".") if str(cause).strip() else "no message"
    return HeatlabError(f"Unit {unit.describe()} ({stage.name}) failed "
                        f"{tries} times on Ray workers ({type(cause).__name__}: {first}); fix the cause and run the same "
                        "command again to resume.")
