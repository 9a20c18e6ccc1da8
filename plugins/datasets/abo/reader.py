"""Streaming the ABO product listings.

An ABO tree (as ``vlmbench data download abo`` leaves it) holds::

    listings/metadata/listings_<i>.json.gz   one JSON object per line, one product listing each
    images/metadata/images.csv.gz            image_id,height,width,path
    images/small/<path>                      the catalog images, longest side 256 px

:func:`iter_listings` reads the listing files line by line (never all at once) and yields a
:class:`Listing` per product: its ids, the path of its main image, the bullet points and the structured
attributes in one language.

Quirks of the real records that the reader absorbs:

- Text attributes are lists of ``{"language_tag": ..., "value": ...}``; one listing mixes languages
  (a US listing may carry ``fabric_type`` in zh_CN, es_US, pt_BR and en_US). Each attribute picks its
  own best language through the language order (see :func:`language_order`).
- ``language_tag`` may be missing or ``null`` (``model_number``), and ``product_type`` is documented as
  a string but comes as ``[{"value": "CHAIR"}]`` without a tag.
- ``node`` entries carry ``node_name`` (a category path such as ``/Categories/Breads & Bakery/Muffins``)
  where the format description says ``path``; both are read.
- ``color`` entries may add ``standardized_values``; ``pattern`` and ``model_year`` values may be numbers.
- ``item_dimensions`` gives ``height``/``length``/``width`` with a ``normalized_value`` (in inches) and
  sometimes no top-level value; ``item_weight`` is a list of the same shape (normalised to pounds).
- A language tag does not guarantee the language: Mexican listings tagged ``es_MX`` often hold English
  text. The reader trusts the tags.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench.api import AssetMissingError, DataError

LISTINGS_GLOB = "listings_*.json*"
LISTINGS_DIR = Path("listings") / "metadata"
IMAGES_CSV = Path("images") / "metadata" / "images.csv.gz"
SMALL_IMAGES_DIR = Path("images") / "small"

DEFAULT_LANGUAGE = "en_IN"
# After the chosen tag: the English marketplaces, largest first, then any other English tag, then
# values without a tag. Other languages are only used when the order says so (``"*"``), because the
# questions and answers are English.
ENGLISH_FALLBACK = ("en_US", "en_GB", "en_CA", "en_AU", "en_SG", "en_AE", "en_IN")
UNTAGGED = "untagged"
ANY = "*"

TEXT_ATTRIBUTES = (
    "brand",
    "color",
    "material",
    "style",
    "pattern",
    "fabric_type",
    "finish_type",
    "item_shape",
    "model_name",
    "model_year",
    "item_keywords",
)
# Language-neutral by nature: every value is kept, whatever its tag.
NEUTRAL_ATTRIBUTES = ("product_type", "model_number", "color_code")


def language_order(primary: str = DEFAULT_LANGUAGE, fallback: Sequence[str] | None = None) -> tuple[str, ...]:
    """The order in which language tags are tried for each attribute.

    ``primary`` first, then ``fallback`` (default: the English marketplaces), then any ``en_*`` tag,
    then values without a tag. Entries may be exact tags (``en_US``), prefixes (``en_*``), ``untagged``
    or ``*`` (anything). ``language_order("en_IN")`` is
    ``("en_IN", "en_US", "en_GB", "en_CA", "en_AU", "en_SG", "en_AE", "en_*", "untagged")``.
    """
    rest = ENGLISH_FALLBACK if fallback is None else tuple(fallback)
    order: list[str] = []
    for tag in (primary, *rest, "en_*", UNTAGGED):
        if tag and tag not in order:
            order.append(tag)
    return tuple(order)


def _matches(pattern: str, tag: str | None) -> bool:
    if pattern == ANY:
        return True
    if pattern == UNTAGGED:
        return not tag
    if tag is None:
        return False
    if pattern.endswith("*"):
        return tag.startswith(pattern[:-1])
    return tag == pattern


def pick_language(entries: Any, order: Sequence[str]) -> tuple[list[str], str | None]:
    """The values of the first language in ``order`` that ``entries`` has, and that language's tag.

    ``entries`` is an attribute as found in a record: a list of ``{language_tag, value}`` dicts, a
    bare string, or a list of strings. Returns ``([], None)`` when no entry matches.
    """
    items = _entries(entries)
    for pattern in order:
        chosen = [(tag, value) for tag, value in items if _matches(pattern, tag)]
        if chosen:
            # With a prefix pattern several tags may match: keep the first one met, not a mixture.
            tag = chosen[0][0]
            return [v for t, v in chosen if t == tag], tag
    return [], None


def _entries(raw: Any) -> list[tuple[str | None, str]]:
    if raw is None:
        return []
    if isinstance(raw, (str, int, float)):
        return [(None, _text(raw))] if _text(raw) else []
    if isinstance(raw, dict):
        raw = [raw]
    out = []
    if isinstance(raw, list):
        for entry in raw:
            if isinstance(entry, dict):
                value = _text(entry.get("value"))
                tag = entry.get("language_tag") or None
                if value:
                    out.append((str(tag) if tag else None, value))
            elif isinstance(entry, (str, int, float)) and _text(entry):
                out.append((None, _text(entry)))
    return out


def _text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).split())


@dataclass(frozen=True)
class Measure:
    value: float
    unit: str


@dataclass(frozen=True)
class Listing:
    """One product listing, reduced to what QA curation needs.

    ``attributes`` maps each text attribute (``color``, ``material``, ...) to its values in the
    language chosen for it; ``languages`` records which tag each attribute came from.
    """

    item_id: str
    domain_name: str = ""
    country: str = ""
    main_image_id: str | None = None
    other_image_ids: tuple[str, ...] = ()
    image_path: str | None = None  # relative to images/small
    name: str | None = None
    bullet_points: tuple[str, ...] = ()
    language: str | None = None  # tag of the bullet points
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    languages: Mapping[str, str | None] = field(default_factory=dict)
    color_standardized: tuple[str, ...] = ()
    product_type: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    dimensions: Mapping[str, Measure] = field(default_factory=dict)
    weight: Measure | None = None
    source: str = ""  # "listings_0.json.gz:12"

    @property
    def key(self) -> str:
        """Unique per listing: ABO identifies a listing by (item_id, domain_name)."""
        return f"{self.item_id}@{self.domain_name or self.country or '?'}"

    @property
    def description(self) -> str:
        """The bullet points joined with " | " (empty when the listing has none in the chosen language)."""
        return " | ".join(self.bullet_points)

    def attribute(self, name: str) -> tuple[str, ...]:
        if name == "product_type":
            return self.product_type
        return tuple(self.attributes.get(name, ()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for generators that record their inputs)."""
        return {
            "item_id": self.item_id,
            "domain_name": self.domain_name,
            "main_image_id": self.main_image_id,
            "image_path": self.image_path,
            "name": self.name,
            "language": self.language,
            "description": self.description,
            "attributes": {k: list(v) for k, v in self.attributes.items()},
            "product_type": list(self.product_type),
            "nodes": list(self.nodes),
            "dimensions": {k: [m.value, m.unit] for k, m in self.dimensions.items()},
            "weight": [self.weight.value, self.weight.unit] if self.weight else None,
        }


@dataclass
class ReadStats:
    """What the reader saw and what it skipped, for the curation report."""

    files: int = 0
    lines: int = 0
    listings: int = 0
    bad_lines: int = 0
    no_item_id: int = 0
    no_main_image: int = 0
    image_not_in_metadata: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def parse_listing(
    record: Mapping[str, Any],
    order: Sequence[str] = language_order(),
    image_paths: Mapping[str, str] | None = None,
    source: str = "",
) -> Listing:
    """Turn one listing record (a decoded JSON line) into a :class:`Listing`."""
    languages: dict[str, str | None] = {}
    attributes: dict[str, tuple[str, ...]] = {}
    for name in TEXT_ATTRIBUTES:
        values, tag = pick_language(record.get(name), order)
        if values:
            attributes[name] = tuple(_unique(values))
            languages[name] = tag
    bullets, bullet_tag = pick_language(record.get("bullet_point"), order)
    names, _ = pick_language(record.get("item_name"), order)
    # standardized_values of the colour entries in the language the colour was taken from.
    standardized: list[str] = []
    if "color" in attributes and isinstance(record.get("color"), list):
        for entry in record["color"]:
            if isinstance(entry, dict) and (entry.get("language_tag") or None) == languages["color"]:
                standardized.extend(_text(v) for v in entry.get("standardized_values") or [] if _text(v))
    main = record.get("main_image_id")
    main = str(main) if main else None
    others = tuple(str(i) for i in record.get("other_image_id") or [] if i)
    return Listing(
        item_id=str(record.get("item_id") or ""),
        domain_name=str(record.get("domain_name") or ""),
        country=str(record.get("country") or ""),
        main_image_id=main,
        other_image_ids=others,
        image_path=(image_paths or {}).get(main) if main else None,
        name=names[0] if names else None,
        bullet_points=tuple(bullets),
        language=bullet_tag,
        attributes=attributes,
        languages=languages,
        color_standardized=tuple(_unique(standardized)),
        product_type=tuple(_unique(v for _, v in _entries(record.get("product_type")))),
        nodes=tuple(_nodes(record.get("node"))),
        dimensions=_dimensions(record.get("item_dimensions")),
        weight=_weight(record.get("item_weight")),
        source=source,
    )


def _unique(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


def _nodes(raw: Any) -> list[str]:
    out = []
    for entry in raw if isinstance(raw, list) else []:
        if isinstance(entry, dict):
            name = entry.get("node_name") or entry.get("path")
            if name:
                out.append(str(name))
    return out


def _measure(raw: Any) -> Measure | None:
    """Prefer the normalised value (inches, pounds); fall back to the listed one."""
    if not isinstance(raw, dict):
        return None
    for candidate in (raw.get("normalized_value"), raw):
        if isinstance(candidate, dict) and isinstance(candidate.get("value"), (int, float)):
            return Measure(float(candidate["value"]), str(candidate.get("unit") or ""))
    return None


def _dimensions(raw: Any) -> dict[str, Measure]:
    if not isinstance(raw, dict):
        return {}
    out = {}
    for axis in ("height", "length", "width"):
        m = _measure(raw.get(axis))
        if m is not None:
            out[axis] = m
    return out


def _weight(raw: Any) -> Measure | None:
    if isinstance(raw, list):
        raw = raw[0] if raw else None
    return _measure(raw)


def listing_files(root: Path) -> list[Path]:
    """The listing files of an ABO tree, in name order."""
    folder = Path(root) / LISTINGS_DIR
    files = sorted(p for p in folder.glob(LISTINGS_GLOB) if p.suffix in (".gz", ".json", ".jsonl"))
    if not files:
        raise AssetMissingError(
            f"ABO listings under {folder}",
            "no listings_*.json.gz files there; download them with `vlmbench data download abo` "
            "or pass the folder that holds listings/ and images/",
        )
    return files


def read_image_paths(path: Path) -> dict[str, str]:
    """``images.csv.gz`` (or a plain CSV) as ``{image_id: path}``; paths are relative to images/small."""
    path = Path(path)
    if not path.is_file():
        raise AssetMissingError(
            f"ABO image metadata {path}", "download it with `vlmbench data download abo` (images archive)"
        )
    opener = gzip.open if path.suffix == ".gz" else open
    out: dict[str, str] = {}
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"image_id", "path"} <= set(reader.fieldnames):
            raise DataError(
                f"{path}: expected the columns image_id,height,width,path; got {reader.fieldnames}"
            )
        for row in reader:
            if row.get("image_id") and row.get("path"):
                out[row["image_id"]] = row["path"]
    return out


def _lines(path: Path) -> Iterator[str]:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8") as fh:
            yield from fh
    else:
        with open(path, encoding="utf-8") as fh:
            yield from fh


def iter_listings(
    source: Path | Sequence[Path],
    *,
    order: Sequence[str] = language_order(),
    image_paths: Mapping[str, str] | None = None,
    stats: ReadStats | None = None,
    require_image: bool = False,
) -> Iterator[Listing]:
    """Stream the listings of an ABO tree (``source`` = its root) or of the given listing files.

    Lines that are not JSON objects are counted in ``stats.bad_lines`` and skipped. With
    ``require_image`` only listings whose main image is in ``image_paths`` are yielded.
    """
    stats = stats if stats is not None else ReadStats()
    files = listing_files(source) if isinstance(source, (str, Path)) else [Path(p) for p in source]
    for path in files:
        stats.files += 1
        for number, line in enumerate(_lines(path), start=1):
            if not line.strip():
                continue
            stats.lines += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                stats.bad_lines += 1
                continue
            if not isinstance(record, dict):
                stats.bad_lines += 1
                continue
            if not record.get("item_id"):
                stats.no_item_id += 1
                continue
            listing = parse_listing(record, order, image_paths, source=f"{path.name}:{number}")
            if require_image:
                if not listing.main_image_id:
                    stats.no_main_image += 1
                    continue
                if listing.image_path is None:
                    stats.image_not_in_metadata += 1
                    continue
            stats.listings += 1
            yield listing
