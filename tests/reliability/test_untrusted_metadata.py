"""A file from the internet is untrusted: malformed, huge, cyclic, inconsistent or future-version metadata,
text that is not UTF-8, names crafted for the HTML view, classes and remote code named by the file.

Each gets a clear error naming the key (``SchemaError``, ``InvalidModelFileError``), from the API and, for a
sample, from the CLI with exit status 1 and no traceback; nothing is evaluated, imported or executed.
(Provenance decoding and ``pkg.optimum_hierarchy.sources`` are covered in ``tests/test_provenance.py``,
random values in ``test_fuzz.py``.)
"""

from __future__ import annotations

import ast
import base64
import json
import shutil
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
from support import run_cli

import optimum_hierarchy
from optimum_hierarchy import HierarchyRetriever, annotate_hierarchy, read_hierarchy, schema
from optimum_hierarchy.annotation.file import annotate_proto
from optimum_hierarchy.errors import HierarchyError, SchemaError
from optimum_hierarchy.html import render_html

Props = dict[str, str]


def _modules(props: Props) -> list[dict[str, Any]]:
    value: list[dict[str, Any]] = json.loads(props[schema.MODULES_KEY])
    return value


def _set_modules(props: Props, edit: Callable[[list[dict[str, Any]]], object]) -> Props:
    modules = _modules(props)
    edit(modules)
    return {**props, schema.MODULES_KEY: json.dumps(modules)}


def _set(key: str, value: str) -> Callable[[Props], Props]:
    return lambda props: {**props, key: value}


def _edit_json(key: str, edit: Callable[[Any], object]) -> Callable[[Props], Props]:
    def apply(props: Props) -> Props:
        value = json.loads(props[key])
        edit(value)
        return {**props, key: json.dumps(value)}

    return apply


def _make_cycle(modules: list[dict[str, Any]]) -> None:
    modules[1]["parent"] = modules[1]["path"]  # a module its own parent


def _add_duplicate(modules: list[dict[str, Any]]) -> None:
    modules.append(dict(modules[1]))


def _add_orphan(modules: list[dict[str, Any]]) -> None:
    modules.append({"path": "ghost.child", "class": "X"})


def _bad_shape(modules: list[dict[str, Any]]) -> None:
    modules[-1]["parameters"] = [{"name": "weight", "shape": [-1]}]


def _parameters_not_a_list(modules: list[dict[str, Any]]) -> None:
    modules[0]["parameters"] = 5


def _lone_surrogate(modules: list[dict[str, Any]]) -> None:
    modules[0]["class"] = "\ud800"


def _empty_segment(modules: list[dict[str, Any]]) -> None:
    modules.append({"path": "encoder.", "class": "X"})


MODEL_CASES: dict[str, tuple[Callable[[Props], Props], str, str]] = {
    # name: (edit of the model-level props, key the message names, words in the message)
    "future_version": (_set(schema.SCHEMA_VERSION_KEY, "2"), schema.SCHEMA_VERSION_KEY, "Upgrade"),
    "version_true": (_set(schema.SCHEMA_VERSION_KEY, "true"), schema.SCHEMA_VERSION_KEY, "version True"),
    "version_float": (_set(schema.SCHEMA_VERSION_KEY, "1.0"), schema.SCHEMA_VERSION_KEY, "version 1.0"),
    "version_string": (_set(schema.SCHEMA_VERSION_KEY, '"1"'), schema.SCHEMA_VERSION_KEY, "version '1'"),
    "version_empty": (_set(schema.SCHEMA_VERSION_KEY, ""), schema.SCHEMA_VERSION_KEY, "not valid JSON"),
    "version_huge_int": (_set(schema.SCHEMA_VERSION_KEY, "9" * 5000), schema.SCHEMA_VERSION_KEY, "not valid JSON"),
    "modules_truncated": (
        lambda p: {**p, schema.MODULES_KEY: p[schema.MODULES_KEY][:-7]},
        schema.MODULES_KEY,
        "not valid JSON",
    ),
    "modules_object": (_set(schema.MODULES_KEY, "{}"), schema.MODULES_KEY, "expected a JSON list"),
    "modules_no_root": (_set(schema.MODULES_KEY, "[]"), "module tree", "root module"),
    "module_own_parent": (lambda p: _set_modules(p, _make_cycle), schema.MODULES_KEY, "does not match path"),
    "module_twice": (lambda p: _set_modules(p, _add_duplicate), "module tree", "appears twice"),
    "module_orphan": (lambda p: _set_modules(p, _add_orphan), "module tree", "has no parent"),
    "module_empty_segment": (lambda p: _set_modules(p, _empty_segment), "module tree", "empty segment"),
    "negative_shape": (lambda p: _set_modules(p, _bad_shape), schema.MODULES_KEY, "non-negative"),
    "parameters_not_a_list": (lambda p: _set_modules(p, _parameters_not_a_list), schema.MODULES_KEY, "a list"),
    "lone_surrogate": (lambda p: _set_modules(p, _lone_surrogate), schema.MODULES_KEY, "not valid Unicode"),
    "deep_nesting": (_set(schema.MODULES_KEY, "[" * 100_000 + "]" * 100_000), schema.MODULES_KEY, "JSON"),
    "export_root_missing": (_set(schema.EXPORT_KEY, '{"root": "nowhere"}'), schema.EXPORT_KEY, "'nowhere'"),
    "export_model_type_list": (
        _edit_json(schema.EXPORT_KEY, lambda v: v.update(model_type=["bert"])),
        schema.EXPORT_KEY,
        "expected a string",
    ),
    "export_missing": (lambda p: {k: v for k, v in p.items() if k != schema.EXPORT_KEY}, schema.EXPORT_KEY, "missing"),
    "summary_unattributed_int": (
        _edit_json(schema.SUMMARY_KEY, lambda v: v.update(unattributed=5)),
        schema.SUMMARY_KEY,
        "expected a list",
    ),
    "summary_negative": (
        _edit_json(schema.SUMMARY_KEY, lambda v: v.update(nodes=-1)),
        schema.SUMMARY_KEY,
        "expected a count",
    ),
    "summary_bool_count": (
        _edit_json(schema.SUMMARY_KEY, lambda v: v["by_source"].update(scope=True)),
        schema.SUMMARY_KEY,
        "count",
    ),
    "provenance_lone_surrogate": (
        lambda p: {**p, schema.PROVENANCE_KEY: _packed({"v": 1, "s": ["\ud800"], "n": []})},
        schema.PROVENANCE_KEY,
        "not valid Unicode",
    ),
}


def _packed(payload: object) -> str:
    return base64.b64encode(zlib.compress(json.dumps(payload).encode())).decode()


@pytest.fixture(scope="module")
def bert(cli_exports: dict[str, Path]) -> onnx.ModelProto:
    return onnx.load(str(cli_exports["bert"] / "model.onnx"), load_external_data=False)


def _with_props(proto: onnx.ModelProto, props: Props) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.metadata_props[:]
    for key, value in props.items():
        out.metadata_props.add(key=key, value=value)
    return out


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_malformed_model_metadata(case: str, bert: onnx.ModelProto) -> None:
    edit, key, words = MODEL_CASES[case]
    props = edit({p.key: p.value for p in bert.metadata_props})
    proto = _with_props(bert, props)
    start = time.monotonic()
    with pytest.raises(SchemaError) as info:
        read_hierarchy(proto)
        annotate_proto(proto, read_hierarchy(bert).tree)  # reads the provenance, which reading does not
    assert time.monotonic() - start < 10.0
    assert key in str(info.value) and words in str(info.value), str(info.value)


def test_over_the_size_limit_is_refused_unparsed(bert: onnx.ModelProto) -> None:
    limit = schema._MAX_JSON_CHARS
    props = {p.key: p.value for p in bert.metadata_props}
    huge = "[" + "0," * (limit // 2) + "0]"
    start = time.monotonic()
    with pytest.raises(SchemaError, match=rf"{schema.MODULES_KEY}: value is {len(huge)} characters, over the limit"):
        read_hierarchy(_with_props(bert, {**props, schema.MODULES_KEY: huge}))
    assert time.monotonic() - start < 5.0


def _node_case(bert: onnx.ModelProto, key: str, value: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    proto.CopyFrom(bert)
    node = proto.graph.node[5]
    kept = [(p.key, p.value) for p in node.metadata_props if p.key != key]
    del node.metadata_props[:]
    for k, v in [*kept, (key, value)]:
        node.metadata_props.add(key=k, value=v)
    return proto


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        (schema.NODE_MODULE_KEY, "encoder.layer.7", "'encoder.layer.7' is not a module of the stored tree"),
        (schema.NODE_SOURCES_KEY, '["encoder", "nowhere"]', "'nowhere' is not a module of the stored tree"),
        (schema.NODE_SOURCES_KEY, '["\\ud800"]', "not valid Unicode"),
        (schema.NODE_SOURCES_KEY, "[" * 50 + "]" * 50, "deeper than"),
    ],
)
def test_inconsistent_node_metadata(bert: onnx.ModelProto, key: str, value: str, words: str) -> None:
    proto = _node_case(bert, key, value)
    with pytest.raises(SchemaError) as info:
        read_hierarchy(proto)
    assert key in str(info.value) and words in str(info.value)
    assert repr(proto.graph.node[5].name) in str(info.value)  # names the node


def _utf8_broken(data: bytes, text: str) -> bytes:
    """``data`` with the UTF-8 of ``text`` replaced by invalid UTF-8 of the same length."""
    encoded = text.encode()
    assert data.count(encoded) >= 1
    return data.replace(encoded, b"\xff" * len(encoded))


@pytest.mark.parametrize("where", ["node_name", "tensor_name", "node_metadata", "model_metadata"])
def test_text_that_is_not_utf8(where: str, cli_exports: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    data = (cli_exports["bert"] / "model.onnx").read_bytes()
    target = {
        "node_name": "/encoder/layer.0/attention/self/query/MatMul",
        "tensor_name": "/encoder/layer.1/output/dense/Add_output_0",
        "node_metadata": "encoder/layer/0/attention/self/query",
        "model_metadata": '"model_type":"bert"',
    }[where]
    path.write_bytes(_utf8_broken(data, target))
    before = path.read_bytes()
    with pytest.raises(HierarchyError) as info:
        HierarchyRetriever(path)
    assert str(path) in str(info.value) or schema.EXPORT_KEY in str(info.value)
    with pytest.raises(HierarchyError):
        annotate_hierarchy(path)
    assert path.read_bytes() == before
    completed = run_cli("hierarchy", "annotate", str(path), check=False)
    assert completed.returncode == 1 and "error:" in completed.stderr and "Traceback" not in completed.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.cli
def test_cli_reports_malformed_metadata_without_a_traceback(bert: onnx.ModelProto, tmp_path: Path) -> None:
    props = {p.key: p.value for p in bert.metadata_props}
    cases = {
        "future.onnx": (MODEL_CASES["future_version"][0](props), schema.SCHEMA_VERSION_KEY),
        "cycle.onnx": (MODEL_CASES["module_own_parent"][0](props), schema.MODULES_KEY),
        "bomb.onnx": (MODEL_CASES["deep_nesting"][0](props), schema.MODULES_KEY),
    }
    for name, (case_props, key) in cases.items():
        path = tmp_path / name
        onnx.save(_with_props(bert, case_props), str(path))
        before = path.read_bytes()
        for args in (("tree", str(path)), ("annotate", str(path)), ("view", str(path), "-o", str(tmp_path / "v.html"))):
            completed = run_cli("hierarchy", *args, check=False)
            assert completed.returncode == 1, (name, args, completed.stderr)
            assert "error:" in completed.stderr and key in completed.stderr, completed.stderr
            assert "Traceback" not in completed.stderr
        assert path.read_bytes() == before
    onnx.save(_node_case(bert, schema.NODE_MODULE_KEY, "nowhere"), str(tmp_path / "node.onnx"))
    completed = run_cli("hierarchy", "show", str(tmp_path / "node.onnx"), bert.graph.node[5].name, check=False)
    assert completed.returncode == 1 and "is not a module of the stored tree" in completed.stderr
    assert not (tmp_path / "v.html").exists()


# --- nothing the file says is evaluated, imported or executed -------------------------------------------

_FORBIDDEN_CALLS = {"eval", "exec", "literal_eval", "ast.literal_eval", "builtins.eval", "builtins.exec", "torch.load"}
_FORBIDDEN_MODULES = {"pickle", "marshal", "shelve", "dill", "cloudpickle", "yaml"}


def test_the_package_never_evaluates_or_unpickles() -> None:
    """No ``eval``/``exec``/``ast.literal_eval``, no pickle-like module: an AST scan of the package source."""
    root = Path(optimum_hierarchy.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) > 20
    found = []
    for file in files:
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                found += [f"{file.name}: import {n}" for n in names if n and n.split(".")[0] in _FORBIDDEN_MODULES]
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name):
                    called = func.id
                elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                    called = f"{func.value.id}.{func.attr}"
                else:
                    called = ""
                if called in _FORBIDDEN_CALLS:
                    found.append(f"{file.name}:{node.lineno}: {called}(...)")
            trusting = isinstance(node, ast.keyword) and node.arg == "trust_remote_code"
            if trusting and not (isinstance(node.value, ast.Constant) and node.value.value is False):
                found.append(f"{file.name}:{node.lineno}: trust_remote_code that is not False")
    assert found == []


def test_dynamo_exporter_keys_are_never_read(bert: onnx.ModelProto, tmp_path: Path) -> None:
    """The dynamo exporter's ``pkg.torch.onnx.*`` values are Python reprs, read only by the strict parser of
    ``evidence/dynamo_metadata.py`` (no eval).

    A file carrying such keys with a value that would run code if evaluated is read and annotated, and
    the values are kept as they are.
    """
    root = Path(optimum_hierarchy.__file__).parent
    readers = [f.name for f in root.rglob("*.py") if '"pkg.torch.onnx' in f.read_text(encoding="utf-8")]
    assert readers == ["dynamo_metadata.py"]
    marker = tmp_path / "EVALUATED"
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    proto = onnx.ModelProto()
    proto.CopyFrom(bert)
    for node in proto.graph.node[:3]:
        node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=payload)
        node.metadata_props.add(key="pkg.torch.onnx.class_hierarchy", value=f"[{payload}]")
    path = tmp_path / "model.onnx"
    onnx.save(proto, str(path))
    HierarchyRetriever(path).group_operations_by_hierarchy()
    render_html(HierarchyRetriever(path), "t")
    annotate_hierarchy(path)
    stored = onnx.load(str(path))
    for node in stored.graph.node[:3]:
        props = {p.key: p.value for p in node.metadata_props}
        assert props["pkg.torch.onnx.name_scopes"] == payload
    assert not marker.exists()


def test_html_view_cannot_be_broken_out_of_by_names(bert: onnx.ModelProto) -> None:
    """Node names are the file's: crafted ones must not end the data's <script> element or open a comment."""
    proto = onnx.ModelProto()
    proto.CopyFrom(bert)
    proto.graph.node[0].name = "</script><script>alert(1)</script>"
    proto.graph.node[1].name = "<!--<script>"
    page = render_html(HierarchyRetriever(proto), "<b>title</b>")
    plain = render_html(HierarchyRetriever(bert), "t")
    assert page.count("<script") == plain.count("<script") and page.count("</script>") == plain.count("</script>")
    assert "<!--" not in page and "<b>" not in page
    start = page.index('id="hierarchy-data">') + len('id="hierarchy-data">')
    data = json.loads(page[start : page.index("</script>", start)])
    assert data["nodes"]["name"][0] == "</script><script>alert(1)</script>"


def test_compare_imports_no_class_the_file_names(
    bert: onnx.ModelProto, model_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``compare`` loads the PyTorch class recorded at export; a file naming another module must not import it."""
    from optimum_hierarchy.tools.compare import compare_with_pytorch

    module = tmp_path / "evil_module_for_optimum_hierarchy.py"
    marker = tmp_path / "IMPORTED"
    module.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\nclass Model:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    props = {p.key: p.value for p in bert.metadata_props}
    modules = _modules(props)
    assert modules[0]["path"] == ""
    modules[0]["class"] = "evil_module_for_optimum_hierarchy.Model"  # the root's class is what compare loads
    path = tmp_path / "model.onnx"
    onnx.save(_with_props(bert, {**props, schema.MODULES_KEY: json.dumps(modules)}), str(path))
    with pytest.raises(HierarchyError, match="not a transformers class"):
        compare_with_pytorch(path, model_dirs["bert"])
    assert not marker.exists()
    assert "evil_module_for_optimum_hierarchy" not in sys.modules


@pytest.fixture
def remote_code_dir(tmp_path: Path) -> tuple[Path, Path]:
    """A model directory whose config asks for its own code (auto_map), which would leave a marker if run."""
    directory = tmp_path / "remote"
    directory.mkdir()
    marker = tmp_path / "REMOTE_CODE_RAN"
    (directory / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil_custom",
                "architectures": ["EvilModel"],
                "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"},
            }
        )
    )
    code = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    (directory / "configuration_evil.py").write_text(code + "from transformers import PretrainedConfig\n")
    (directory / "modeling_evil.py").write_text(code)
    return directory, marker


@pytest.mark.cli
def test_remote_code_is_not_run_unless_asked(
    remote_code_dir: tuple[Path, Path], plain_exports: dict[str, Path], tmp_path: Path
) -> None:
    directory, marker = remote_code_dir
    model = tmp_path / "plain.onnx"
    shutil.copy(plain_exports["bert"] / "model.onnx", model)
    before = model.read_bytes()
    with pytest.raises(HierarchyError, match="cannot be read as a transformers config"):
        annotate_hierarchy(model, config=directory)
    completed = run_cli("hierarchy", "annotate", str(model), "--config", str(directory), check=False)
    assert completed.returncode == 1 and "error:" in completed.stderr and "Traceback" not in completed.stderr
    output = tmp_path / "out"
    completed = run_cli(
        "export", "onnx", "--model", str(directory), "--task", "feature-extraction", "--hierarchy", str(output),
        check=False,
    )  # fmt: skip
    assert completed.returncode == 1 and "trust_remote_code" in completed.stderr, completed.stderr
    assert "Traceback" not in completed.stderr
    assert not marker.exists()
    assert model.read_bytes() == before
    assert not output.exists()
