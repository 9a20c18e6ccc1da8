"""Answer filters: turn a model's raw output into the single-word answer that metrics score.

A task lists filter names in order; each filter is a plain ``str -> str`` function.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from vlmbench.errors import SpecError, unknown_message
from vlmbench.tasks.normalize import vqa_normalize

_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)
# "Answer: red", "The answer is red", "A: red" -- but never "a-line" or a bare "a".
_PREFIX = re.compile(
    r"^\s*(?:(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*:?|a\s*:)\s+|^\s*answer:", re.IGNORECASE
)
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)


def strip(text: str) -> str:
    """Remove surrounding whitespace and quotes."""
    return text.strip().strip("\"'`").strip()


def remove_answer_prefix(text: str) -> str:
    """Drop a leading "Answer:" / "A:" / "The answer is:" that chatty models add."""
    return _PREFIX.sub("", text, count=1)


def first_word(text: str) -> str:
    """The first whitespace-separated word, after skipping a leading article ("The red one" -> "red")."""
    text = text.strip()
    while True:
        stripped = _ARTICLE.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    parts = text.split()
    return parts[0] if parts else ""


def strip_punctuation(text: str) -> str:
    """Remove punctuation at both ends ("red." -> "red"; "t-shirt" and "2.5" are kept)."""
    return _EDGE_PUNCT.sub("", text)


def lowercase(text: str) -> str:
    return text.lower()


FILTERS: dict[str, Callable[[str], str]] = {
    "strip": strip,
    "remove_answer_prefix": remove_answer_prefix,
    "first_word": first_word,
    "strip_punctuation": strip_punctuation,
    "lowercase": lowercase,
    "vqa_normalize": vqa_normalize,
}


def check_filters(names: Sequence[str], *, where: str) -> None:
    for name in names:
        if name not in FILTERS:
            raise SpecError(f"{where}: {unknown_message('filter', name, FILTERS)}")


def apply_filters(text: str, names: Sequence[str]) -> str:
    for name in names:
        text = FILTERS[name](text)
    return text
