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
    """The session state imports no exporter module; results and export records sit below exporters/."""
    graph = import_graph(module_files())
    assert f"{EXPORTERS}.session_state" in graph
    assert not {m for m in graph[f"{EXPORTERS}.session_state"] if m.startswith(EXPORTERS + ".")}
    annotation = [m for m in graph if m.startswith("optimum_hierarchy.annotation.")]
    assert {"optimum_hierarchy.annotation.results", "optimum_hierarchy.annotation.export_info"} <= set(annotation)
    for module in annotation:  # the annotation layer is below every exporter
        assert not {m for m in graph[module] if m.startswith(EXPORTERS)}, module
    assert {m for m in graph["optimum_hierarchy.annotation.results"] if m.startswith("optimum_hierarchy.")} <= {
        "optimum_hierarchy.annotation",
        "optimum_hierarchy.schema",
        "optimum_hierarchy.errors",
    }
    for user in ("onnx_config", "optimum_dynamo"):
        assert f"{EXPORTERS}.session_state" in graph[f"{EXPORTERS}.{user}"]
        assert f"{EXPORTERS}.session" not in graph[f"{EXPORTERS}.{user}"]
