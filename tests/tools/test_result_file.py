"""Reading back what `hierarchy profile --json` and `hierarchy error --json` write (tools/result_file.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.tools.error import module_errors, read_error_report
from optimum_hierarchy.tools.int4 import quantize_int4
from optimum_hierarchy.tools.profile import profile_model, read_profile


def test_profile_and_error_report_read_back_as_written(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    """A real profile and a real error report, written as the CLI writes them, read back equal."""
    model = cli_exports["bert"] / "model.onnx"
    profile = profile_model(model, runs=2, warmup=1)
    assert profile.modules and profile.nodes
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile.to_dict(), indent=2, sort_keys=True))
    assert read_profile(path) == profile == read_profile(profile.to_dict())

    candidate = tmp_path / "int4.onnx"
    quantize_int4(model, candidate, block_size=32)
    report = module_errors(model, candidate)
    assert any(m.local is not None for m in report.modules)
    path = tmp_path / "error.json"
    path.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True))
    assert read_error_report(path) == report

    # A row written before own errors were measured has no own_* fields: own is None.
    old = report.to_json()
    for row in old["modules"]:
        for field in ("max_abs", "rel_l2", "cosine"):
            del row[f"own_{field}"]
    assert all(m.own is None for m in read_error_report(old).modules)


@pytest.mark.parametrize(
    ("reader", "content", "message"),
    [
        (read_profile, {"runs": 1, "modules": [{"path": ""}]}, "'subtree_us' and 'own_us' must be microseconds"),
        (read_profile, {"runs": True, "modules": []}, "positive number of runs"),
        (read_error_report, {"modules": [{"module": "", "local_max_abs": 1}]}, "must be numbers or null"),
        (read_error_report, {"modules": [{"module": ""}]}, "'class' must be a string"),
        (read_error_report, {"modules": "x"}, "expected a 'modules' list"),
    ],
)
def test_not_a_result(reader: object, content: object, message: str, tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text(json.dumps(content))
    with pytest.raises(HierarchyError, match=message) as caught:
        reader(path)  # type: ignore[operator]
    assert str(caught.value).startswith(f"{path}: not ")
