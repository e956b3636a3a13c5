"""The HTML view's parts: the page's files (``page.html``, ``page.css``, ``page.js``), its data and its assembly.

``data.py`` turns a retriever and the tools' results into the JSON the page reads; ``page.py`` inlines the
page's files, that JSON and the pictures into one self-contained HTML text. The public API is
:mod:`optimum_hierarchy.html` (``render_html``, ``write_html``).
"""

from __future__ import annotations

__all__: list[str] = []
