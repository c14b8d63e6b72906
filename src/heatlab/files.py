"""Atomic file writes and hashing, shared by every stage that writes to disk.

Every write goes to a temporary name in the destination folder and is renamed into place, so a
run killed at any moment never leaves a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from heatlab.errors import HeatlabError


def _file_mode() -> int:
    """Mode a plain ``open()`` would give a new file (mkstemp alone would make it 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


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
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
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


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, turning a missing or broken file into a clear HeatlabError."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HeatlabError(f"'{p}' does not exist; check the path or create it first.") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HeatlabError(f"'{p}' is not valid JSON; delete it and run the step that writes it again.") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
