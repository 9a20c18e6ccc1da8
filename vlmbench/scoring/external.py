"""External prediction files (CSV or JSONL, one prediction and one reference per row) read into the
prediction records a run writes: columns named or guessed, answers through the answer filters, bad rows
counted with a message naming the line."""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench.artifacts import run_files
from vlmbench.errors import DataError
from vlmbench.files import NotRegularFile, read_regular
from vlmbench.schema import invalid_text
from vlmbench.scoring.records import scored_answer
from vlmbench.tasks.dataset import split_answers

# Column names tried, in order, when a mapping is not given.
_GUESS = {
    "prediction": ("prediction", "generated_answer", "predicted_answer", "pred", "model_answer", "output"),
    "reference": ("reference", "references", "answer", "ground_truth", "gt_answer", "gt", "label"),
    "difficulty": ("difficulty",),
    "id": ("sample_id", "id"),
    "question": ("question",),
    "image": ("image", "image_path", "path", "image_name", "filename"),
}


@dataclass
class Columns:
    """Which column of an external file holds what (None: guess from the usual names)."""

    prediction: str | None = None
    reference: str | None = None
    difficulty: str | None = None
    id: str | None = None
    question: str | None = None
    image: str | None = None


@dataclass
class ExternalFile:
    """What an external file holds: its sha256, the columns used, one record per row and the rows skipped."""

    sha256: str
    columns: dict[str, str | None]
    records: list[dict[str, Any]]
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)


def read_external(
    path: Path, columns: Columns, separator: str | None, filters: Sequence[str]
) -> ExternalFile:
    """``path`` read into prediction records (status ``ok``, or ``skipped`` for a row without a reference
    or with a difficulty that is not a whole number), answers derived with ``filters``."""
    try:
        data = read_regular(path)
    except NotRegularFile as exc:
        raise DataError(str(exc)) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    out = ExternalFile(hashlib.sha256(data).hexdigest(), {}, [])
    header, rows = read_rows(path, data, out.skipped, out.examples)
    if not rows:
        raise DataError(f"{path}: the file has no rows")
    out.columns = cols = _resolve_columns(columns, header, path)
    seen: set[str] = set()
    for line, row in rows:
        sample_id = str(row.get(cols["id"]) or "").strip() if cols["id"] else ""
        sample_id = sample_id or f"line-{line}"
        if sample_id in seen:
            sample_id = f"{sample_id}@line-{line}"
        seen.add(sample_id)
        out.records.append(_record(path, line, row, cols, sample_id, separator, filters, out))
    return out


def _record(
    path: Path,
    line: int,
    row: dict[str, Any],
    cols: dict[str, str | None],
    sample_id: str,
    separator: str | None,
    filters: Sequence[str],
    out: ExternalFile,
) -> dict[str, Any]:
    pred_cell = row.get(cols["prediction"])
    raw = "" if pred_cell is None else str(pred_cell)
    refs = list(split_answers(row.get(cols["reference"]), separator))
    difficulty, bad = _difficulty(row.get(cols["difficulty"]) if cols["difficulty"] else None)
    record: dict[str, Any] = {
        "sample_id": sample_id,
        "image_id": None,
        "image": str(row.get(cols["image"]) or "") if cols["image"] else None,
        "image_sha256": None,
        "question": str(row.get(cols["question"]) or "") if cols["question"] else None,
        "references": refs,
        "difficulty": difficulty,
        "prompt": None,
        "line": line,
    }
    problem = None
    if not refs:
        problem = ("empty_reference", f"{path.name}:{line}: the reference is empty")
    elif bad:
        problem = ("bad_difficulty", f"{path.name}:{line}: difficulty {bad!r} is not an integer")
    if problem:
        out.skipped[problem[0]] += 1
        out.examples.append(problem[1])
        record.update(status="skipped", raw=raw, answer=None, scores={})
    else:
        record.update(status="ok", raw=raw, answer=scored_answer(raw, filters), scores={})
    return record


def read_rows(
    path: Path, data: bytes, skipped: Counter, examples: list[str]
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """(column names, [(line number, row)]) of a CSV or JSONL file. Malformed rows are counted in
    ``skipped`` (``malformed_row``) with a message naming the line; blank lines are ignored."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise DataError(f"{path}: score reads .csv or .jsonl files (or a run folder), not {suffix or 'this'}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {data[exc.start]:#04x})") from None

    def problem(line: int, message: str) -> None:
        skipped["malformed_row"] += 1
        examples.append(f"{path.name}:{line}: {message}")

    rows: list[tuple[int, dict[str, Any]]] = []
    if suffix == ".csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: the file is empty") from None
        except csv.Error as exc:
            raise DataError(f"{path}:1: malformed CSV header: {exc}") from None
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                problem(reader.line_num, f"malformed CSV: {exc}")
                continue
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                problem(reader.line_num, f"expected {len(header)} fields, got {len(cells)}")
                continue
            rows.append((reader.line_num, dict(zip(header, cells, strict=True))))
        return header, rows
    header = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = run_files.parse_json(line)
        except ValueError as exc:
            problem(number, str(exc))
            continue
        if not isinstance(row, dict):
            problem(number, "not a JSON object")
            continue
        bad_text = invalid_text(row)
        if bad_text:  # counted as the task reader counts it: text that could never be written back
            skipped["bad_encoding"] += 1
            examples.append(f"{path.name}:{number}: {bad_text}")
            continue
        header += [k for k in row if k not in header]
        rows.append((number, row))
    return header, rows


def _resolve_columns(columns: Columns, header: list[str], path: Path) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, guesses in _GUESS.items():
        given = getattr(columns, key)
        if given is not None:
            if given not in header:
                raise DataError(f"{path}: no column {given!r} for the {key} (columns: {', '.join(header)})")
            out[key] = given
            continue
        found = next((g for g in guesses if g in header), None)
        if found is None:
            lower = {h.lower(): h for h in header}
            found = next((lower[g] for g in guesses if g in lower), None)
        out[key] = found
    for key in ("prediction", "reference"):
        if out[key] is None:
            raise DataError(
                f"{path}: cannot tell which column holds the {key}; name it with --{key}-column "
                f"(columns: {', '.join(header)})"
            )
    if out["prediction"] == out["reference"]:
        raise DataError(f"{path}: prediction and reference cannot both be column {out['prediction']!r}")
    return out


def _difficulty(cell: Any) -> tuple[int | None, Any]:
    """(difficulty, None), or (None, cell) when the cell is not an integer."""
    if cell is None or str(cell).strip() == "":
        return None, None
    try:
        value = float(str(cell).strip())
    except ValueError:
        return None, cell
    return (int(value), None) if value.is_integer() else (None, cell)
