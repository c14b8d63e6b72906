"""The local Ray instance heatlab starts when no cluster address is given: where its files go, and
that none of its processes outlives the driver.

Its session files go under :func:`temp_dir`, ``<system temp>/heatlab-ray-<user id>`` (kept short:
Ray's Unix sockets live there and a socket path holds about 107 bytes), instead of Ray's
``/tmp/ray``. :func:`stop` shuts the instance down and removes its session folder; it runs when the
stage ends and at interpreter exit. A driver killed with SIGKILL cannot do that, and Ray's agents
and workers outlive it, so each driver records its instance in ``drivers/<pid>.json`` there (its
own pid and start time, the session folder and every process of the instance, each as pid and
start time), and the next local start (:func:`reap`) ends the processes of each record whose driver
is gone and removes that session folder. A process is ended only when its pid *and* start time
match the record, so a pid the system has since reused is never touched.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

_GRACE = 3.0  # seconds a leftover process gets after SIGTERM before SIGKILL (Ray's agents ignore SIGTERM)


def temp_dir() -> Path:
    """The folder holding heatlab's local Ray sessions and driver records."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"heatlab-ray-{user}"


def _psutil():
    import psutil  # the ray extra installs it (Ray's own copy is private to Ray)

    return psutil


def _ident(proc) -> list:
    return [proc.pid, proc.create_time()]


def _same(ident: Any) -> Any:
    """The running process ``ident`` (``[pid, start time]``) names, or None (gone, reused pid, zombie)."""
    psutil = _psutil()
    try:
        pid, started = int(ident[0]), float(ident[1])
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > 0.01 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.Error, TypeError, ValueError, IndexError):
        return None


def _record_path(root: Path, pid: int) -> Path:
    return root / "drivers" / f"{pid}.json"


class LocalRay:
    """One local instance started by this process (:meth:`start`), recorded until :meth:`stop`."""

    def __init__(self, ray):
        self.ray, self.root = ray, temp_dir()
        self.session: Path | None = None

    def start(self, **init_options: Any) -> Path:
        """``ray.init`` a new local instance under :func:`temp_dir` (leftovers of killed drivers
        reaped first); returns its session folder."""
        reap(self.root)
        self.ray.init(address="local", _temp_dir=str(self.root), **init_options)
        atexit.register(self.stop)
        self.session = self._session_dir()
        self.record()
        return self.session

    def _session_dir(self) -> Path:
        node = getattr(getattr(self.ray, "_private").worker, "_global_node", None)
        if node is not None and hasattr(node, "get_session_dir_path"):
            return Path(node.get_session_dir_path())
        return (self.root / "session_latest").resolve()

    def processes(self) -> list:
        """Ray's processes of this instance: the children of this driver that name its temp folder
        (GCS, raylet, monitors, dashboard) and all their descendants (agents, workers)."""
        psutil = _psutil()
        found: dict[int, Any] = {}
        for child in psutil.Process().children():
            try:
                if any(str(self.root) in part for part in child.cmdline()):
                    found[child.pid] = child
                    found.update({p.pid: p for p in child.children(recursive=True)})
            except psutil.Error:
                continue
        return list(found.values())

    def record(self) -> None:
        """Write (or refresh, e.g. once the workers exist) this driver's record."""
        psutil = _psutil()
        procs = []
        for proc in self.processes():
            try:
                procs.append(_ident(proc))
            except psutil.Error:
                continue
        path = _record_path(self.root, os.getpid())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"driver": _ident(psutil.Process()), "session": str(self.session), "processes": procs}))
        os.replace(tmp, path)

    def stop(self) -> None:
        """Shut the instance down, remove its session folder and record (idempotent)."""
        if self.session is None:
            return
        if self.ray.is_initialized():
            self.ray.shutdown()
        _end([_ident(p) for p in self.processes()])  # anything that survived the shutdown
        _remove_session(self.root, self.session)
        _record_path(self.root, os.getpid()).unlink(missing_ok=True)
        self.session = None


def _end(idents: list) -> int:
    """SIGTERM, then after a grace period SIGKILL, the processes ``idents`` name and their
    descendants; returns how many were running."""
    psutil = _psutil()
    procs: dict[int, Any] = {}
    for ident in idents:
        proc = _same(ident)
        if proc is None:
            continue
        procs[proc.pid] = proc
        try:
            procs.update({p.pid: p for p in proc.children(recursive=True)})
        except psutil.Error:
            pass
    for proc in procs.values():
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=_GRACE)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=_GRACE)
    return len(procs)


def _remove_session(root: Path, session: Any) -> None:
    path = Path(str(session)) if session else None
    if path is not None and path.parent == root and path.name.startswith("session_") and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        latest = root / "session_latest"  # Ray's link to the newest session
        if latest.is_symlink() and not latest.exists():
            latest.unlink(missing_ok=True)


def reap(root: Path | None = None) -> int:
    """End the leftover processes of every recorded instance whose driver is gone, remove their
    session folders and records; returns how many processes were ended."""
    root = temp_dir() if root is None else root
    ended = 0
    for path in sorted((root / "drivers").glob("*.json")):
        try:
            record = json.loads(path.read_text())
            driver, session, idents = record["driver"], record.get("session"), list(record.get("processes", []))
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # unreadable: nothing in it can be trusted to end
            continue
        if _same(driver) is not None:
            continue  # a running heatlab owns it
        ended += _end(idents)
        _remove_session(root, session)
        path.unlink(missing_ok=True)
    return ended
