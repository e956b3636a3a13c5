"""Links in README.md, CONTRIBUTING.md and docs/*.md: every anchor names a heading, every relative path exists.

Also the Markdown helpers ``tests/test_readme.py`` runs the README's code blocks with (:func:`code_blocks`), and
docs/cli.md against the commands the plugin registers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`]*`")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_INLINE_LINK_TEXT = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
_BLOCK = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class CodeBlock:
    """A fenced code block: its language, its text, the line its fence opens on, and the heading above it."""

    language: str
    text: str
    line: int
    section: str


def code_blocks(text: str) -> list[CodeBlock]:
    """The fenced (```) code blocks of a Markdown text, in order, each with the nearest ``##`` heading above it."""
    headings = [(m.start(), m.group(1)) for m in re.finditer(r"^##[ \t]+(.+?)[ \t]*$", text, re.MULTILINE)]
    found = []
    for match in _BLOCK.finditer(text):
        section = next((title for start, title in reversed(headings) if start < match.start()), "")
        line = text.count("\n", 0, match.start()) + 1
        found.append(CodeBlock(match.group(1), match.group(2), line, section))
    return found


def _without_fences(text: str) -> str:
    return _FENCE.sub("", text)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lowercased, punctuation removed, spaces to '-'."""
    text = _INLINE_LINK_TEXT.sub(r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a Markdown text; a repeated one gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for match in _HEADING.finditer(_without_fences(text)):
        anchor = github_anchor(match.group(1))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def links(text: str) -> list[str]:
    """The targets of the inline links of a Markdown text, outside code blocks and code spans."""
    return [match.group(1) for match in _LINK.finditer(_CODE_SPAN.sub("", _without_fences(text)))]


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(document: Path) -> list[str]:
    """Each link of ``document`` whose file or heading does not exist, with the reason."""
    broken = []
    for target in links(document.read_text(encoding="utf-8")):
        if _SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (document.parent / path_part).resolve() if path_part else document
        if not resolved.exists():
            broken.append(f"{target}: no file {_shown(resolved)}")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading with anchor #{anchor} in {_shown(resolved)}")
    return broken


def test_the_documents_exist() -> None:
    assert (ROOT / "README.md") in DOCUMENTS and (ROOT / "CONTRIBUTING.md") in DOCUMENTS
    assert len(DOCUMENTS) > 2, "docs/*.md is empty"
    assert all(document.is_file() for document in DOCUMENTS)


def test_anchor_rule() -> None:
    """GitHub's rule, on headings of the kinds these documents use (expected values written by hand)."""
    assert github_anchor("Export without optimum-onnx: `optimum-cli hierarchy export`") == (
        "export-without-optimum-onnx-optimum-cli-hierarchy-export"
    )
    assert github_anchor("Through Optimum: `optimum-cli export onnx --hierarchy`") == (
        "through-optimum-optimum-cli-export-onnx---hierarchy"
    )
    assert github_anchor("Which stack, which entry points") == "which-stack-which-entry-points"
    assert github_anchor("int4 weight-only by module") == "int4-weight-only-by-module"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_link_scanner() -> None:
    text = "[a](#x) `[b](#code-span)` [c\nd](docs/e.md#f) [g](https://example.org)\n```\n[h](#fenced)\n```\n"
    assert links(text) == ["#x", "docs/e.md#f", "https://example.org"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(document: Path) -> None:
    assert not broken_links(document), f"{document.relative_to(ROOT)}: broken links: {broken_links(document)}"


def test_documents_link_somewhere() -> None:
    """The check above is not vacuous: the README links to docs/ and to their headings, the docs to their own."""
    targets = links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert any(t.startswith("docs/") and "#" in t for t in targets)
    assert any(t.startswith("#") for t in links((ROOT / "docs" / "usage.md").read_text(encoding="utf-8")))


def test_code_blocks() -> None:
    text = "# T\n## One\n```python\nprint(1)\n```\ntext\n## Two\n```bash\nls\n# c\n```\n```\nplain\n```\n"
    assert code_blocks(text) == [
        CodeBlock("python", "print(1)\n", 3, "One"),
        CodeBlock("bash", "ls\n# c\n", 8, "Two"),
        CodeBlock("", "plain\n", 12, "Two"),
    ]


def test_the_command_page_lists_every_registered_command() -> None:
    """docs/cli.md has a row for each subcommand of `optimum-cli hierarchy`, read from the group itself."""
    from optimum_hierarchy.cli.hierarchy import COMMANDS

    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([a-z-]+)` \|", page, re.MULTILINE))
    assert COMMANDS and rows
    assert {info.name for info in COMMANDS} <= rows, {info.name for info in COMMANDS} - rows


_DOTTED = re.compile(r"(?<![\w.])optimum_hierarchy(?:\.\w+)+")
REMOVED = {"optimum_hierarchy.tools.session"}
"""Names the documents mention as removed or renamed (docs/usage.md, "Names removed in 0.3")."""


def _resolves(dotted: str) -> bool:
    """Whether ``a.b.c`` is a module, or an attribute of the longest importable module prefix."""
    import importlib

    from optimum_hierarchy.errors import MissingExtraError, has_optimum_onnx

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except MissingExtraError:
            return not has_optimum_onnx()  # a module of the onnx extra: checked on the stack that has it
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_python_names_in_the_documents_exist() -> None:
    """Every ``optimum_hierarchy.x.y`` a document names is a module or a name in one (modules move: H4's layers)."""
    named = {
        match.group(0).rstrip(".")
        for document in DOCUMENTS
        for span in _CODE_SPAN.findall(document.read_text(encoding="utf-8"))
        for match in _DOTTED.finditer(span)
    }
    assert len(named) > 10  # the scan found the names
    missing = sorted(n for n in named - REMOVED if not _resolves(n))
    assert not missing, f"named in README.md, CONTRIBUTING.md or docs/ but not in the package: {missing}"
