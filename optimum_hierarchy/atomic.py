"""Atomic file writes: a temporary file in the same directory, flushed to disk, then renamed into place."""

from __future__ import annotations

__all__ = ["atomic_write", "target_mode"]

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def target_mode(path: Path) -> int:
    """Permissions a file written at ``path`` should get: those of the file it replaces, else 0o666 - umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def atomic_write(
    path: str | os.PathLike[str], data: bytes | Callable[[BinaryIO], None], *, durable: bool = True
) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old file or the new one, never a part.

    ``data`` is the content, or a function that writes it to the open file it is given. ``durable``: flush
    the new file to disk before the rename, so that it survives a power loss too (a process that
    dies leaves the old file or the new one either way).

    The new file keeps the permissions of the file it replaces (a new file gets the usual ``0o666``
    minus the umask, not the ``0o600`` of a temporary file). On any failure the temporary file is
    removed and ``path`` is untouched.
    """
    path = Path(path)
    mode = target_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                data(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
