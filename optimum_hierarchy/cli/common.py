"""What the ``optimum-cli hierarchy`` commands share: their common arguments, and printing a result as JSON or a table.

Import-light: Optimum imports every command, and so this module, at ``optimum-cli`` start-up; what
is heavy (rich, the package's errors and tools) is imported inside :func:`query`, which runs only
inside a command's ``run``. It imports no command module, so every command can import it.
"""

from __future__ import annotations

__all__ = [
    "OPTIMIZATION_LEVELS",
    "json_argument",
    "model_argument",
    "model_explorer_argument",
    "optimization_level_argument",
    "query",
    "shape_argument",
]

import json
import sys
from argparse import ArgumentParser
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optimum_hierarchy.tools.choices import OPTIMIZATION_LEVELS


def model_argument(parser: ArgumentParser, name: str = "model", help_text: str = "An annotated .onnx file.") -> None:
    parser.add_argument(name, type=Path, help=help_text)


def json_argument(parser: ArgumentParser, *, instead_of: str = "a table") -> None:
    """``--json``: print what the command computed as JSON (stable key order) instead of ``instead_of``."""
    parser.add_argument("--json", action="store_true", help=f"Print JSON (stable key order) instead of {instead_of}.")


def shape_argument(parser: ArgumentParser, help_text: str) -> None:
    """``--shape NAME=VALUE`` (repeatable): a size of the generated inputs, read by ``tools.inputs.parse_shapes``."""
    parser.add_argument("--shape", action="append", default=[], metavar="NAME=VALUE", help=help_text)


def optimization_level_argument(parser: ArgumentParser, help_text: str) -> None:
    """``--optimization-level``: ONNX Runtime's graph optimizations by name (default ``all``)."""
    parser.add_argument("--optimization-level", choices=OPTIMIZATION_LEVELS, default="all", help=help_text)


def model_explorer_argument(parser: ArgumentParser, what: str) -> None:
    """``--model-explorer OUT.json``: ``what`` each node gets in Model Explorer's per-node data."""
    parser.add_argument(
        "--model-explorer",
        type=Path,
        default=None,
        metavar="OUT.json",
        help=f"Also write {what} as Model Explorer's per-node data (open it beside the model with the "
        "model-explorer-onnx adapter: see docs/usage.md).",
    )


def query(command: Any, produce: Callable[[Any], Any], render: Callable[[Any], Any]) -> None:
    """Compute the data from the command's arguments, print it as JSON or rendered; on an error, its message, exit 1."""
    from optimum_hierarchy.cli.output import console as make_console
    from optimum_hierarchy.cli.output import print_error
    from optimum_hierarchy.errors import HierarchyError

    try:
        data = produce(command.args)
    except HierarchyError as e:
        print_error(str(e))
        sys.exit(1)
    except KeyError as e:
        print_error(str(e.args[0]) if e.args else str(e))
        sys.exit(1)
    except OSError as e:  # a file that cannot be read or written, met below the checks that name it
        print_error(f"{e}. Check the path and its permissions.")
        sys.exit(1)
    if getattr(command.args, "json", False):
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        make_console().print(render(data))


def calibration_arguments(parser: ArgumentParser, generated: str) -> None:
    """``--inputs``, ``--text``, ``--texts``, ``--images`` (one of them) and ``--shape``: the calibration inputs.

    ``generated`` says what the command uses when none is given (with the ``--shape`` sizes).
    """
    sample = parser.add_mutually_exclusive_group()
    sample.add_argument(
        "--inputs",
        type=Path,
        default=None,
        metavar="FILE.npz",
        help=f"Calibration inputs: one array per graph input, by name (default: {generated}).",
    )
    sample.add_argument(
        "--text",
        nargs="+",
        default=None,
        metavar="TEXT",
        help="Calibration text, tokenized by the tokenizer saved in the model's directory.",
    )
    sample.add_argument(
        "--texts", type=Path, default=None, metavar="FILE.txt", help="Calibration text, one sample a line."
    )
    sample.add_argument(
        "--images",
        nargs="+",
        type=Path,
        default=None,
        metavar="IMAGE",
        help="Calibration images, processed by the image processor saved in the model's directory (PIL).",
    )
    shape_argument(parser, "A dimension of the generated inputs, e.g. batch_size=4 (repeatable).")


def calibration_feeds(a: Any) -> dict[str, Any] | None:
    """The calibration inputs :func:`calibration_arguments` gave, checked against ``a.model``; None: none given."""
    from optimum_hierarchy.errors import HierarchyError
    from optimum_hierarchy.tools import calibration

    if not a.model.is_file():
        raise HierarchyError(f"{a.model}: no such ONNX file.")
    if a.inputs is not None:
        feeds, what = calibration.load_npz(a.inputs), f"--inputs {a.inputs}"
    elif a.text is not None:
        feeds, what = calibration.text_feeds(a.model, a.text), "--text"
    elif a.texts is not None:
        texts = calibration.read_text_file(a.texts)
        feeds, what = calibration.text_feeds(a.model, texts, what=f"--texts {a.texts}"), f"--texts {a.texts}"
    elif a.images is not None:
        feeds, what = calibration.image_feeds(a.model, a.images), "--images"
    else:
        return None
    return calibration.check_feeds(a.model, feeds, what=what)
