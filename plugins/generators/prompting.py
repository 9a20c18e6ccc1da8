"""Prompt templates shared by the model-based generators.

A template is a text file with ``{placeholders}``:

- ``{questions}``: how many questions to ask for,
- ``{description}``: the listing's bullet points joined with " | " (or "(no description)"),
- ``{product}``: the item name (or "(unnamed product)"),
- ``{output_format}``: the reply format, filled in by the generator: a JSON array when the reply is
  constrained by a schema, the line format ``question # answer # difficulty`` with entries separated
  by ``%``, or CSV rows ``question,difficulty,answer``.

Literal braces are written ``{{`` and ``}}``. The model-based generators take a named prompt
(``prompt=``, see :data:`PROMPTS`): ``default``, ``prompts/single_word_qa.txt``, carries the study's
final instructions with the reply format the generator's options choose; ``study`` follows the
paper's prompt, CSV rows included (see docs/data.md). ``prompt_file=...`` replaces the named prompt's
text and keeps its reply format.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmbench.api import Arg, ArgError, AssetMissingError, Listing, NotRegularFile, read_regular_text

PROMPTS_DIR = Path(__file__).parent / "prompts"
DEFAULT_TEMPLATE = PROMPTS_DIR / "single_word_qa.txt"
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
    "csv": (
        "Reply with exactly {questions} lines of CSV and nothing else, one question per line, in the form "
        "question,difficulty,answer (no header, no numbering, no JSON). Put double quotes around a "
        "question that contains a comma."
    ),
}
#: The order of the fields each reply format asks for (JSON names its keys).
COLUMNS = {
    "json": None,
    "delimited": ("question", "answer", "difficulty"),
    "csv": ("question", "difficulty", "answer"),
}


@dataclass(frozen=True)
class NamedPrompt:
    """A bundled prompt: its template file and, when the prompt fixes one, its reply format (else the
    generator's own option chooses)."""

    file: str
    reply_format: str | None
    summary: str


DEFAULT_PROMPT = "default"
PROMPTS = {
    DEFAULT_PROMPT: NamedPrompt(
        "single_word_qa.txt",
        None,
        "the study's final instructions, in the reply format chosen by the options",
    ),
    "study": NamedPrompt(
        "study_csv.txt", "csv", "the paper's prompt: five questions, CSV rows question,difficulty,answer"
    ),
}
PROMPT_ARGS = {
    "prompt": Arg(
        str,
        DEFAULT_PROMPT,
        "bundled prompt: " + "; ".join(f"{name}, {p.summary}" for name, p in PROMPTS.items()),
        choices=tuple(PROMPTS),
    ),
    "prompt_file": Arg(
        str, "", "prompt template file replacing the named prompt's text (keeps its reply format)"
    ),
}


def reply_format(values: dict[str, Any], chosen: str) -> str:
    """The reply format a generator asks for: the named prompt's own, else ``chosen`` (its option)."""
    return PROMPTS[values["prompt"]].reply_format or chosen


def template_for(values: dict[str, Any]) -> Template:
    """The template a generator's ``prompt`` and ``prompt_file`` options name."""
    return Template(values["prompt_file"] or PROMPTS_DIR / PROMPTS[values["prompt"]].file)


def prompt_identity(
    identity: dict[str, Any], values: dict[str, Any], template: Template, format_option: str
) -> dict[str, Any]:
    """A generator's identity with its prompt named by content: the template's hash replaces the
    file's path. The default named prompt is left out, so stores made before there were named prompts
    stay valid; a named prompt that fixes the reply format drops the option it overrides."""
    identity["args"].pop("prompt_file", None)
    identity["prompt_sha256"] = template.sha256
    if values["prompt"] == DEFAULT_PROMPT:
        identity["args"].pop("prompt", None)
    elif PROMPTS[values["prompt"]].reply_format is not None:
        identity["args"].pop(format_option, None)
    return identity


class Template:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path).expanduser() if path else DEFAULT_TEMPLATE
        try:
            self.text = read_regular_text(self.path)
        except FileNotFoundError:
            raise AssetMissingError(f"prompt template {self.path}", "the file does not exist") from None
        except NotRegularFile as exc:
            raise ArgError(f"prompt template {exc}") from None
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
