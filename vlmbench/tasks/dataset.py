"""Reading a task's samples from CSV, JSONL or a Hugging Face dataset.

Rows are mapped to :class:`Sample` through the task's column mapping. Rows that cannot be used are
reported as :class:`RowProblem` (with file and line) and the caller's policy decides whether they are
skipped and counted or stop the run.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench.errors import AssetMissingError, DataError, did_you_mean
from vlmbench.files import NotRegularFile, read_regular
from vlmbench.schema import invalid_text
from vlmbench.tasks.images import ImageProblem, read_image_file
from vlmbench.tasks.spec import DatasetSpec, is_hub_id

HF_IMAGE_PREFIX = "hf-row:"
# Difficulty levels are small integers (the study uses 0-5); anything far outside is a data error.
MAX_DIFFICULTY = 100


@dataclass(frozen=True)
class Sample:
    """One question about one image. ``answers`` holds the reference answer(s)."""

    id: str
    image: str  # path relative to the image root, or "hf-row:<n>" for an image stored in a HF dataset
    image_id: str
    question: str
    answers: tuple[str, ...]
    difficulty: int | None = None
    split: str | None = None
    where: str = ""  # "file:line", for messages
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class RowProblem:
    reason: str  # empty_question, empty_reference, bad_difficulty, duplicate_id, missing_image_ref
    message: str


@dataclass
class LoadedSplit:
    samples: list[Sample]
    problems: list[RowProblem]
    content_hash: str  # identifies the data the samples came from (file bytes or dataset fingerprint)


class ImageSource:
    """Fetches the bytes of a sample's image; picklable, so it can run in DataLoader workers."""

    def __init__(self, root: str | None, hf_dataset: Any = None, hf_column: str | None = None):
        self.root = Path(root) if root else None
        self.hf_dataset = hf_dataset
        self.hf_column = hf_column

    def read(self, sample_image: str) -> bytes:
        if sample_image.startswith(HF_IMAGE_PREFIX):
            row = self.hf_dataset[int(sample_image[len(HF_IMAGE_PREFIX) :])]
            value = row[self.hf_column]
            data = value.get("bytes") if isinstance(value, dict) else None
            if data:
                return data
            path = value.get("path") if isinstance(value, dict) else None
            if not path or self.root is None:
                raise ImageProblem("missing_image", f"{sample_image} has no embedded image bytes")
            return read_image_file(self.root, path)
        if self.root is None:
            raise ImageProblem("missing_image", "the task has no dataset.image_root for image paths")
        return read_image_file(self.root, sample_image)


def load_split(spec: DatasetSpec, split: str | None) -> tuple[LoadedSplit, ImageSource]:
    """Read the rows of ``split`` (all rows when None) and the image source that serves them."""
    if spec.format == "hf":
        return _load_hf(spec, split)
    path = Path(spec.path)
    try:
        data = read_regular(path)
    except (FileNotFoundError, IsADirectoryError):
        raise AssetMissingError(
            f"dataset file {path}",
            spec.missing_hint
            or "the file does not exist; check dataset.path in the task file (relative paths are resolved "
            "against the task file's folder)",
        ) from None
    except NotRegularFile as exc:
        raise DataError(f"dataset file {exc}") from None
    problems: list[RowProblem] = []
    rows = _csv_rows(path, data, problems) if spec.format == "csv" else _jsonl_rows(path, data, problems)
    loaded = _to_samples(rows, spec, split, str(path))
    loaded.problems[:0] = problems
    loaded.content_hash = hashlib.sha256(data).hexdigest()
    return loaded, ImageSource(spec.image_root)


_UTF16_32 = {
    codecs.BOM_UTF32_LE: "utf-32",
    codecs.BOM_UTF32_BE: "utf-32",
    codecs.BOM_UTF16_LE: "utf-16",
    codecs.BOM_UTF16_BE: "utf-16",
}  # fmt: skip (UTF-32 first: its little-endian mark begins like UTF-16's)


def _decode(path: Path, data: bytes, problems: list[RowProblem]) -> str:
    """UTF-8 text (UTF-16 and UTF-32 too when the file starts with their byte-order mark, as
    spreadsheet programs write them); lines that are not valid UTF-8 are recorded as problems and left
    empty, so line numbers in later messages still match the file."""
    for bom, encoding in _UTF16_32.items():
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: not valid {encoding.upper()} text (byte {exc.start})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    lines = data.split(b"\n")
    out = []
    for number, line in enumerate(lines, start=1):
        try:
            out.append(line.decode("utf-8-sig" if number == 1 else "utf-8"))
        except UnicodeDecodeError as exc:
            problems.append(
                RowProblem("bad_encoding", f"{path}:{number}: not valid UTF-8 (byte {line[exc.start]:#04x})")
            )
            out.append("")
    return "\n".join(out)


def _csv_rows(path: Path, data: bytes, problems: list[RowProblem]) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(_decode(path, data, problems), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty") from None
    except csv.Error as exc:
        raise DataError(f"{path}:1: malformed CSV header: {exc}") from None
    header = [h.strip() for h in header]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataError(
            f"{path}:1: column {repeated[0]!r} appears more than once in the header; every column needs its own name"
        )
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.append(RowProblem("malformed_row", f"{path}:{reader.line_num}: malformed CSV: {exc}"))
            continue
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            problems.append(
                RowProblem(
                    "malformed_row",
                    f"{path}:{reader.line_num}: expected {len(header)} fields ({', '.join(header)}), got {len(row)}",
                )
            )
            continue
        yield reader.line_num, dict(zip(header, row, strict=True))


def _jsonl_rows(path: Path, data: bytes, problems: list[RowProblem]) -> Iterator[tuple[int, dict[str, Any]]]:
    lines = _decode(path, data, problems).split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(RowProblem("malformed_row", f"{path}:{number}: malformed JSON: {exc.msg}"))
            continue
        except RecursionError:
            problems.append(RowProblem("malformed_row", f"{path}:{number}: JSON nested too deeply"))
            continue
        if not isinstance(row, dict):
            problems.append(RowProblem("malformed_row", f"{path}:{number}: each line must be a JSON object"))
            continue
        bad_text = invalid_text(row)
        if bad_text:  # a "\ud800" escape: the row could never be written to predictions.jsonl
            problems.append(RowProblem("bad_encoding", f"{path}:{number}: {bad_text}"))
            continue
        yield number, row


def _to_samples(rows, spec: DatasetSpec, split: str | None, name: str) -> LoadedSplit:
    cols = spec.columns
    samples: list[Sample] = []
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}
    checked_header = False
    for line, row in rows:
        if not checked_header:
            _check_columns(row.keys(), spec, split, name)
            checked_header = True
        where = f"{name}:{line}"
        if split is not None and cols.split and str(row.get(cols.split, "")).strip() != split:
            continue
        question = str(row.get(cols.question) or "").strip()
        answer_cell = row.get(cols.answer)
        answers = split_answers(answer_cell, spec.answer_separator)
        image = str(row.get(cols.image) or "").strip()
        if not question:
            problems.append(RowProblem("empty_question", f"{where}: the question is empty"))
            continue
        if not answers:
            problems.append(RowProblem("empty_reference", f"{where}: the reference answer is empty"))
            continue
        if not image:
            problems.append(RowProblem("missing_image_ref", f"{where}: no image is given"))
            continue
        difficulty = None
        if cols.difficulty and row.get(cols.difficulty) not in (None, ""):
            raw = row[cols.difficulty]
            difficulty = parse_difficulty(raw)
            if difficulty is None:
                problems.append(
                    RowProblem(
                        "bad_difficulty",
                        f"{where}: difficulty {_short(raw)} is not an integer from 0 to {MAX_DIFFICULTY}",
                    )
                )
                continue
        image_id = str(row.get(cols.image_id) or "").strip() if cols.image_id else ""
        image_id = image_id or Path(image).stem
        sample_id = str(row.get(cols.id) or "").strip() if cols.id else ""
        if cols.id:
            if not sample_id:
                problems.append(RowProblem("empty_id", f"{where}: the sample id is empty"))
                continue
            if sample_id in seen:
                problems.append(
                    RowProblem(
                        "duplicate_id",
                        f"{where}: sample id {sample_id!r} was already used on line {seen[sample_id]}",
                    )
                )
                continue
        else:
            # No id column: derive a stable id from the image and the question, so the cache
            # survives reordering of the file; exact repeats get a counter.
            base = hashlib.sha1(f"{image}\x00{question}".encode()).hexdigest()[:16]
            sample_id, n = base, 1
            while sample_id in seen:
                n += 1
                sample_id = f"{base}-{n}"
        seen[sample_id] = line
        used = {cols.image, cols.question, cols.answer, cols.image_id, cols.difficulty, cols.id, cols.split}
        extra = {k: v for k, v in row.items() if k not in used}
        samples.append(
            Sample(
                id=sample_id,
                image=image,
                image_id=image_id,
                question=question,
                answers=answers,
                difficulty=difficulty,
                split=split,
                where=where,
                extra=extra,
            )
        )
    if not checked_header:
        raise DataError(f"{name}: the dataset has no rows")
    return LoadedSplit(samples=samples, problems=problems, content_hash="")


def parse_difficulty(raw: Any) -> int | None:
    """An integer difficulty level from 0 to :data:`MAX_DIFFICULTY` (``"3"``, ``3``, ``"3.0"``), else None."""
    if isinstance(raw, bool):
        return None
    text = str(raw).strip()
    if len(text) > 20:
        return None
    try:
        value = int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError:
            return None
        if not as_float.is_integer():
            return None
        value = int(as_float)
    return value if 0 <= value <= MAX_DIFFICULTY else None


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def split_answers(cell: Any, separator: str | None) -> tuple[str, ...]:
    """Reference answers from a cell: a list, or a string split on ``separator`` (blanks dropped)."""
    if cell is None:
        return ()
    if isinstance(cell, (list, tuple)):
        items = [str(c) for c in cell]
    elif separator:
        items = str(cell).split(separator)
    else:
        items = [str(cell)]
    return tuple(a.strip() for a in items if a.strip())


def _check_columns(present, spec: DatasetSpec, split: str | None, name: str) -> None:
    cols = spec.columns
    present = list(present)
    required = {"image": cols.image, "question": cols.question, "answer": cols.answer}
    if cols.id:
        required["id"] = cols.id
    if split is not None and spec.format != "hf":
        if not cols.split:
            raise DataError(
                f"{name}: the task asks for split {split!r} but dataset.columns.split names no split column"
            )
        required["split"] = cols.split
    for field_name, column in required.items():
        if column not in present:
            close = did_you_mean(column, present)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(
                f"{name}: column {column!r} for {field_name!r} not found{hint}; columns are: {', '.join(map(str, present))}. "
                f"Map it with dataset.columns.{field_name} in the task file."
            )


def _load_hf(spec: DatasetSpec, split: str | None) -> tuple[LoadedSplit, ImageSource]:
    import datasets

    path = Path(spec.path)
    hint = f" {spec.missing_hint}" if spec.missing_hint else ""
    if not path.exists() and not is_hub_id(spec.path):
        raise AssetMissingError(f"dataset {spec.path}", f"the folder does not exist.{hint}")
    try:
        if path.exists():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(spec.path)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as exc:
        raise AssetMissingError(
            f"dataset {spec.path}",
            f"it is neither a local `save_to_disk` folder nor loadable from the Hugging Face Hub ({exc}).{hint}",
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            if len(ds) != 1:
                raise DataError(
                    f"{spec.path}: the dataset has splits {sorted(ds)}; set `split` in the task file"
                )
            split = next(iter(ds))
        if split not in ds:
            raise DataError(f"{spec.path}: no split {split!r}; the dataset has {sorted(ds)}")
        ds = ds[split]
    image_col = spec.columns.image
    features = getattr(ds, "features", {}) or {}
    is_image = image_col in features and isinstance(features[image_col], datasets.Image)
    if is_image:
        ds = ds.cast_column(image_col, datasets.Image(decode=False))

    def rows():
        for i, row in enumerate(ds):
            if is_image:
                row = dict(row)
                row[image_col] = f"{HF_IMAGE_PREFIX}{i}"
            yield i + 1, row

    loaded = _to_samples(rows(), spec, None, spec.path)
    if split is not None:
        loaded.samples = [_with_split(s, split) for s in loaded.samples]
    loaded.content_hash = getattr(ds, "_fingerprint", "") or ""
    return loaded, ImageSource(spec.image_root, ds if is_image else None, image_col if is_image else None)


def _with_split(sample: Sample, split: str) -> Sample:
    from dataclasses import replace

    return replace(sample, split=split)
