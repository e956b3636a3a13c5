"""Atomic file writes: a temporary file in the same directory, flushed to disk, then renamed into place.

The temporary file of ``path`` is ``.<name>.<8 random characters>.tmp`` beside it, locked (``flock``)
by its writer from creation to rename. A write that fails or is interrupted (an exception,
``KeyboardInterrupt``) removes it; only a process killed outright (``kill -9``, a power loss) can
leave one, and it is never renamed over ``path``. The next write of the same ``path`` removes such
abandoned files: those no live process holds the lock of.
"""

from __future__ import annotations

__all__ = [
    "atomic_write",
    "check_output_path",
    "directory_lock",
    "save_onnx",
    "target_mode",
    "write_through_temporary",
]

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from optimum_hierarchy.errors import HierarchyError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; abandoned temporary files stay, and nothing is locked
    fcntl = None  # type: ignore[assignment]

_TMP_SUFFIX = ".tmp"
_RANDOM_CHARS = 8  # what tempfile.mkstemp puts between prefix and suffix


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
    _remove_abandoned(path)
    fd, tmp = _locked_temporary(path)
    lock = -1
    try:
        lock = os.dup(fd)  # keeps the lock after the file object closes, until the rename is done
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
        if lock < 0:
            os.close(fd)  # not handed to a file object yet
        raise
    finally:
        if lock >= 0:
            os.close(lock)


def write_through_temporary(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Have ``write`` produce the file at a temporary path beside ``path``, then rename it into place.

    For writers that need a path rather than an open file (an exporter, ``onnx_ir.save`` with external
    data). The temporary file is hidden and not ``*.onnx`` (``.<name>.<random>.export.tmp``), so that a
    killed process cannot leave a "model" behind for scans; it gets the permissions of the file it
    replaces (:func:`target_mode`), and is removed on any failure, leaving ``path`` untouched.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".export.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, target_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _locked_temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path``, locked by this process for as long as it is open."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return fd, tmp
        # Another writer took it for abandoned in the instant between its creation and the lock.
        os.close(fd)


def _remove_abandoned(path: Path) -> None:
    """Remove the temporary files of earlier writes of ``path`` whose writer died (no one holds their lock)."""
    if fcntl is None:
        return
    prefix = f".{path.name}."
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if not (
            name.startswith(prefix)
            and name.endswith(_TMP_SUFFIX)
            and len(name) == len(prefix) + _RANDOM_CHARS + len(_TMP_SUFFIX)
        ):
            continue
        candidate = path.parent / name
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.unlink(candidate)
        except OSError:
            pass  # held by a live writer (BlockingIOError), or already gone
        finally:
            os.close(fd)


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike[str], *, shared: bool = False) -> Iterator[None]:
    """Hold an advisory lock on ``directory`` (which must exist) for the block, or fail at once.

    Exports into a directory take it exclusively, annotations shared: two annotations may run side by
    side (each file is replaced atomically), but not an annotation and an export, nor two exports,
    which would write the same files. Where the file system cannot lock, the block runs unlocked.

    Raises:
        HierarchyError: another process holds a conflicting lock.
    """
    fd = _open_directory(directory)
    if fd is None:
        yield
        return
    try:
        busy = False
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = True
        except OSError:
            pass  # no locks on this file system
        if busy:
            raise HierarchyError(
                f"{directory}: another process is exporting into this directory or annotating models in it; "
                "wait for it to finish, or use another directory."
            )
        yield
    finally:
        os.close(fd)


def _open_directory(directory: str | os.PathLike[str]) -> int | None:
    """A descriptor to lock ``directory`` with; ``None`` without flock or when it cannot be opened
    (the caller's own error then says why)."""
    if fcntl is None:
        return None
    try:
        return os.open(directory, os.O_RDONLY)
    except OSError:
        return None


def check_output_path(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Refuse an output file that is the input, a directory, or in a directory that does not exist."""
    source, target = Path(source), Path(target)
    if target.exists() and target.resolve() == source.resolve():
        raise HierarchyError(f"{target}: is the input file; choose another output file.")
    if target.is_dir():
        raise HierarchyError(f"{target}: is a directory; give the path of the .onnx file to write.")
    if not target.parent.is_dir():
        raise HierarchyError(f"{target.parent}: no such directory for {target.name}.")


def save_onnx(proto: Any, path: str | os.PathLike[str], *, external_data: bool) -> None:
    """Write a whole ``onnx.ModelProto`` to ``path`` atomically (``proto`` itself is not changed).

    ``external_data``: the tensors go to ``<name>_data`` beside it (needed over protobuf's 2 GB). Both
    files are staged in a temporary directory beside ``path`` and renamed into place, the data file
    first: a reader finds either the old model or the new one with its data.
    """
    path = Path(path)
    if not external_data:
        atomic_write(path, proto.SerializeToString())
        return
    import onnx

    data_name = path.name + "_data"
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        onnx.save_model(copy, str(staged), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name)
        mode = target_mode(path)
        for name in (data_name, path.name):
            os.chmod(Path(tmp) / name, mode)
            os.replace(Path(tmp) / name, path.parent / name)
