"""One resumable-stage runner: a stage declares its work units and how to run one; this runs them.

A stage (``evaluate``, ``ax``, ``gax``, ``train``, ``mixer``, ...) is a :class:`Stage`: ``units()``
lists its units in the order the joined outputs are built, ``kinds`` names what one unit writes (a
DataFrame kind is stored as ``<stem>.<kind>.parquet``, a tensor kind as
``<stem>.<kind>.safetensors``), ``run_unit(work, unit)`` returns those objects, and
``join(units, parts)`` turns the pieces of all units into the stage's final files.

A unit is a :class:`Unit`: a frozen dataclass of the stage's own key fields and parameters, which
says where its pieces live (``stem``), which model's weights its result depends on
(``depends_on``), its ``wave`` (a unit runs only after every unit of an earlier wave is written,
e.g. training's branches after the base) and how to group units that share a model.
:class:`ShardUnit` (split, branch, method, shard) is the unit of the explanation stages.

:func:`run_stage` does the rest, the same way for every stage: it skips units whose marker
``<stem>.done.json`` and pieces exist, runs the others (grouped so that each branch model is
loaded once, and each shard loaded and predicted once per branch), writes every piece atomically
and the marker last, reports progress, and joins. A run killed at any moment and started again
redoes only unfinished units and ends with the same files. A stage whose files have another
layout (training writes model folders) overrides :meth:`Stage.is_done`, :meth:`Stage.write` and
:meth:`Stage.read`. Everything a worker needs to run a unit is in the run folder (:class:`Work`
builds it from there), so another backend can schedule units elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from heatlab.data.split import Split
from heatlab.errors import HeatlabError
from heatlab.files import atomic_path, read_json, remove_stale_tmp, write_json, write_parquet
from heatlab.models.training import predict
from heatlab.progress import Progress, report
from heatlab.run.rundir import RunDir

PARQUET, TENSORS = "parquet", "safetensors"


@dataclass(frozen=True)
class Unit:
    """Base of a stage's unit key: subclasses are frozen dataclasses of the stage's own fields."""

    def stem(self, parts: Path) -> Path:  # pragma: no cover - abstract
        """Where the unit's pieces live below a stage's parts folder."""
        raise NotImplementedError

    def as_dict(self) -> dict:
        """The unit's fields (stored in its marker)."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """The unit in words, for messages."""
        return ", ".join(f"{k} {v}" for k, v in self.as_dict().items())

    def depends_on(self) -> str | None:
        """The run's model (a branch name) whose weights the result depends on: their sha256 goes in the marker."""
        return None

    @property
    def wave(self) -> int:
        """Units of wave k run only after every unit of waves < k is written."""
        return 0

    def group(self) -> str:
        """Units of one group (e.g. one branch model) run next to each other."""
        return ""

    def order(self) -> tuple:
        """Order within a group."""
        return ()


@dataclass(frozen=True)
class ShardUnit(Unit):
    """``method`` on shard (or batch) ``shard`` of ``split`` for ``branch``."""

    split: str
    branch: str
    method: str
    shard: int

    def stem(self, parts: Path) -> Path:
        return parts / self.branch / self.method / f"shard-{self.shard:05d}"

    def describe(self) -> str:
        return f"{self.method} of {self.branch}, {self.split} shard {self.shard}"

    def depends_on(self) -> str:
        return self.branch

    def group(self) -> str:
        return self.branch

    def order(self) -> tuple:
        return (self.split, self.shard)


class Work:
    """What running a unit needs, built from the run folder and cached: one model, one shard, predictions."""

    def __init__(self, run: RunDir, *, device: str = "cpu", batch_size: int = 25):
        self.run, self.device, self.batch_size = run, device, batch_size
        self._model: tuple[str, torch.nn.Module] | None = None
        self._data: dict[str, Split] = {}
        self._shard: tuple[tuple[str, int], dict] | None = None
        self._preds: dict[tuple[str, str, int], torch.Tensor] = {}
        self._memo: dict[str, tuple[Any, Any]] = {}

    def memo(self, slot: str, key: Any, make: Callable[[], Any]) -> Any:
        """``make()``, kept for ``key`` until another key asks for the same ``slot`` (one value per slot)."""
        if slot not in self._memo or self._memo[slot][0] != key:
            self._memo.pop(slot, None)  # free the old value before making the new one
            self._memo[slot] = (key, make())
        return self._memo[slot][1]

    def model(self, branch: str) -> torch.nn.Module:
        """The branch's model in eval mode on the work's device (the last one is kept)."""
        if self._model is None or self._model[0] != branch:
            self._model = (branch, self.run.load_model(branch, device=self.device).eval())
            self._preds = {k: v for k, v in self._preds.items() if k[1] == branch}
        return self._model[1]

    def data(self, split: str) -> Split:
        if split not in self._data:
            self._data[split] = self.run.open_data(split)
        return self._data[split]

    def shard(self, split: str, k: int) -> dict[str, torch.Tensor]:
        """Shard ``k`` of ``split`` (the last one is kept)."""
        if self._shard is None or self._shard[0] != (split, k):
            self._shard = ((split, k), self.data(split).load_shard(k))
        return self._shard[1]

    def predictions(self, split: str, branch: str, k: int) -> torch.Tensor:
        """Predicted classes (CPU int64 N) of shard ``k`` by ``branch``, computed once."""
        key = (split, branch, k)
        if key not in self._preds:
            shard = self.shard(split, k)
            self._preds[key] = predict(self.model(branch), (shard["images"], shard["labels"]), self.batch_size)[0]
        return self._preds[key]


class Stage:
    """Base of a stage declaration; subclasses set ``name`` and ``kinds`` and implement the three methods."""

    name: str = ""
    #: kind -> PARQUET or TENSORS, the pieces one unit writes.
    kinds: Mapping[str, str] = {}
    #: CPU threads a unit runs on, whatever the backend (None: torch's setting as it is). A float sum
    #: split over threads may round otherwise, so a stage whose units must give the same bytes on
    #: every backend (training, the Mixer) sets 1: what a one-CPU Ray worker has (OMP_NUM_THREADS=1).
    threads: int | None = None

    def __init__(self, run: RunDir, *, device: str = "cpu", batch_size: int = 25):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise HeatlabError(f"Batch size must be a whole number >= 1, got {batch_size!r}; pass e.g. batch_size=25.")
        self.run, self.device, self.batch_size = run, device, batch_size

    def __getstate__(self) -> dict:
        # A stage sent to another process (a Ray worker) leaves its progress callable behind: bars
        # are drawn by the driver, which reports each unit as it is delivered.
        return {**self.__dict__, "progress": None} if "progress" in self.__dict__ else dict(self.__dict__)

    def shared_file(self) -> Path:
        """A path every worker must be able to read, checked before any unit runs elsewhere: the run's
        config (a stage whose folder is no run folder names its own)."""
        return self.run.config_path

    def parts_dir(self, unit: Unit) -> Path:
        """The folder of ``unit``'s pieces: per split (a stage whose units have no ``split`` overrides this)."""
        return self.run.parts(self.name, unit.split)

    def stem(self, unit: Unit) -> Path:
        return unit.stem(self.parts_dir(unit))

    def settings(self, unit: Unit) -> dict:
        """What ``unit``'s result depends on beyond the unit itself and its model's weights (JSON
        values); stored in its marker, and a unit whose marker holds other settings is run again."""
        return {}

    # How a unit's pieces are stored: below the parts folder with a marker (:func:`write_unit`);
    # a stage with another layout overrides these three (and ``joined`` when join needs fewer kinds).
    def is_done(self, unit: Unit) -> bool:
        return is_done(self, unit)

    def write(self, unit: Unit, pieces: Mapping[str, Any]) -> None:
        write_unit(self, unit, pieces)

    def read(self, unit: Unit, kind: str) -> Any:
        return read_piece(self, unit, kind)

    def joined(self) -> Sequence[str]:
        """The kinds :meth:`join` reads (default all)."""
        return list(self.kinds)

    def begin(self) -> None:
        """Called by :func:`run_stage` holding the run's lock, before ``units()``: read what earlier
        runs left (e.g. :func:`earlier_methods`) here, so concurrent runs merge instead of overwrite."""

    def units(self) -> list[Unit]:  # pragma: no cover - abstract
        raise NotImplementedError

    def run_unit(self, work: Work, unit: Unit) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def join(self, units: Sequence[Unit], parts: dict[str, list[Any]]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on ``n`` CPU threads (None: as set), then put the setting back."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def call_unit(stage: Stage, work: Work, unit: Unit) -> dict[str, Any]:
    """``stage.run_unit(work, unit)`` on ``stage.threads`` threads: how every backend runs a unit."""
    with torch_threads(stage.threads):
        return stage.run_unit(work, unit)


def earlier_methods(run: RunDir, stage: str, same: Mapping[str, Any]) -> list[str]:
    """Methods in the tables of ``stage``'s last complete run when it agrees with ``same``, else ``[]``.

    ``same`` maps summary keys to the values of the coming run (``"preset"`` is compared with the
    stored attribution preset). A stage asked for a few methods runs those and keeps the earlier
    ones (their units are done, so they are only read again), instead of rewriting its tables with
    the few alone; an earlier run on another split, space or preset is replaced.
    """
    try:
        summary = run.stage_summary(stage) or {}
    except HeatlabError:  # damaged: nothing earlier is kept
        return []
    stored = {**summary, "preset": (summary.get("attribution") or {}).get("preset")}
    if not summary.get("complete") or any(stored.get(k) != v for k, v in same.items()):
        return []
    return [m for m in summary.get("methods", []) if isinstance(m, str)]


def piece_path(stage: Stage, unit: Unit, kind: str) -> Path:
    return Path(f"{stage.stem(unit)}.{kind}.{stage.kinds[kind]}")


def marker_path(stage: Stage, unit: Unit) -> Path:
    return Path(f"{stage.stem(unit)}.done.json")


def is_done(stage: Stage, unit: Unit) -> bool:
    """True when the unit's marker (with the stage's current settings and the sha256 of the
    branch's weights) and every piece exist. Weights that fail their check raise a HeatlabError."""
    settings = _settings(stage, unit)
    marker = marker_path(stage, unit)
    if not marker.is_file() or not all(piece_path(stage, unit, k).is_file() for k in stage.kinds):
        return False
    try:
        return read_json(marker).get("settings", {}) == settings
    except (HeatlabError, AttributeError):  # unreadable or not a marker: redo the unit
        return False


def write_unit(stage: Stage, unit: Unit, pieces: Mapping[str, Any]) -> None:
    """Write a unit's pieces atomically, then its marker (the unit counts as done only after that)."""
    missing = set(stage.kinds) - set(pieces)
    if missing:
        raise RuntimeError(f"stage {stage.name} returned no {', '.join(sorted(missing))} for {unit}")
    for kind, fmt in stage.kinds.items():
        path = piece_path(stage, unit, kind)
        if fmt == PARQUET:
            write_parquet(path, pieces[kind])
        else:
            with atomic_path(path) as tmp:
                save_file({k: v.contiguous() for k, v in pieces[kind].items()}, str(tmp))
    write_json(marker_path(stage, unit), {**unit.as_dict(), "settings": _settings(stage, unit)})


def _settings(stage: Stage, unit: Unit) -> dict:
    """The unit's settings as stored (tuples become lists), with the model they were computed by."""
    model = unit.depends_on()
    settings = {**stage.settings(unit), **({} if model is None else {"weights_sha256": stage.run.weights_sha256(model)})}
    return json.loads(json.dumps(settings))


def read_piece(stage: Stage, unit: Unit, kind: str) -> Any:
    path = piece_path(stage, unit, kind)
    try:
        return pd.read_parquet(path) if stage.kinds[kind] == PARQUET else load_file(str(path))
    except Exception:  # pyarrow and safetensors raise several types for a broken file
        marker_path(stage, unit).unlink(missing_ok=True)  # the unit is redone next time
        raise HeatlabError(f"Part '{path}' is unreadable; run the same command again to redo it.") from None


def execution_order(units: Sequence[Unit]) -> list[Unit]:
    """Units by wave, then grouped (by branch), then split and shard, so models and shards load once
    (stable otherwise)."""
    groups = {g: i for i, g in enumerate(dict.fromkeys(u.group() for u in units))}
    return sorted(units, key=lambda u: (u.wave, groups[u.group()], u.order()))


Deliver = Callable[[Unit, Mapping[str, Any]], None]


class LocalBackend:
    """Runs units in this process, one after another, in :func:`execution_order` (the default; waves
    follow from that order)."""

    name = "local"

    def run(self, stage: Stage, units: Sequence[Unit], deliver: Deliver) -> None:
        work = Work(stage.run, device=stage.device, batch_size=stage.batch_size)
        for unit in execution_order(units):
            deliver(unit, call_unit(stage, work, unit))

    def summary(self) -> dict:
        return {"backend": self.name}


#: Backend names -> "module:class" (imported on first use, so Ray loads only when asked for).
BACKENDS = {"local": "heatlab.run.runner:LocalBackend", "ray": "heatlab.run.ray_backend:RayBackend"}


def make_backend(name: str = "local", **options: Any) -> Any:
    """The backend ``name`` (``"local"`` or ``"ray"``) built with ``options`` (Ray: address, workers,
    gpus_per_worker, max_retries, note). A backend has ``run(stage, units, deliver)``: it runs each unit
    somewhere and calls ``deliver(unit, pieces)`` in the driver, which alone writes."""
    if name not in BACKENDS:
        raise HeatlabError(f"Unknown backend {name!r}; pass backend='local' or backend='ray'.")
    module, _, cls = BACKENDS[name].partition(":")
    if name == "local" and any(v not in (None, 0) for v in options.values()):
        given = [k for k, v in options.items() if v not in (None, 0)]
        what = f"{given[0]} is a Ray option" if len(given) == 1 else f"{', '.join(given)} are Ray options"
        raise HeatlabError(f"{what}; pass backend='ray' or drop {'it' if len(given) == 1 else 'them'}.")
    return getattr(importlib.import_module(module), cls)(**({} if name == "local" else options))


def backend_session(backend: Any) -> contextlib.AbstractContextManager:
    """``backend.session()`` where the backend has one (Ray: one local instance for all the stages run
    inside the block), else a block that does nothing; a command that runs several stages wraps them."""
    session = getattr(backend, "session", None)
    return session() if session is not None else contextlib.nullcontext()


def run_stage(stage: Stage, *, progress: Progress | None = None, backend: Any = None) -> Any:
    """Run every unfinished unit of ``stage`` on ``backend`` (default local), then join all pieces;
    returns what ``join`` returns. Whatever the backend, the driver writes every piece and marker,
    holding the run's lock (:meth:`RunDir.writing`) from ``stage.begin()`` to the joined tables."""
    backend = backend if backend is not None else LocalBackend()
    with stage.run.writing(stage.name):
        return _run_locked(stage, progress, backend)


def _run_locked(stage: Stage, progress: Progress | None, backend: Any) -> Any:
    remove_stale_tmp(stage.run.path)
    stage.begin()
    units = stage.units()
    todo = [u for u in units if not stage.is_done(u)]
    done = len(units) - len(todo)
    report(progress, stage.name, done, len(units))

    def deliver(unit: Unit, pieces: Mapping[str, Any]) -> None:
        nonlocal done
        stage.write(unit, pieces)
        done += 1
        report(progress, stage.name, done, len(units))

    if todo:
        backend.run(stage, todo, deliver)
    parts = {kind: [stage.read(u, kind) for u in units] for kind in stage.joined()}
    return stage.join(units, parts)
