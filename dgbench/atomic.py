"""Atomic, strict file writes: every file dgbench writes appears whole or not at all.

A write goes to a temporary ``.<name>.<pid>-<thread>.tmp`` beside the target, is fsync'ed and
renamed over it; when the write fails (a full disk, Ctrl-C) the temporary file is removed and an
OSError names the target. So a killed process never leaves a half-written file that a reader
would take for a finished one (a run folder's leftovers of a killed writer are removed by the
next process that takes the run's lock: dgbench.rundir). JSON is strict (RFC 8259): no NaN or
Infinity, non-finite numbers are written as null. `exclusive` is the one inter-process lock
helper (an flock that degrades to no lock where the file system has none).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Iterator

# what flock raises on file systems that have no flock (some Lustre and FUSE mounts)
_NO_FLOCK = (errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL)


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[bool]:
    """Hold an exclusive flock on ``path`` (created if missing) while the block runs: other
    processes entering the block on the same file wait. Yields False, and does not wait, where
    the file system has no flock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in _NO_FLOCK:
                raise
            yield False
            return
        yield True


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all. On failure (a full disk, Ctrl-C) the temporary file is
    removed and an OSError names ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno is not None and e.filename != str(path):
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def to_json(obj: Any, indent: int | None = 2, sort_keys: bool = True) -> str:
    """Strict JSON (RFC 8259), for every JSON file dgbench writes: NaN and +-Infinity, which
    JSON has no words for, are written as null."""
    return json.dumps(_finite(obj), indent=indent, sort_keys=sort_keys, default=str, allow_nan=False)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, to_json(obj) + "\n")


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def is_out_of_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
