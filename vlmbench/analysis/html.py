"""The HTML the analysis reports share (``compare --format html`` and ``plot``'s report.html): one
stylesheet, escaping, tables and the page frame. Pages are self-contained: inline CSS, no scripts."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from vlmbench.analysis.display import visible

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 80em;
       color: #222; line-height: 1.45; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.8em 0 1.4em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.better { color: #0a7d2c; font-weight: 600; } .worse { color: #b3261e; font-weight: 600; }
.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 1em; }
.muted, .notes, figcaption { color: #555; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.92em; }
code { font-size: 0.9em; overflow-wrap: anywhere; }
"""

#: A table cell: (HTML, already escaped; CSS class or "").
Cell = tuple[str, str]


def esc(text: Any) -> str:
    """``text`` escaped for HTML, characters no page may hold (NUL, control characters) as escapes."""
    return html.escape(visible(text, keep_breaks=True), quote=True)


def table(header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """A table with a header row (plain text, escaped here) and rows of :data:`Cell`."""
    out = ["<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = "".join(
            f'<td class="{cls}">{content}</td>' if cls else f"<td>{content}</td>" for content, cls in row
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def bullets(items: Sequence[str], css_class: str = "notes", ordered: bool = False) -> str:
    """A list of plain-text items (escaped here)."""
    tag = "ol" if ordered else "ul"
    return f'<{tag} class="{css_class}">' + "".join(f"<li>{esc(i)}</li>" for i in items) + f"</{tag}>"


def page(title: str, body: Sequence[str]) -> str:
    """A whole page: ``title`` as its title and first heading, then ``body`` (HTML parts)."""
    head = f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title><style>{CSS}</style></head><body>'
    return "\n".join(["<!DOCTYPE html>", head, f"<h1>{esc(title)}</h1>", *body, "</body></html>"]) + "\n"
