"""mkdocs hook: show the Sphinx roles of docstrings (``:class:`~a.b.C```) as plain code (``C``).

The package's docstrings are written for ``help()`` and Sphinx-style readers; mkdocstrings renders
them as Markdown, where ``:class:`` would stay as literal text in the API reference page.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const):<code>(~?)([^<]*)</code>")


def _plain(match: re.Match) -> str:
    name = match.group(2)
    return f"<code>{name.rsplit('.', 1)[-1] if match.group(1) else name}</code>"


def on_page_content(html, page, config, files):
    return _ROLE.sub(_plain, html)
