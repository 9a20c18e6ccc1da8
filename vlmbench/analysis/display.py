"""Text from runs made safe to show in tables, pages and figures.

Answers, questions and labels come from models and data files: they may hold control characters and
NUL bytes (which XML and HTML forbid and no font draws), lone surrogates (which cannot be written as
UTF-8) or be far too long for a table cell or a figure label.
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
