"""The README's code blocks as written: the cheap ones run on tiny local models, the set-up commands are checked.

Every ``bash`` line of the README is either a set-up command (``bash scripts/...``, ``bash .ci/...``,
``pip install ...``, with ``VAR=value`` prefixes), checked for the files, versions, extras and variables it
names because it creates venvs; or an ``optimum-cli`` command, run for real. Each example section's
``python`` blocks and ``optimum-cli`` lines run in order in one fresh directory (no hub, no network), and
a ``text`` block right after a ``python`` block holds lines that must each appear in what it printed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from support import OPTIMUM_CLI
from test_docs import CodeBlock, code_blocks

from optimum_hierarchy.demo import TINY_MODELS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = code_blocks(README)
MAX_LINES = 150
SETUP_SCRIPTS = ("scripts/demo", ".ci/setup")  # what `bash scripts/demo` and `bash .ci/run` run to set up

_ENV = re.compile(r"^[A-Z][A-Z0-9_]*=")


def _commands(block: CodeBlock) -> list[list[str]]:
    """The shell commands of a block, one per non-comment line, split as the shell would (comments dropped)."""
    return [
        shlex.split(line, comments=True)
        for line in block.text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _kind(words: list[str]) -> str:
    program = [w for w in words if not _ENV.match(w)]
    if program[:1] == ["optimum-cli"]:
        return "run"
    if program[:1] in (["bash"], ["pip"]):
        return "setup"
    return "unknown"


def _shell_commands(kind: str) -> list[list[str]]:
    return [words for b in BLOCKS if b.language == "bash" for words in _commands(b) if _kind(words) == kind]


def test_the_readme_is_a_front_page() -> None:
    assert len(README.splitlines()) <= MAX_LINES
    sections = {b.section for b in BLOCKS}
    assert {"Install", "Two commands for a newcomer"} <= sections
    assert any(s.startswith("Example: an encoder") for s in sections)
    assert any(s.startswith("Example: a generative model") for s in sections)


def test_every_code_block_is_one_this_test_knows() -> None:
    assert BLOCKS
    for block in BLOCKS:
        assert block.language in {"python", "bash", "text"}, f"README.md:{block.line}: ```{block.language}"
        if block.language == "bash":
            for words in _commands(block):
                assert _kind(words) != "unknown", f"README.md:{block.line}: {' '.join(words)}"
        if block.language == "text":  # expected output: right after the python block it belongs to
            before = BLOCKS[BLOCKS.index(block) - 1]
            assert BLOCKS.index(block) > 0 and before.language == "python" and before.section == block.section
    assert _shell_commands("setup") and _shell_commands("run")


def _script_variables() -> set[str]:
    """The environment variables the set-up scripts read (``${NAME`` in their text)."""
    text = "".join((ROOT / script).read_text(encoding="utf-8") for script in SETUP_SCRIPTS)
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))


def test_setup_commands_name_what_exists() -> None:
    """They create venvs, so they are not run here: their scripts, versions, extras and variables exist."""
    setup_text = (ROOT / ".ci" / "setup").read_text(encoding="utf-8")
    torch_pin = re.search(r'"torch==([0-9.]+)"', setup_text)
    assert torch_pin is not None
    extras = set(re.findall(r"^([a-z][a-z0-9-]*) = \[", (ROOT / "pyproject.toml").read_text(), re.MULTILINE))
    assert "onnx" in extras
    variables = _script_variables()
    checked = 0
    for words in _shell_commands("setup"):
        for assignment in (w for w in words if _ENV.match(w)):
            assert assignment.split("=")[0] in variables, assignment
        program = [w for w in words if not _ENV.match(w)]
        if program[0] == "bash":
            script = ROOT / program[1]
            assert script.is_file() and os.access(script, os.X_OK), program[1]
            assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0, program[1]
            if program[1] == "scripts/demo" and "--model" in program:
                assert program[program.index("--model") + 1] in TINY_MODELS
        else:
            assert program[:2] == ["pip", "install"], program
            for target in program[2:]:
                if target.startswith("torch=="):
                    assert target == f"torch=={torch_pin.group(1)}"  # the version the scripts install
                elif target.startswith("."):
                    named = re.fullmatch(r"\.(?:\[([a-z,-]+)\])?", target)
                    assert named is not None, target
                    assert set(filter(None, (named.group(1) or "").split(","))) <= extras, target
        checked += 1
    assert checked >= 3


def test_variables_the_readme_names_are_read_by_the_scripts() -> None:
    """``TORCH_INDEX_URL=...`` in the text (not only in code blocks) is a variable the set-up scripts read."""
    named = set(re.findall(r"`([A-Z][A-Z0-9_]+)=", README))
    assert {"TORCH_INDEX_URL", "TORCH_WHEEL"} <= named
    assert named <= _script_variables()


def _example_sections() -> list[str]:
    return [s for s in dict.fromkeys(b.section for b in BLOCKS) if s.startswith("Example")]


def _needs(section: str) -> str | None:
    """Why a section cannot run on this stack, or None."""
    code = "".join(b.text for b in BLOCKS if b.section == section and b.language == "python")
    if "transformers.exporters" in code and importlib.util.find_spec("transformers.exporters") is None:
        return "transformers' own exporter (transformers >= 5.23)"
    return None


@pytest.mark.parametrize("section", _example_sections())
def test_example_runs_as_written(section: str, tmp_path: Path) -> None:
    reason = _needs(section)
    if reason is not None:
        pytest.skip(f"needs {reason}")
    blocks = [b for b in BLOCKS if b.section == section]
    ran = 0
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for index, block in enumerate(blocks):
        if block.language == "python":
            completed = subprocess.run(
                [sys.executable, "-c", block.text], cwd=tmp_path, capture_output=True, text=True, env=env, check=False
            )
            assert completed.returncode == 0, f"README.md:{block.line}:\n{completed.stderr[-3000:]}"
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            if following is not None and following.language == "text":
                printed = completed.stdout.splitlines()
                for line in following.text.splitlines():
                    assert line in printed, f"README.md:{following.line}: {line!r} not printed:\n{completed.stdout}"
            ran += 1
        elif block.language == "bash":
            for words in _commands(block):
                assert _kind(words) == "run", words
                completed = subprocess.run(
                    [OPTIMUM_CLI, *words[1:]], cwd=tmp_path, capture_output=True, text=True, env=env, check=False
                )
                assert completed.returncode == 0, f"README.md:{block.line}: {' '.join(words)}:\n{completed.stderr}"
                assert "Traceback" not in completed.stderr
                ran += 1
    assert ran >= 2  # a python block and at least one command
