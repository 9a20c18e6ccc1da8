"""Text from runs made safe to show in tables, pages and figures.

Answers, questions and labels come from models and data files: they may hold control characters and
NUL bytes (which XML and HTML forbid and no font draws), lone surrogates (which cannot be written as
UTF-8) or be far too long for a table cell or a figure label. They may also be written to do harm where
they are shown: HTML or Markdown markup (``<script>``, ``<img onerror=...>``, a link, a pipe that
splits a table row) in a Markdown file, or a formula (``=HYPERLINK(...)``) in a CSV file a spreadsheet
opens. Every Markdown output escapes such text with :func:`markdown_text` (or :func:`markdown_code`),
every CSV output with :func:`csv_cell`.
"""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 controls except tab and line breaks, lone surrogates, and the two non-characters XML forbids.
_UNSHOWABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_BREAKS = re.compile(r"\r\n|[\r\n\t]")
ELLIPSIS = "…"


def escape_char(ch: str) -> str:
    """A character as the escape Python would write for it: ``\\x00``, ``\\ud800``, ``\\U0001f642``."""
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: Any, *, keep_breaks: bool = False) -> str:
    """``text`` with every character that cannot be shown or stored written as its escape; line
    breaks and tabs become spaces unless ``keep_breaks``."""
    s = "" if text is None else str(text)
    s = _UNSHOWABLE.sub(lambda m: escape_char(m.group()), s)
    return s if keep_breaks else _BREAKS.sub(" ", s)


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters in the middle, keeping its start (a model name) and its end
    (a checkpoint tag), half each: ``encoder-decoder-vqa…r16-query_value_out]``."""
    if width < 2 or len(text) <= width:
        return text
    head = (width - 1) // 2
    tail = width - 1 - head
    return text[:head] + ELLIPSIS + text[len(text) - tail :]


def level_order(level: str) -> tuple[int, int, str]:
    """Sort key of difficulty levels as results.json names them: whole numbers in order, then the
    others (``unknown``) by name."""
    try:
        return (0, int(level), "")
    except ValueError:
        return (1, 0, str(level))


# Characters Markdown gives a meaning: backslash escapes, code spans, emphasis, strike-through, table
# cells; and a closing bracket that starts a link's target or reference (``](``, ``][``, ``]:``), which
# leaves labels such as ``model[pretrained=x]`` as they are. ``_`` is left alone: within words
# (``exact_match``) it formats nothing.
_MARKDOWN_ACTIVE = re.compile(r"([\\`*|~]|\](?=[(\[:]))")
_HTML_ACTIVE = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def markdown_text(text: Any) -> str:
    """``text`` as inert Markdown, on one line: shown as written, never as markup. HTML's ``& < >``
    become entities (no tag, comment or autolink can start), Markdown's active characters are
    backslash-escaped (no link, image, code span, emphasis or extra table cell), and what
    :func:`visible` escapes is escaped."""
    s = visible(text)
    s = "".join(_HTML_ACTIVE.get(ch, ch) for ch in s)
    return _MARKDOWN_ACTIVE.sub(r"\\\1", s)


def markdown_code(text: Any) -> str:
    """``text`` as a Markdown code span (shown verbatim, nothing inside is markup): fenced by more
    backticks than any run of them inside, as CommonMark reads code spans. Not for table cells, where a
    pipe still ends the cell: use :func:`markdown_text` there."""
    s = visible(text)
    longest = max((len(run) for run in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


#: What a spreadsheet reads as the start of a formula (and tab and carriage return, which some read as
#: a cell boundary before one).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs: text starting with ``= + - @``, tab or carriage return gets a
    leading ``'`` (the usual defence against CSV formula injection; spreadsheets show the text as
    written). Numbers and None pass unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
