"""One self-contained HTML text from the page's files (``page.html``, ``page.css``, ``page.js``), its data and pictures.

The files are package data, read with :mod:`importlib.resources`; the page links its style and script
(``<link href="page.css">``, ``<script src="page.js">``) so that it opens as it is while it is being
edited, and those two tags are replaced by the files' text. The data is JSON inside a
``<script type="application/json">`` element with every ``<`` written ``\\u003c``, so no name from the
model can end the element or open a comment in it; the title is HTML-escaped. Pictures are SVG text
(drawn by :mod:`optimum_hierarchy.plots`) placed in ``<figure>`` elements, stripped of what an inline SVG
does not need (the XML prolog, comments, metadata, namespace URLs).
"""

from __future__ import annotations

__all__ = ["Picture", "assemble_page", "page_file"]

import dataclasses
import html
import json
import re
from importlib import resources
from typing import Any

_STYLE_LINK = '<link rel="stylesheet" href="page.css">'
_SCRIPT_LINK = '<script src="page.js"></script>'
_DATA = '<script type="application/json" id="hierarchy-data">null</script>'
_PICTURES = '<section id="pictures" hidden></section>'
_TITLE = "{{title}}"


@dataclasses.dataclass(frozen=True)
class Picture:
    """A picture of the page: its element ``id``, a caption, and SVG text."""

    id: str
    caption: str
    svg: str


def page_file(name: str) -> str:
    """The text of one of the page's files (``page.html``, ``page.css``, ``page.js``)."""
    return resources.files("optimum_hierarchy.view").joinpath(name).read_text(encoding="utf-8")


_DROPPED = re.compile(
    r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>|<!--.*?-->|<metadata\b.*?</metadata>|\s+xmlns(?::\w+)?=\"[^\"]*\"",
    re.DOTALL | re.IGNORECASE,
)


def _inline_svg(svg: str) -> str:
    """SVG text as an element of an HTML page: from ``<svg`` on, without prolog, comments, metadata or xmlns."""
    text = _DROPPED.sub("", svg).strip()
    if not text.startswith("<svg") or re.search(r"<\s*/?\s*script", text, re.IGNORECASE):
        raise ValueError("a picture must be SVG text without scripts")
    return text


def _figure(picture: Picture) -> str:
    return (
        f'<figure id="{html.escape(picture.id)}"><figcaption>{html.escape(picture.caption)}</figcaption>'
        f"{_inline_svg(picture.svg)}</figure>"
    )


def _once(page: str, slot: str, content: str) -> str:
    if page.count(slot) != 1:
        raise ValueError(f"page.html must hold {slot!r} once")
    return page.replace(slot, content)


def assemble_page(title: str, data: Any, pictures: list[Picture]) -> str:
    """The page: ``data`` (JSON-ready) for page.js, the title, the pictures, the style and the script inline."""
    style, script = page_file("page.css"), page_file("page.js")
    for name, text, end in (("page.css", style, "</style"), ("page.js", script, "</script")):
        if end in text.lower() or "<!--" in text:
            raise ValueError(f"{name} must not contain {end!r} or '<!--': it is inlined in the page")
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # Names come from the file (untrusted). Inside <script>, "</script" would close the element and
    # "<!--" start an escape state; "\u003c" is the same JSON string with no "<" at all.
    payload = payload.replace("<", "\\u003c")
    page = page_file("page.html")
    page = page.replace(_TITLE, html.escape(title))
    page = _once(page, _STYLE_LINK, f"<style>\n{style}</style>")
    figures = "".join(_figure(p) for p in pictures)
    page = _once(page, _PICTURES, f'<section id="pictures">{figures}</section>' if pictures else _PICTURES)
    page = _once(page, _DATA, f'<script type="application/json" id="hierarchy-data">{payload}</script>')
    # Last: the script's text is not searched for the slots above.
    return _once(page, _SCRIPT_LINK, f"<script>\n{script}</script>")
