"""The export session's state, one floor below the code that uses it."""

from __future__ import annotations

from test_imports import import_graph, module_files

from optimum_hierarchy.exporters.session_state import ExportSession, active_session, current_session

EXPORTERS = "optimum_hierarchy.exporters"


def test_active_session_is_current_for_the_block_only() -> None:
    outer, inner = ExportSession(), ExportSession(strict=True)
    assert current_session() is None
    with active_session(outer):
        assert current_session() is outer
        with active_session(inner):
            assert current_session() is inner
        assert current_session() is outer
    assert current_session() is None


def test_what_the_session_and_its_patches_share_imports_neither() -> None:
    """Results, export records and the session state import no exporter module but each other."""
    graph = import_graph(module_files())
    floor = {f"{EXPORTERS}.results", f"{EXPORTERS}.export_info", f"{EXPORTERS}.session_state"}
    for module in sorted(floor):
        assert module in graph
        exporters = {m for m in graph[module] if m.startswith(EXPORTERS + ".")}
        assert exporters <= floor, (module, exporters - floor)
    assert {m for m in graph[f"{EXPORTERS}.results"] if m.startswith("optimum_hierarchy.")} <= {
        "optimum_hierarchy.schema",
        "optimum_hierarchy.errors",
    }
    for user in ("onnx_config", "optimum_dynamo"):
        assert f"{EXPORTERS}.session_state" in graph[f"{EXPORTERS}.{user}"]
        assert f"{EXPORTERS}.session" not in graph[f"{EXPORTERS}.{user}"]
