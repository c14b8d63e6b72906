"""Atomic file writes and hashing, shared by every stage that writes to disk.

Every write goes to a temporary name in the destination folder and is renamed into place, so a
run killed at any moment never leaves a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from heatlab.errors import HeatlabError


def _file_mode() -> int:
    """Mode a plain ``open()`` would give a new file (mkstemp alone would make it 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()
_HOST = socket.gethostname().replace(".", "_").replace("~", "_") or "host"
_OWNER = f"{_HOST}~{os.getpid()}"  # temporary names say who writes them, so leftovers can be told apart


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_tmp(root: str | os.PathLike) -> int:
    """Delete temporary files below ``root`` left by a killed write of this host; returns how many.

    A temporary name holds the host and process id of its writer (see :func:`atomic_path`); a file
    whose writer is no longer running on this host can never be renamed into place. Files of live
    processes and of other hosts are left alone.
    """
    removed = 0
    root = Path(root)
    if not root.is_dir():
        return 0
    for path in root.rglob(".*.tmp"):
        owner = path.name[:-len(".tmp")].rsplit(".", 2)
        host, _, pid = owner[-2].rpartition("~") if len(owner) == 3 else ("", "", "")
        if host == _HOST and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


@contextlib.contextmanager
def undo_on_error(folder: str | os.PathLike) -> Iterator[None]:
    """Remove what the block added to ``folder`` (the folder too, if it is new) when bad input stops it.

    Only :class:`HeatlabError` undoes: an interrupted run keeps its files so it can resume.
    """
    folder = Path(folder)
    existed = folder.is_dir()
    before = set(os.listdir(folder)) if existed else set()
    try:
        yield
    except HeatlabError:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        elif folder.is_dir():
            for name in set(os.listdir(folder)) - before:
                path = folder / name
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
        raise


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) as a writable directory, or raise a clear HeatlabError."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise HeatlabError(f"'{p}' is a file, not a folder; choose another output path.")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeatlabError(f"Cannot create folder '{p}' ({exc.strerror}); choose a writable output path.") from None
    if not os.access(p, os.W_OK):
        raise HeatlabError(f"Folder '{p}' is not writable; choose a writable output path.")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, else delete it."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{_OWNER}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write UTF-8 ``text`` to ``path``."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON (same object, same bytes)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_parquet(path: str | os.PathLike, frame: Any) -> None:
    """Atomically write a pandas DataFrame ``frame`` to ``path`` as Parquet (no index column)."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


#: Limits of :func:`read_json`: far above any file heatlab writes, far below what would exhaust memory or
#: the parser's recursion.
MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 100
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects of JSON text ``raw`` nest, found without parsing or recursing."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    if not brackets:
        return 0
    steps = np.frombuffer(brackets, np.uint8)
    return int(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1).cumsum().max())


def read_json(path: str | os.PathLike, *, fix: str = "delete it and run the step that writes it again") -> Any:
    """Read JSON, turning a missing, broken, huge or deeply nested file into one HeatlabError ending in ``fix``.

    A file over :data:`MAX_JSON_BYTES` (64 MiB) or nesting deeper than :data:`MAX_JSON_DEPTH` (100) is
    refused before it is parsed.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_JSON_BYTES:
            raise HeatlabError(f"'{p}' holds {size} bytes, more than the {MAX_JSON_BYTES >> 20} MiB a heatlab JSON file "
                               f"may hold; {fix}.")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise HeatlabError(f"'{p}' does not exist; check the path or create it first.") from None
    except OSError as exc:
        raise HeatlabError(f"Cannot read '{p}' ({exc.strerror}); {fix}.") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth(raw) > MAX_JSON_DEPTH:
        raise HeatlabError(f"'{p}' nests deeper than the {MAX_JSON_DEPTH} levels a heatlab JSON file may have; {fix}.")
    try:
        return json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HeatlabError(f"'{p}' is not valid JSON; {fix}.") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
