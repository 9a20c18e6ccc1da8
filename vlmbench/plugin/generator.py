"""The QA generator contract (dataset curation plugins).

A generator turns one product listing and its image into *candidate* single-word question-answer
pairs, each with a difficulty and its provenance. The listing is whatever record the dataset plugin
reads; the generator may rely on what :class:`Listing` describes. Candidates are validated afterwards
by the dataset's pipeline, so a generator may return imperfect items: what it must not do is invent
fields it was not given.

A plugin subclasses :class:`Generator`, declares its options in :attr:`Generator.args` (the same typed
schema as model arguments) and registers itself with the ``register_generators`` hook::

    @hookimpl
    def register_generators(register):
        register("mine", "my_package.module:MyGenerator", summary="...", needs_network=False)

A dataset plugin calls :meth:`Generator.setup` once, then :meth:`Generator.generate_many` over the
listings still to do, and stores every :class:`GenerationResult` as it arrives, keyed by the listing
and by :meth:`Generator.fingerprint`: a re-run skips what is stored, and changing an output-affecting
option starts a fresh store.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from vlmbench.hashing import json_digest
from vlmbench.plugin.args import Arg, output_affecting, redact, validate
from vlmbench.plugin.registry import GeneratorEntry
from vlmbench.schema import invalid_text, shown_text


@dataclass(frozen=True)
class QAItem:
    """A candidate question-answer pair. ``source`` says where it came from inside the generator
    (an attribute name, a model id); ``difficulty`` may be None when a reply did not give one."""

    question: str
    answer: str
    difficulty: int | None
    generator: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QAItem:
        return cls(
            question=str(data.get("question", "")),
            answer=str(data.get("answer", "")),
            difficulty=data.get("difficulty"),
            generator=str(data.get("generator", "")),
            source=str(data.get("source", "")),
        )


@dataclass
class GenerationResult:
    """What a generator made of one listing.

    ``error`` set means the listing could not be processed (network failure, quota): it is not
    stored as done and is tried again on the next run. ``rejected`` counts reply fragments that could
    not be parsed into items (reason -> count); ``usage`` holds token counts and the like.
    """

    key: str
    items: list[QAItem] = field(default_factory=list)
    error: str | None = None
    rejected: dict[str, int] = field(default_factory=dict)
    usage: dict[str, float] = field(default_factory=dict)
    raw: str | None = None  # the reply text, kept (shortened) when nothing could be parsed

    def __post_init__(self) -> None:
        # A reply or an error message may hold lone surrogates (a JSON reply's "\ud800" escapes), which
        # cannot be written to the UTF-8 store; they are kept visible as escapes.
        self.raw = None if self.raw is None else shown_text(self.raw)
        self.error = None if self.error is None else shown_text(self.error)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "items": [i.to_dict() for i in self.items]}
        for name in ("error", "raw"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.rejected:
            out["rejected"] = self.rejected
        if self.usage:
            out["usage"] = self.usage
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationResult:
        return cls(
            key=str(data["key"]),
            items=[QAItem.from_dict(i) for i in data.get("items", [])],
            error=data.get("error"),
            rejected=dict(data.get("rejected", {})),
            usage=dict(data.get("usage", {})),
            raw=data.get("raw"),
        )


@runtime_checkable
class Listing(Protocol):
    """One product record, as a generator receives it.

    A dataset plugin passes records of its own type: what every generator may rely on is below. A
    generator written for one dataset may read more of that dataset's record (structured fields).
    """

    @property
    def key(self) -> str:
        """Unique per record: results are stored, and found again, by it."""
        ...

    @property
    def name(self) -> str | None:
        """The product's name, when it has one."""
        ...

    @property
    def description(self) -> str:
        """The product's text in the chosen language ("" when there is none)."""
        ...


@dataclass
class Job:
    """One listing to process. ``image`` returns the main image's bytes (read lazily, so a
    generator that does not look at images never reads them); ``image_id`` and ``image_ref`` (its
    path or another name for messages) identify that image, when the dataset knows them."""

    listing: Listing
    image: Callable[[], bytes]
    image_mime: str = "image/jpeg"
    image_id: str = ""
    image_ref: str = ""


class Generator:
    """Base class of QA generators.

    Class attributes a plugin sets: ``args`` (option schema), ``version`` (bump when a code change
    alters outputs; part of the fingerprint) and ``needs_image``.
    """

    args: ClassVar[dict[str, Arg]] = {}
    version: ClassVar[str] = "1"
    needs_image: ClassVar[bool] = True

    def __init__(self, entry: GeneratorEntry, args: dict[str, Any]):
        self.entry = entry
        self.name = entry.name
        self.arg_values = args

    @classmethod
    def create(cls, entry: GeneratorEntry, given: dict[str, Any] | None = None) -> Generator:
        """Validate ``given`` against :attr:`args` and construct the generator (nothing loaded yet)."""
        values = validate(cls.args, given or {}, owner=f"generator {entry.name!r}")
        return cls(entry, values)

    def setup(self) -> None:
        """Prepare clients or weights. Raise :class:`vlmbench.errors.VlmbenchError` with a clear
        message when something is missing (an API key, a model)."""

    def generate(self, job: Job) -> GenerationResult:
        """Candidates for one listing."""
        raise NotImplementedError

    def generate_many(self, jobs: Iterable[Job]) -> Iterator[GenerationResult]:
        """Candidates for many listings, yielded as each is ready (any order). The default runs
        :meth:`generate` one job after the other; network-bound generators overlap requests."""
        for job in jobs:
            yield self.generate(job)

    def usage(self) -> dict[str, Any]:
        """Totals for the report (requests, retries, tokens, estimated cost...)."""
        return {}

    def secrets(self) -> list[str]:
        """Values that must never be written anywhere, such as an API key. The pipeline rejects
        generated items that contain one (``contains_secret``) and masks them in everything else it
        stores or reports (see :class:`SecretMask`)."""
        return []

    def identity(self) -> dict[str, Any]:
        """What determines this generator's outputs: name, version and the output-affecting options."""
        return {
            "generator": self.name,
            "version": self.version,
            "args": output_affecting(self.args, self.arg_values),
        }

    def fingerprint(self) -> str:
        return json_digest(self.identity())

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "plugin": self.entry.plugin, "version": self.version,
                "args": redact(self.args, self.arg_values)}  # fmt: skip


# -- parsing model replies -------------------------------------------------------------------------

_DIFFICULTY = re.compile(r"-?\d+")
_NUMBERING = re.compile(r"^\s*(?:[-*•]|\(?\d{1,2}[.)]|Q\d+[:.)]?)\s+", re.IGNORECASE)
_FIELD_PREFIX = re.compile(r"^\s*(?:question|answer|difficulty|q|a|d)\s*\d*\s*[:=]\s*", re.IGNORECASE)
# A field that is a difficulty and nothing else: "2", "2.0", "Level 2", "difficulty: 2", "(2)", "2 (easy)".
_LEVEL = re.compile(
    r"^[(\[]?\s*(?:(?:level|difficulty)\s*[:=]?\s*)?-?\d+(?:\.0+)?\s*[)\]]?(?:\s*\([^)]*\))?$", re.IGNORECASE
)
# The words of a header line, lower case and letters only, and the column each names.
_HEADER_WORDS = {
    **dict.fromkeys(("question", "q"), "question"),
    **dict.fromkeys(("answer", "a"), "answer"),
    **dict.fromkeys(("difficulty", "difficultylevel", "level", "d"), "difficulty"),
}

#: Column orders of delimited and CSV rows: the order the ``json`` and ``delimited`` reply formats ask
#: for, and the study's CSV order.
QUESTION_ANSWER_DIFFICULTY = ("question", "answer", "difficulty")
QUESTION_DIFFICULTY_ANSWER = ("question", "difficulty", "answer")


def parse_difficulty(value: Any) -> int | None:
    """``2``, ``"2"``, ``"Level 2"``, ``"2.0"`` -> 2; anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    m = _DIFFICULTY.search(str(value or ""))
    if not m:
        return None
    rest = str(value)[m.end() :].strip()
    if rest.startswith(".") and rest[1:2].isdigit() and rest[1:].strip("0") != "":
        return None  # "2.5"
    return int(m.group())


def parse_reply(
    text: str, columns: tuple[str, ...] | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Read question/answer/difficulty triples out of a model reply, tolerantly.

    Accepted shapes, tried in this order:

    1. JSON: an array of objects, or an object holding such an array (``{"questions": [...]}``),
       also inside a ```json fenced block; keys ``question``/``answer``/``difficulty`` (case-insensitive,
       ``level`` for difficulty).
    2. Delimited lines: ``Question # Answer # Difficulty % Question # Answer # Difficulty`` (entries
       separated by ``%`` or new lines, fields by ``#``, ``|``, tabs or ``;``).
    3. CSV rows, ``question,answer,difficulty`` or ``question,difficulty,answer`` (the study's order),
       quoted fields allowed, with a header line or none, inside a fenced block or not. A CSV row
       counts only when one of its last two fields is a difficulty, so that prose with commas is not
       taken for a row.

    The column order of a delimited or CSV row is told by which of its last two fields is a
    difficulty. A row where both are numbers ("How many drawers?,1,3") follows the reply's header,
    else the order the reply's other rows show, else ``columns`` (default question,answer,difficulty).
    Prose before the first row or after the last one ("Here are the questions:") is skipped; a line
    between rows, or one shaped like a row (with a question mark or field separators), that cannot be
    read counts as an ``unparsed_fragment``.

    Returns the triples (values as found, not yet validated) and the count of fragments that could
    not be read, by reason (``malformed_reply`` when nothing at all could be read).
    """
    text = (text or "").strip()
    if not text:
        return [], {"empty_reply": 1}
    items = _from_json(text)
    if items is not None:
        return _complete(items)
    rows: list[tuple[list[str], tuple[str, ...] | str | None]] = []
    header: tuple[str, ...] | None = None
    unread: list[tuple[int, str]] = []  # (rows read before it, fragment)
    for fragment in _fragments(text):
        fragment = _NUMBERING.sub("", fragment).strip()
        if not fragment or fragment.startswith("```"):
            continue
        named = _header(fragment)
        if named is not None:
            header = named if len(named) == 3 else header
            continue
        parts = _split_fields(fragment)
        if parts is None:
            unread.append((len(rows), fragment))
        else:
            rows.append((parts, _evidence(parts)))
    if not rows:
        return [], {"malformed_reply": 1}
    # Before the first row or after the last, a line that does not look like a row is prose around
    # them ("Here are five questions:"); between rows, or shaped like a row, it is a fragment lost.
    lost = sum(1 for before, f in unread if 0 < before < len(rows) or not _prose(f))
    problems = {"unparsed_fragment": lost} if lost else {}
    shown = Counter(e for _, e in rows if isinstance(e, tuple)).most_common(1)
    fallback = header or (shown[0][0] if shown else None) or columns or QUESTION_ANSWER_DIFFICULTY
    triples = [_triple(parts, fallback if evidence == "both" else evidence) for parts, evidence in rows]
    return triples, problems


def _fragments(text: str) -> Iterator[str]:
    """Lines, and within a line of ``#``/``|``/tab/``;`` fields the ``%``-separated entries; a CSV
    line stays whole (its values may hold a ``%``)."""
    for line in text.splitlines():
        if "," in line and not any(sep in line for sep in ("#", "|", "\t", ";")):
            yield line
        else:
            yield from line.split("%")


def _prose(fragment: str) -> bool:
    return "?" not in fragment and not any(sep in fragment for sep in ("#", "|", "\t", ";"))


def _header(fragment: str) -> tuple[str, ...] | None:
    """The column order a header line names (``question,difficulty,answer``), or None for a row."""
    fields = re.split(r"[,#|\t;]", fragment)
    names = [_HEADER_WORDS.get(re.sub(r"[^a-z]", "", f.lower())) for f in fields if f.strip()]
    if len(names) >= 2 and all(names) and "question" in names:
        return tuple(n for n in names if n)
    return None


def _split_fields(fragment: str) -> list[str] | None:
    for sep in ("#", "|", "\t"):
        if sep in fragment:
            parts = _clean([p for p in fragment.split(sep)])
            if len(parts) >= 2:
                return parts
    if "," in fragment:
        try:
            row = _clean(next(csv.reader(io.StringIO(fragment), skipinitialspace=True)))
        except (csv.Error, StopIteration):
            row = []
        # Commas are common in prose: a CSV row counts only when it holds a difficulty where one goes.
        if len(row) >= 3 and _evidence(row) is not None:
            return row
    if ";" in fragment:
        parts = _clean(fragment.split(";"))
        if len(parts) >= 2:
            return parts
    return None


def _clean(parts: Iterable[str]) -> list[str]:
    cleaned = (_FIELD_PREFIX.sub("", p.strip()).strip().strip('"').strip() for p in parts)
    return [p for p in cleaned if p]


def _evidence(parts: list[str]) -> tuple[str, ...] | str | None:
    """The column order a row's own values show: which of its last two fields is a difficulty.
    ``"both"`` when both are numbers; None when neither is (or the row has two fields)."""
    if len(parts) < 3:
        return None
    last, middle = bool(_LEVEL.match(parts[-1])), bool(_LEVEL.match(parts[-2]))
    if last and middle:
        return "both"
    if last or middle:
        return QUESTION_ANSWER_DIFFICULTY if last else QUESTION_DIFFICULTY_ANSWER
    return None


def _triple(parts: list[str], order: tuple[str, ...] | None) -> dict[str, Any]:
    """A row's fields as a triple. A question that contains the separator itself ("Size, in inches,
    ...?,5,3") splits into too many parts: everything before the last two fields is the question."""
    if order is None or len(parts) < 3:
        # No difficulty where one goes: the last field is the answer, after up to one question field
        # (and a third field, when there are exactly three, is the difficulty validation judges).
        if len(parts) == 3:
            return {"question": parts[0], "answer": parts[1], "difficulty": parts[2]}
        return {"question": ", ".join(parts[:-1]), "answer": parts[-1], "difficulty": None}
    row = dict(zip(order[1:], parts[-2:], strict=True))
    return {"question": ", ".join(parts[:-2]), "answer": row["answer"], "difficulty": row["difficulty"]}


def _from_json(text: str) -> list[Any] | None:
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidates = [fenced.group(1)] if fenced else []
    candidates.append(text)
    start = min((i for i in (text.find("["), text.find("{")) if i >= 0), default=-1)
    if start > 0:
        candidates.append(text[start:])
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if lists else [data]
        if isinstance(data, list):
            return data
    return None


def _complete(items: list[Any]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    triples, problems = [], {}
    for item in items:
        if not isinstance(item, dict):
            problems["unparsed_fragment"] = problems.get("unparsed_fragment", 0) + 1
            continue
        lowered = {str(k).lower().strip(): v for k, v in item.items()}
        question = lowered.get("question", lowered.get("q"))
        answer = lowered.get("answer", lowered.get("a"))
        if question is None or answer is None:
            problems["unparsed_fragment"] = problems.get("unparsed_fragment", 0) + 1
            continue
        difficulty = lowered.get("difficulty", lowered.get("level"))
        triples.append({"question": str(question), "answer": str(answer), "difficulty": difficulty})
    if not triples and items:
        return [], {"malformed_reply": 1}
    return triples, problems


def items_from_reply(
    text: str, generator: str, source: str = "", columns: tuple[str, ...] | None = None
) -> tuple[list[QAItem], dict[str, int]]:
    """:func:`parse_reply`, turned into :class:`QAItem` candidates. ``columns`` is the order of the
    fields the reply was asked for (see :func:`parse_reply`). A triple with text that is not valid
    Unicode (a lone surrogate, from a JSON reply's escapes) is counted as ``bad_encoding``."""
    triples, problems = parse_reply(text, columns)
    readable = [t for t in triples if invalid_text(t) is None]
    if len(readable) < len(triples):
        problems = {**problems, "bad_encoding": len(triples) - len(readable)}
        triples = readable
    items = [
        QAItem(
            question=" ".join(str(t["question"]).split()),
            answer=" ".join(str(t["answer"]).split()),
            difficulty=parse_difficulty(t["difficulty"]),
            generator=generator,
            source=source,
        )
        for t in triples
    ]
    return items, problems
