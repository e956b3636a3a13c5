"""Terminal output of the CLI (``optimum_hierarchy.cli.output``): piped output never wraps a module path."""

from __future__ import annotations

import os
import subprocess
import sys

PATH = "model.language_model.layers.27.self_attn.rotary_emb.inner_projection.q_proj.lora_A.default"
PRINT_TABLE = f"""
from rich.table import Table
from optimum_hierarchy.cli.output import console
table = Table(title="nodes")
for column in ("node", "op", "module", "source"):
    table.add_column(column)
for i in range(3):
    table.add_row(f"/{PATH.replace(".", "/")}/MatMul_{{i}}", "MatMul", "{PATH}", "metadata")
console().print(table)
console().print("module: {PATH} (a line longer than 80 columns, not a table) " + "x" * 40, highlight=False)
print("width", console().width)
"""


def _env(columns: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE"}}
    return env if columns is None else {**env, "COLUMNS": columns}


def test_piped_output_keeps_a_deep_module_path_whole_at_80_columns() -> None:
    assert len(PATH) > 80
    for columns in ("80", None):
        completed = subprocess.run(
            [sys.executable, "-c", PRINT_TABLE], capture_output=True, text=True, env=_env(columns), check=True
        )
        lines = completed.stdout.splitlines()
        rows = [line for line in lines if "MatMul_" in line]
        assert len(rows) == 3, completed.stdout  # one table row per line
        assert all(f" {PATH} " in row for row in rows), completed.stdout
        assert any(f"module: {PATH} (a line" in line and line.endswith("x" * 40) for line in lines), completed.stdout


def test_a_terminal_keeps_its_width() -> None:
    """On a terminal (a pseudo-terminal here) rich wraps to the width, which ``COLUMNS`` sets."""
    import pty

    parent, child = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", "from optimum_hierarchy.cli.output import console; print('width', console().width)"],
            stdout=child, stderr=subprocess.DEVNULL, env=_env("80"),
        )  # fmt: skip
        os.close(child)
        output = b""
        while True:
            try:
                chunk = os.read(parent, 1024)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=60) == 0
    finally:
        os.close(parent)
    assert b"width 80" in output
