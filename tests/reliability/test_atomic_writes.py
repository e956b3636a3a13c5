"""Every file the package writes goes through a temporary file and a rename: a fault at any step, an
interrupt, or a kill leaves the old file or the new one, never a part of one.

Faults are injected in-process (an exception at each step of :func:`atomic_write`, and in each writer
of the package), and in the real CLI by pausing a subprocess inside the write and interrupting
(``SIGINT``) or killing (``SIGKILL``) it there. A killed process cannot remove its temporary file: the
next write of the same file does (``atomic.py``); it is never renamed over the target meanwhile.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import onnx
import pytest
import torch
from reliability.faults import interrupt, paused_cli, temporaries
from support import run_cli

from optimum_hierarchy import HierarchyPreservingExporter, HierarchyRetriever, annotate_hierarchy, read_hierarchy
from optimum_hierarchy.atomic import atomic_write
from optimum_hierarchy.errors import HierarchyError, InvalidModelFileError
from optimum_hierarchy.html import write_html
from optimum_hierarchy.tools.extract import write_extracted_module

OLD, NEW = b"old content\n" * 100, b"new content\n" * 1000


def _failing(exc: BaseException) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail


def _half_then(exc: BaseException) -> Callable[[BinaryIO], None]:
    def write(f: BinaryIO) -> None:
        f.write(NEW[: len(NEW) // 2])
        raise exc

    return write


# Each step of atomic_write, failing: (what is patched, the data written, the exception).
STEPS: dict[str, tuple[str | None, bytes | Callable[[BinaryIO], None], BaseException]] = {
    "create_temporary": ("tempfile.mkstemp", NEW, OSError(errno.ENOSPC, "No space left on device")),
    "write_half": (None, _half_then(OSError(errno.ENOSPC, "No space left on device")), OSError()),
    "fsync": ("os.fsync", NEW, OSError(errno.EIO, "Input/output error")),
    "chmod": ("os.chmod", NEW, PermissionError(errno.EPERM, "Operation not permitted")),
    "rename": ("os.replace", NEW, OSError(errno.EXDEV, "Invalid cross-device link")),
    "interrupt_in_write": (None, _half_then(KeyboardInterrupt()), KeyboardInterrupt()),
    "interrupt_at_rename": ("os.replace", NEW, KeyboardInterrupt()),
}


@pytest.mark.parametrize("existing", [True, False], ids=["replacing", "new_file"])
@pytest.mark.parametrize("step", sorted(STEPS))
def test_a_fault_at_any_step_leaves_the_old_file(
    step: str, existing: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patched, data, exc = STEPS[step]
    target = tmp_path / "model.onnx"
    if existing:
        target.write_bytes(OLD)
    if patched is not None:
        module, _, name = patched.rpartition(".")
        monkeypatch.setattr({"os": os, "tempfile": tempfile}[module], name, _failing(exc))
    with pytest.raises(type(exc)):
        atomic_write(target, data)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["model.onnx"] if existing else [])
    if existing:
        assert target.read_bytes() == OLD
    atomic_write(target, NEW)  # and the next write goes through
    assert target.read_bytes() == NEW
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_abandoned_temporaries_are_removed_by_the_next_write_and_live_ones_kept(tmp_path: Path) -> None:
    """What a killed writer leaves (an unlocked ``.model.onnx.XXXXXXXX.tmp``) goes; a live writer's stays."""
    import fcntl

    target = tmp_path / "model.onnx"
    target.write_bytes(OLD)
    abandoned = tmp_path / ".model.onnx.abcd1234.tmp"
    abandoned.write_bytes(NEW[:10])
    live = tmp_path / ".model.onnx.live5678.tmp"
    live.write_bytes(NEW[:10])
    other = tmp_path / ".other.onnx.abcd1234.tmp"  # another file's: not ours to judge
    other.write_bytes(b"x")
    with live.open("rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        atomic_write(target, NEW)
        assert target.read_bytes() == NEW
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name, other.name])
    atomic_write(target, OLD)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, other.name])


# --- the package's writers, with a fault at the rename ---------------------------------------------------


@pytest.fixture
def rename_fails(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(os, "replace", _failing(OSError(errno.ENOSPC, "No space left on device")))
    yield
    monkeypatch.undo()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_annotate_keeps_the_old_file(plain_exports: dict[str, Path], tmp_path: Path, rename_fails: None) -> None:
    path = tmp_path / "model.onnx"
    shutil.copy(plain_exports["bert"] / "model.onnx", path)
    before = _digest(path)
    with pytest.raises(InvalidModelFileError, match="cannot be written"):
        annotate_hierarchy(path)
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_html_and_extract_keep_the_old_file(cli_exports: dict[str, Path], tmp_path: Path, rename_fails: None) -> None:
    model = cli_exports["bert"] / "model.onnx"
    html, extracted = tmp_path / "view.html", tmp_path / "layer.onnx"
    html.write_bytes(OLD)
    extracted.write_bytes(OLD)
    with pytest.raises(HierarchyError, match=r"view\.html: cannot be written \(No space left"):
        write_html(HierarchyRetriever(model), html, title="t")
    with pytest.raises(HierarchyError, match=r"layer\.onnx: cannot be written \(No space left"):
        write_extracted_module(model, "encoder.layer.0", extracted)
    assert html.read_bytes() == OLD and extracted.read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer.onnx", "view.html"]


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def test_pytorch_exporter_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "net.onnx"
    HierarchyPreservingExporter().export_with_hierarchy(_Net(), torch.randn(1, 3), path)
    before = _digest(path)
    monkeypatch.setattr(os, "replace", _failing(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        HierarchyPreservingExporter().export_with_hierarchy(_Net(), torch.randn(1, 3), path)
    monkeypatch.undo()
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


@pytest.mark.parametrize("fault", ["attribution", "rename"])
def test_a_failed_export_leaves_the_earlier_export(
    fault: str,
    cli_exports: dict[str, Path],
    model_dirs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exporting into a directory that holds an earlier export: a failure before the new model file is in
    place leaves the earlier one as it was (it used to be removed as if this export had written it)."""
    from optimum_hierarchy import export_with_hierarchy
    from optimum_hierarchy.passes.attribute_nodes import AttributeNodesPass

    output = tmp_path / "out"
    shutil.copytree(cli_exports["vit"], output)
    before = _digest(output / "model.onnx")
    if fault == "attribution":
        monkeypatch.setattr(AttributeNodesPass, "call", _failing(RuntimeError("injected")))
        expected: type[BaseException] = RuntimeError
    else:
        real = os.replace

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if Path(dst).name == "model.onnx":
                raise OSError(errno.ENOSPC, "No space left on device")
            real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)
        expected = InvalidModelFileError
    with pytest.raises(expected):
        export_with_hierarchy(model_dirs["vit"], output, task="image-classification")
    monkeypatch.undo()
    assert _digest(output / "model.onnx") == before
    assert temporaries(output) == []


# --- the real CLI, interrupted or killed inside the write --------------------------------------------------


@pytest.mark.cli
def test_annotate_interrupted_or_killed_inside_the_write(plain_exports: dict[str, Path], tmp_path: Path) -> None:
    directory = tmp_path / "model"
    directory.mkdir()
    path = directory / "model.onnx"
    shutil.copy(plain_exports["bert"] / "model.onnx", path)
    before = _digest(path)

    # SIGINT: a KeyboardInterrupt at the flush; the temporary file is removed on the way out.
    process = paused_cli(["hierarchy", "annotate", str(path)], at="fsync", target="", cwd=tmp_path)
    assert interrupt(process, signal.SIGINT) != 0
    assert _digest(path) == before
    assert temporaries(directory) == []

    # SIGKILL: nothing runs; the old file is intact and one temporary file is left, hidden.
    process = paused_cli(["hierarchy", "annotate", str(path)], at="fsync", target="", cwd=tmp_path)
    assert interrupt(process, signal.SIGKILL) == -signal.SIGKILL
    assert _digest(path) == before
    (left,) = temporaries(directory)
    assert left.startswith(".model.onnx.") and left.endswith(".tmp")
    assert sorted(directory.rglob("*.onnx")) == [path]  # not an .onnx file: what a directory annotation sees

    # The next annotation writes the file and removes what the killed one left.
    completed = run_cli("hierarchy", "annotate", str(directory))
    assert "model.onnx" in completed.stdout
    assert read_hierarchy(path).metadata.summary is not None
    assert temporaries(directory) == []


@pytest.mark.cli
def test_view_killed_inside_the_write(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    model = cli_exports["gpt2"] / "model.onnx"
    html = tmp_path / "view.html"
    html.write_bytes(OLD)
    process = paused_cli(["hierarchy", "view", str(model), "-o", str(html)], at="fsync", target="", cwd=tmp_path)
    interrupt(process, signal.SIGKILL)
    assert html.read_bytes() == OLD
    assert len(temporaries(tmp_path)) == 1
    run_cli("hierarchy", "view", str(model), "-o", str(html))
    assert b"hierarchy-data" in html.read_bytes()
    assert temporaries(tmp_path) == []


@pytest.mark.cli
def test_export_killed_at_the_rename_keeps_the_earlier_export(
    cli_exports: dict[str, Path], model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """``optimum-cli export onnx --hierarchy`` into a directory holding an earlier export (of another model),
    killed just before its model file is renamed into place: the earlier file is intact; the next export
    succeeds and removes the killed one's temporary file."""
    output = tmp_path / "out"
    shutil.copytree(cli_exports["vit"], output)
    before = _digest(output / "model.onnx")
    args = ["export", "onnx", "--model", str(model_dirs["bert"]), "--task", "feature-extraction", "--hierarchy"]
    process = paused_cli([*args, str(output)], at="replace", target="model.onnx", cwd=tmp_path)
    interrupt(process, signal.SIGKILL)
    assert _digest(output / "model.onnx") == before
    assert read_hierarchy(output / "model.onnx").export.model_type == "vit"
    assert len(temporaries(output)) == 1
    run_cli(*args, str(output))
    assert read_hierarchy(output / "model.onnx").export.model_type == "bert"
    onnx.checker.check_model(str(output / "model.onnx"), full_check=True)
    assert temporaries(output) == []
