"""Two processes writing the same files at once do not corrupt them: atomic replacement for single files
(the last rename wins, every reader sees a whole file), and a directory lock for exports (a second export,
or an annotation, into a directory being exported to fails at once with a clear error).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import pytest
from reliability.faults import temporaries
from support import OPTIMUM_CLI, run_cli, task_of

from optimum_hierarchy import read_hierarchy


def test_writers_and_a_reader_of_one_file(tmp_path: Path) -> None:
    """Four processes replace one file 40 times each with their own content while a fifth reads it."""
    target = tmp_path / "shared.bin"
    target.write_bytes(b"start" * 1000)
    writer = textwrap.dedent(
        """
        import sys
        from optimum_hierarchy.atomic import atomic_write
        content = sys.argv[2].encode() * 200_000
        for _ in range(40):
            atomic_write(sys.argv[1], content)
        """
    )
    reader = textwrap.dedent(
        """
        import sys, time
        path, allowed = sys.argv[1], {b"start" * 1000} | {c.encode() * 200_000 for c in "ABCD"}
        seen, deadline = set(), time.monotonic() + 60
        while len(seen) < 3 and time.monotonic() < deadline:
            with open(path, "rb") as f:
                data = f.read()
            assert data in allowed, f"a partial file of {len(data)} bytes"
            seen.add(data[:1])
        print(len(seen))
        """
    )
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(target), c], cwd=tmp_path) for c in "ABCD"]
    reading = subprocess.run(
        [sys.executable, "-c", reader, str(target)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert all(w.wait(timeout=120) == 0 for w in writers)
    assert reading.returncode == 0, reading.stderr
    assert int(reading.stdout) >= 2  # it did see the file change
    assert target.read_bytes() in {c.encode() * 200_000 for c in "ABCD"}
    assert temporaries(tmp_path) == []


def _start_cli(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([OPTIMUM_CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.cli
def test_two_annotations_of_one_directory(plain_exports: dict[str, Path], tmp_path: Path) -> None:
    """Both succeed (annotations share the directory); the files are what one annotation alone writes."""
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    for directory in (shared, alone):
        for name in ("bert", "vit"):
            (directory / name).mkdir(parents=True)
            shutil.copy(plain_exports[name] / "model.onnx", directory / name / "model.onnx")
            shutil.copy(plain_exports[name] / "config.json", directory / name / "config.json")
    run_cli("hierarchy", "annotate", str(alone))
    processes = [_start_cli("hierarchy", "annotate", str(shared)) for _ in range(2)]
    outcomes = [(p.wait(timeout=300), p.communicate()) for p in processes]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    for name in ("bert", "vit"):
        assert (shared / name / "model.onnx").read_bytes() == (alone / name / "model.onnx").read_bytes()
        assert temporaries(shared / name) == []


@pytest.mark.cli
@pytest.mark.optimum_onnx
def test_two_exports_into_one_directory(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """ViT and BERT exported into one directory at once: one wins cleanly, or both run one after the other;
    a loser gets a clear error and writes nothing; the file there is whole and is the winner's."""
    output = tmp_path / "out"
    names = ("vit", "bert")
    processes = {
        name: _start_cli(
            "export", "onnx", "--model", str(model_dirs[name]), "--task", task_of(name), "--hierarchy", str(output)
        )
        for name in names
    }
    outcomes = {name: (p.wait(timeout=600), *p.communicate()) for name, p in processes.items()}
    winners = [name for name, (code, _, _) in outcomes.items() if code == 0]
    assert winners, outcomes
    for code, _, stderr in outcomes.values():
        if code != 0:
            assert code == 1 and "another process is exporting into this directory" in stderr, stderr
            assert "Traceback" not in stderr
    model = output / "model.onnx"
    onnx.checker.check_model(str(model), full_check=True)
    hierarchy = read_hierarchy(model)
    assert hierarchy.export.model_type in winners
    summary = hierarchy.metadata.summary
    assert summary is not None and summary.attributed == summary.nodes
    assert temporaries(output) == []


@contextmanager
def _held(directory: Path, kind: int) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


@pytest.mark.cli
def test_a_directory_being_exported_to_is_not_touched(
    model_dirs: dict[str, Path], plain_exports: dict[str, Path], tmp_path: Path
) -> None:
    """While an export holds the directory (exclusively), another export and an annotation fail at once;
    while an annotation holds it (shared), another annotation runs and an export fails."""
    output = tmp_path / "out"
    output.mkdir()
    shutil.copy(plain_exports["bert"] / "model.onnx", output / "model.onnx")
    shutil.copy(plain_exports["bert"] / "config.json", output / "config.json")
    before = (output / "model.onnx").read_bytes()
    export = ("export", "onnx", "--model", str(model_dirs["vit"]), "--task", "image-classification", "--hierarchy")
    with _held(output, fcntl.LOCK_EX):
        for args in ((*export, str(output)), ("hierarchy", "annotate", str(output))):
            completed = run_cli(*args, check=False)
            assert completed.returncode == 1, completed.stderr
            assert "another process is exporting into this directory or annotating" in completed.stderr
            assert "Traceback" not in completed.stderr
        assert (output / "model.onnx").read_bytes() == before
    with _held(output, fcntl.LOCK_SH):
        completed = run_cli(*export, str(output), check=False)
        assert completed.returncode == 1 and "another process" in completed.stderr
        assert (output / "model.onnx").read_bytes() == before
        run_cli("hierarchy", "annotate", str(output))
    assert read_hierarchy(output / "model.onnx").export.model_type == "bert"
    assert sorted(p.name for p in output.iterdir()) == ["config.json", "model.onnx"]
