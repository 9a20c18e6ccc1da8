"""Prompt templates shared by the model-based generators.

A template is a text file with ``{placeholders}``:

- ``{questions}``: how many questions to ask for,
- ``{description}``: the listing's bullet points joined with " | " (or "(no description)"),
- ``{product}``: the item name (or "(unnamed product)"),
- ``{output_format}``: the reply format, filled in by the generator: a JSON array when the reply is
  constrained by a schema, else the study's line format ``question # answer # difficulty`` with
  entries separated by ``%``.

Literal braces are written ``{{`` and ``}}``. The default, ``prompts/single_word_qa.txt``, carries the
study's final prompt (see docs/data.md); pass ``prompt_file=...`` to a generator to use another.
"""

from __future__ import annotations

import hashlib
import string
from pathlib import Path

from vlmbench.api import ArgError, AssetMissingError, Listing

DEFAULT_TEMPLATE = Path(__file__).parent / "prompts" / "single_word_qa.txt"
FIELDS = ("questions", "description", "product", "output_format")
OUTPUT_FORMATS = {
    "json": (
        'Reply with a JSON array of {questions} objects, each with the keys "question", "answer" and '
        '"difficulty" (an integer).'
    ),
    "delimited": (
        "Reply with one line only, in the form <question> # <answer> # <difficulty>, and separate the "
        "{questions} entries with a % sign: <question1> # <answer1> # <difficulty1> % <question2> # "
        "<answer2> # <difficulty2> % ..."
    ),
}


class Template:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path).expanduser() if path else DEFAULT_TEMPLATE
        try:
            self.text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise AssetMissingError(f"prompt template {self.path}", "the file does not exist") from None
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(self.text) if f is not None}
        except ValueError as exc:
            raise ArgError(f"prompt template {self.path}: {exc}") from None
        unknown = names - set(FIELDS)
        if unknown:
            raise ArgError(
                f"prompt template {self.path}: unknown placeholders {sorted(unknown)}; "
                f"allowed: {', '.join('{' + f + '}' for f in FIELDS)}"
            )
        self.sha256 = hashlib.sha256(self.text.encode()).hexdigest()

    def render(self, listing: Listing, questions: int, output_format: str) -> str:
        fmt = OUTPUT_FORMATS[output_format].format(questions=questions)
        return self.text.format(
            questions=questions,
            description=listing.description or "(no description)",
            product=listing.name or "(unnamed product)",
            output_format=fmt,
        ).strip()
