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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

from vlmbench.args import Arg, output_affecting, redact, validate
from vlmbench.hashing import json_digest
from vlmbench.registry import GeneratorEntry


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


# -- secrets -------------------------------------------------------------------------------------

MASK = "***"
#: The rejection reason of a generated item that contains a secret.
CONTAINS_SECRET = "contains_secret"


class SecretMask:
    """Finds and masks secrets in text. A service may echo a key in another case, and a key read from
    the environment may carry stray whitespace: matching is case-insensitive, on the stripped value."""

    def __init__(self, secrets: Iterable[str]):
        values = sorted({s.strip() for s in secrets if s and s.strip()}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, values)), re.IGNORECASE) if values else None

    def found(self, text: str | None) -> bool:
        return bool(self._pattern and text and self._pattern.search(text))

    def mask(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern and text else text

    def screen(self, result: GenerationResult) -> GenerationResult:
        """``result`` without the items that contain a secret (counted under ``contains_secret``), its
        error and raw reply masked."""
        if self._pattern is None:
            return result
        fields = ("question", "answer", "source")
        kept = [i for i in result.items if not any(self.found(getattr(i, f)) for f in fields)]
        rejected = dict(result.rejected)
        if len(kept) < len(result.items):
            rejected[CONTAINS_SECRET] = rejected.get(CONTAINS_SECRET, 0) + len(result.items) - len(kept)
        return replace(
            result,
            items=kept,
            rejected=rejected,
            error=None if result.error is None else self.mask(result.error),
            raw=None if result.raw is None else self.mask(result.raw),
        )


# -- parsing model replies -------------------------------------------------------------------------

_DIFFICULTY = re.compile(r"-?\d+")
_NUMBERING = re.compile(r"^\s*(?:[-*•]|\(?\d{1,2}[.)]|Q\d+[:.)]?)\s+", re.IGNORECASE)
_FIELD_PREFIX = re.compile(r"^\s*(?:question|answer|difficulty|q|a|d)\s*\d*\s*[:=]\s*", re.IGNORECASE)


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


def parse_reply(text: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Read question/answer/difficulty triples out of a model reply, tolerantly.

    Accepted shapes, tried in this order:

    1. JSON: an array of objects, or an object holding such an array (``{"questions": [...]}``),
       also inside a ```json fenced block; keys ``question``/``answer``/``difficulty`` (case-insensitive,
       ``level`` for difficulty).
    2. The study's delimited line: ``Question # Answer # Difficulty % Question # Answer # Difficulty``
       (pairs separated by ``%`` or new lines, fields by ``#``, ``|``, tabs or ``;``).
    3. CSV rows ``question,answer,difficulty`` (with or without a header; quoted fields allowed;
       the last field must be a difficulty, so that prose with commas is not taken for a row).

    Returns the triples (values as found, not yet validated) and the count of fragments that could
    not be read, by reason (``malformed_reply`` when nothing at all could be read).
    """
    text = (text or "").strip()
    if not text:
        return [], {"empty_reply": 1}
    items = _from_json(text)
    if items is not None:
        return _complete(items)
    fragments = [f.strip() for f in re.split(r"%|\n", text) if f.strip()]
    triples: list[dict[str, Any]] = []
    problems: dict[str, int] = {}
    for fragment in fragments:
        fragment = _NUMBERING.sub("", fragment).strip()
        if fragment.lower().startswith(("question,", "question #", "question|", "question\t")):
            continue  # a header row
        fields = _split_fields(fragment)
        if fields is None:
            problems["unparsed_fragment"] = problems.get("unparsed_fragment", 0) + 1
            continue
        fields = [_FIELD_PREFIX.sub("", f).strip().strip('"').strip() for f in fields]
        triples.append(
            {"question": fields[0], "answer": fields[1], "difficulty": fields[2] if len(fields) > 2 else None}
        )
    if not triples:
        return [], {"malformed_reply": 1}
    return triples, problems


def _split_fields(fragment: str) -> list[str] | None:
    for sep in ("#", "|", "\t", ";"):
        if sep in fragment:
            parts = [p.strip() for p in fragment.split(sep)]
            parts = [p for p in parts if p]
            if len(parts) >= 2:
                return _merge_question(parts)
    if "," in fragment:
        try:
            row = next(csv.reader(io.StringIO(fragment), skipinitialspace=True))
        except (csv.Error, StopIteration):
            return None
        row = [c.strip() for c in row if c.strip()]
        # Commas are common in prose: a CSV row counts only when it ends with a difficulty.
        if len(row) >= 3 and parse_difficulty(row[-1]) is not None:
            return _merge_question(row)
    return None


def _merge_question(parts: list[str]) -> list[str]:
    """A question that contains the separator itself ("Size, in inches, ...?,5,3") splits into too
    many parts: the last two are answer and difficulty when the last one looks like a difficulty."""
    if len(parts) > 3 and parse_difficulty(parts[-1]) is not None:
        return [", ".join(parts[:-2]), parts[-2], parts[-1]]
    if len(parts) > 3:
        return [", ".join(parts[:-1]), parts[-1]]
    return parts


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


def items_from_reply(text: str, generator: str, source: str = "") -> tuple[list[QAItem], dict[str, int]]:
    """:func:`parse_reply`, turned into :class:`QAItem` candidates."""
    triples, problems = parse_reply(text)
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
