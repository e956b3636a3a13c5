"""Fault injection for the reliability tests: a subprocess paused inside a write, to be interrupted or killed there.

Importable as ``reliability.faults`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

PAUSED = "PAUSED-INSIDE-THE-WRITE"

_PATCH = """
import os, sys, time

_real_fsync, _real_replace = os.fsync, os.replace

def _pause():
    sys.stdout.write({paused!r} + "\\n")
    sys.stdout.flush()
    time.sleep(300)

def _fsync(fd):
    # Pause on the first flush of one of our temporary files, once it holds all its data.
    if os.readlink(f"/proc/self/fd/{{fd}}").endswith(".tmp"):
        _pause()
    return _real_fsync(fd)

def _replace(src, dst, *args, **kwargs):
    if os.path.basename(os.fspath(dst)) == {target!r}:
        _pause()
    return _real_replace(src, dst, *args, **kwargs)

os.{function} = _{function}
"""

_CLI = """
sys.argv = ["optimum-cli", *{args!r}]
from optimum.commands.optimum_cli import main
main()
"""


def paused_cli(args: list[str], *, at: str, target: str, cwd: Path) -> subprocess.Popen[str]:
    """Start the real ``optimum-cli`` with ``args``, paused at ``os.fsync`` or ``os.replace`` (``at``) of the
    write of the file named ``target``; returns once it is paused there."""
    assert at in ("fsync", "replace")
    code = _PATCH.format(paused=PAUSED, target=target, function=at) + _CLI.format(args=args)
    # Not run from the checkout: `python -c` puts the working directory on sys.path, and Optimum would find
    # the plugin file twice (see CONTRIBUTING).
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip() == PAUSED:
            return process
    process.wait()
    raise AssertionError(f"optimum-cli {' '.join(args)} ended without reaching the write:\n{process.stderr.read()}")  # type: ignore[union-attr]


def interrupt(process: subprocess.Popen[str], sig: signal.Signals) -> int:
    """Send ``sig`` to the paused process and return its exit status."""
    process.send_signal(sig)
    try:
        return process.wait(timeout=60)
    finally:
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def temporaries(directory: Path) -> list[str]:
    """Our temporary files in ``directory`` (hidden, ``.tmp``), and any other hidden file."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def _restricted_prefix() -> list[str] | None:
    """How to run a command that file permissions apply to: as is for a normal user; for root, without the
    capabilities that bypass them (``setpriv``); ``None`` when that is not possible here."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    try:
        subprocess.run([*prefix, "true"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return prefix


RESTRICTED = _restricted_prefix()


def run_restricted_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real ``optimum-cli`` with file permissions enforced (even for root)."""
    from support import OPTIMUM_CLI

    assert RESTRICTED is not None
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([*RESTRICTED, OPTIMUM_CLI, *args], capture_output=True, text=True, env=env, check=False)
