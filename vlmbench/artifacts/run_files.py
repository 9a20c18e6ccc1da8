"""Run artifacts on disk: ``results.json`` and ``predictions.jsonl``, always replaced atomically."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from vlmbench.errors import VlmbenchError
from vlmbench.files import NotRegularFile, open_regular, read_regular_text
from vlmbench.schema import invalid_text
from vlmbench.tasks.spec import MAX_BOOTSTRAP_SAMPLES

RESULTS = "results.json"
PREDICTIONS = "predictions.jsonl"
RESULTS_SCHEMA = "vlmbench.results/1"


def safe_name(name: str) -> str:
    """``name`` as one folder-name component: anything but letters, digits, ``.``, ``_`` and ``-``
    becomes ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return "_" if safe in ("", ".", "..") else safe


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic_write(path: Path, write) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: readers see
    the old file or the new one, never half of one, even if two runs write at once. A full disk or a
    read-only folder is a :class:`VlmbenchError` naming the file; the old file is left as it was."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; artifacts get the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise VlmbenchError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def ensure_output_dir(path: Path) -> Path:
    """Create ``path`` if needed and check that files can be written there — before any model work,
    so that a wrong ``--output-dir`` costs seconds, not a whole evaluation."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise VlmbenchError(f"output folder {path} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".vlmbench-write-test-", dir=path):
            pass
    except OSError as exc:
        raise VlmbenchError(f"cannot write into the output folder {path}: {exc.strerror or exc}") from None
    return path


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda fh: fh.write(text))


def write_json(path: Path, data: Any) -> None:
    _atomic_write(
        path, lambda fh: (json.dump(data, fh, indent=2, ensure_ascii=False, allow_nan=False), fh.write("\n"))
    )


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    def write(fh):
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")

    _atomic_write(path, write)


def check_replaceable(
    run_dir: Path, *, data: str | None, fingerprint: str | None, n_samples: int, replace: bool
) -> None:
    """The one rule for writing a result into a folder that already holds one (``run`` and ``score``
    alike): a stored result is replaced only by a result of the same data (``data``: the task hash) and
    the same model or predictions file (``fingerprint``) with at least as many samples — a rerun or a
    rescore. Anything else is refused unless ``replace`` (``--replace``): a folder holding a result of
    other data, of another model or file, or of more samples is never replaced silently. A results.json
    that cannot be read, or that records a skipped model, holds nothing of value to keep."""
    path = Path(run_dir) / RESULTS
    if replace or not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        old_task, old_model = (
            (old["task"], old.get("model") or {}) if old.get("status") == "ok" else (None, None)
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
    if not isinstance(old_task, dict) or not isinstance(old_model, dict):
        return
    old_n = old_task.get("n_samples")
    old_n = old_n if isinstance(old_n, int) and not isinstance(old_n, bool) else 0
    if old_task.get("hash") == data and old_model.get("fingerprint") == fingerprint and old_n <= n_samples:
        return
    raise VlmbenchError(
        f"{run_dir} holds the result of {old_n} samples of task {old_task.get('name')!r} (hash "
        f"{old_task.get('hash')}) by {old_model.get('label') or old_model.get('name')!r} (fingerprint "
        f"{old_model.get('fingerprint')}); this result has {n_samples} samples (hash {data}, fingerprint "
        f"{fingerprint}). Choose another --output-dir, or pass --replace to replace it"
    )


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or ``{}`` when the file is missing, unreadable or not an object: for
    side files whose absence only costs a recomputation (memos, adapter notes)."""
    try:
        data = json.loads(read_regular_text(path))
    except (OSError, ValueError, NotRegularFile):
        return {}
    return data if isinstance(data, dict) else {}


def read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def find_results(root: Path) -> list[Path]:
    """All results.json files under ``root`` (or ``root`` itself when it is one)."""
    root = Path(root)
    if root.is_file():
        return [root]
    # Every entry of that name, broken links and folders included: readers report what they cannot
    # read rather than pass over it in silence.
    found = []
    for folder, dirs, files in os.walk(root):
        found += [Path(folder) / name for name in (*dirs, *files) if name == RESULTS]
    return sorted(found)


# -- reading artifacts back ------------------------------------------------------------------------
# Analysis commands read artifacts that may be half-written by a crash, edited by hand, copied from
# another tool or made by a newer vlmbench. Each is checked for the shape its readers rely on, so
# that a bad file becomes one message naming it instead of a traceback half-way through a report.

#: A results.json is a few kilobytes; a file this large is not one.
MAX_RESULTS_BYTES = 32 * 2**20
#: A prediction record is a few kilobytes; a line this long is not one.
MAX_RECORD_BYTES = 16 * 2**20
# Bootstrap resamples a stored configuration may ask a rescore for (as many as a task file may).
# Difficulty levels go into 64-bit arrays; the study's are 0-5.
_MAX_LEVEL = 2**31


class ArtifactError(VlmbenchError):
    """A results.json or predictions.jsonl that cannot be used; the message names the file (and line)."""


def parse_json(text: str | bytes, *, allow_nan: bool = True) -> Any:
    """``json.loads`` whose every failure is a ``ValueError`` with a short message: bad syntax, nesting
    too deep for the parser and, with ``allow_nan=False``, NaN or Infinity (which vlmbench never writes)."""

    def refuse(name: str) -> Any:
        raise ValueError(f"holds {name}, which is not a number")

    try:
        return json.loads(text, parse_constant=None if allow_nan else refuse)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


@contextlib.contextmanager
def _open_artifact(path: Path, max_bytes: int) -> Iterator[BinaryIO]:
    """``path`` opened if it is a regular file of at most ``max_bytes`` (a FIFO named results.json
    would block its reader forever); anything else is an :class:`ArtifactError` naming it."""
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise ArtifactError(f"{path}: {size} bytes, too large for a vlmbench artifact")
            yield fh
    except (OSError, NotRegularFile) as exc:
        raise ArtifactError(f"{path}: cannot be read ({_unreadable(exc)})") from None


def _unreadable(exc: OSError | NotRegularFile) -> str:
    """Why an artifact could not be opened, in a word or two: the path is named beside it."""
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if isinstance(exc, IsADirectoryError):
        return "a folder"
    if isinstance(exc, NotRegularFile):
        return "not a regular file"
    return exc.strerror or str(exc)


def _read_regular_file(path: Path, max_bytes: int) -> bytes:
    with _open_artifact(path, max_bytes) as fh:
        return fh.read(max_bytes + 1)


def _decode(path: Path, data: bytes, where: str = "") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError(
            f"{path}{where}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from None


def load_results(path: Path) -> dict:
    """A run's ``results.json``, checked: a JSON object of a schema this version reads, whose fields
    (status, task, model, metrics with their intervals, ...) have the types the readers rely on.
    Anything else is an :class:`ArtifactError` naming the file and what is wrong with it."""
    path = Path(path)
    text = _decode(path, _read_regular_file(path, MAX_RESULTS_BYTES))
    if not text.strip():
        raise ArtifactError(f"{path}: the file is empty")
    data = _checked(text, results_problem, where=str(path))
    data["_path"] = str(path)
    return data


def _checked(text: str, problem_of: Callable[[Any], str | None], where: str) -> Any:
    """``text`` parsed as JSON (never NaN) and of the shape ``problem_of`` checks, else an
    :class:`ArtifactError` that starts with ``where``."""
    try:
        data = parse_json(text, allow_nan=False)
    except ValueError as exc:
        raise ArtifactError(f"{where}: {exc}") from None
    problem = invalid_text(data) or problem_of(data)
    if problem:
        raise ArtifactError(f"{where}: {problem}")
    return data


def read_predictions(path: Path) -> list[dict]:
    """Every record of a run's ``predictions.jsonl``, each checked like :func:`load_results` checks
    results; the first bad line is an :class:`ArtifactError` naming the file and the line. A run
    answers each sample once: a sample id on two lines (a file edited or concatenated by hand) is an
    error too, as scoring it twice would count it twice and which of its answers counts cannot be told."""
    path = Path(path)
    records = []
    lines: dict[str, int] = {}
    with _open_artifact(path, max_bytes=2**63) as fh:  # the records are read line by line
        number = 0
        while line := fh.readline(MAX_RECORD_BYTES + 1):
            number += 1
            if len(line) > MAX_RECORD_BYTES:
                raise ArtifactError(f"{path}:{number}: line longer than {MAX_RECORD_BYTES} bytes")
            text = _decode(path, line, f":{number}")
            if text.strip():
                record = _checked(text, prediction_problem, where=f"{path}:{number}")
                first = lines.setdefault(str(record.get("sample_id")), number)
                if first != number:
                    raise ArtifactError(
                        f"{path}:{number}: sample_id {record.get('sample_id')!r} is already on line {first}; "
                        "a run's predictions hold each sample once"
                    )
                records.append(record)
    return records


def scan_results(root: Path) -> tuple[list[tuple[Path, dict]], list[ArtifactError]]:
    """Every results.json under ``root`` (see :func:`find_results`) that can be read, with its data,
    and the problem of each one that cannot: one bad file never hides the good runs."""
    good, bad = [], []
    for path in find_results(root):
        try:
            good.append((path, load_results(path)))
        except ArtifactError as exc:
            bad.append(exc)
    return good, bad


# The shapes readers rely on. A check returns None when the value fits, else (where, what is wrong);
# keys a reader does not use are not checked, so newer fields of the same schema are fine.
_Problem = tuple[tuple[str, ...], str]
_Check = Callable[[Any], "_Problem | None"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_level(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < _MAX_LEVEL


def _is_texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def _shown(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(test: Callable[[Any], bool], wanted: str, optional: bool = True) -> _Check:
    def check(value: Any) -> _Problem | None:
        if (optional and value is None) or test(value):
            return None
        return (), f"must be {wanted}, not {_shown(value)}"

    return check


_TEXT = _kind(lambda v: isinstance(v, str), "text")
_COUNT = _kind(_is_count, "a whole number of at least 0")
_NUMBER = _kind(_is_number, "a finite number")
_FLAG = _kind(lambda v: isinstance(v, bool), "true or false")
_LEVEL = _kind(_is_level, "a whole number")
_TEXTS = _kind(_is_texts, "a list of texts")
_INTERVAL = _kind(
    lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_number, v)), "two finite numbers"
)


def _inside(key: str, problem: _Problem | None) -> _Problem | None:
    return None if problem is None else ((str(key), *problem[0]), problem[1])


def _object(fields: dict[str, _Check], required: tuple[str, ...] = ()) -> _Check:
    def check(value: Any) -> _Problem | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            return (), f"must be an object, not {_shown(value)}"
        for key in required:
            if key not in value:
                return (), f"has no {key!r}"
        for key, field_check in fields.items():
            problem = _inside(key, field_check(value.get(key)))
            if problem:
                return problem
        return None

    return check


def _mapping(values: _Check, keys: _Check | None = None) -> _Check:
    def check(value: Any) -> _Problem | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            return (), f"must be an object, not {_shown(value)}"
        for key, item in value.items():
            if item is None:
                return (str(key),), "must not be null"
            problem = _inside(key, (keys(key) if keys else None) or values(item))
            if problem:
                return problem
        return None

    return check


def _explain(problem: _Problem | None) -> str | None:
    if problem is None:
        return None
    where, what = problem
    return f"{'.'.join(where)} {what}" if where else what


_METRIC = _object({"value": _NUMBER, "ci95": _INTERVAL, "n": _COUNT, "higher_is_better": _FLAG})
_METRICS = _mapping(_METRIC)
_RESULTS = _object(
    {
        "status": _kind(lambda v: v in ("ok", "skipped"), "'ok' or 'skipped'", optional=False),
        "reason": _TEXT,
        "task": _object(
            {"name": _TEXT, "hash": _TEXT, "n_samples": _COUNT, "n_scored": _COUNT, "image_root": _TEXT}
        ),
        "model": _object(
            {
                "name": _TEXT,
                "label": _TEXT,
                "checkpoint": _TEXT,
                "default_checkpoint": _TEXT,
                "fingerprint": _TEXT,
                "parameters": _COUNT,
                "vocabulary": _object(
                    {"reference_outside_share": _NUMBER}, required=("reference_outside_share",)
                ),
            }
        ),
        "metrics": _METRICS,
        "by_difficulty": _mapping(_object({"n": _COUNT, "metrics": _METRICS})),
        "metric_details": _mapping(_object({"options": _object({})})),
        "skipped_metrics": _mapping(_TEXT),
        "skipped_samples": _mapping(_COUNT),
        "timing": _object({"scoring_by_metric": _mapping(_NUMBER)}),
        "warnings": _mapping(_COUNT),
        "config": _object(
            {
                "seed": _COUNT,
                "bootstrap_samples": _kind(
                    lambda v: _is_count(v) and v <= MAX_BOOTSTRAP_SAMPLES,
                    f"a whole number from 0 to {MAX_BOOTSTRAP_SAMPLES}",
                ),
                "filters": _TEXTS,
                "difficulty_weights": _mapping(
                    _NUMBER, keys=_kind(lambda k: bool(re.fullmatch(r"-?[0-9]{1,9}", k)), "a whole number")
                ),
            }
        ),
    },
    required=("status",),
)
_PREDICTION = _object(
    {
        "sample_id": _kind(lambda v: isinstance(v, (str, int)) and not isinstance(v, bool), "text", False),
        "status": _kind(lambda v: isinstance(v, str), "text", optional=False),
        "references": _kind(_is_texts, "a list of texts", optional=False),
        "answer": _TEXT,
        "raw": _TEXT,
        "question": _TEXT,
        "difficulty": _LEVEL,
        "scores": _mapping(_NUMBER),
    },
    required=("sample_id", "references", "status"),
)


def results_problem(data: Any) -> str | None:
    """What keeps ``data`` from being a results.json this version reads, or None."""
    if not isinstance(data, dict):
        return f"holds {_shown(data)}, not a results object"
    schema = data.get("schema")
    if schema is not None and schema != RESULTS_SCHEMA:
        return f"schema {_shown(schema)} is not one this version of vlmbench reads ({RESULTS_SCHEMA})"
    if "status" not in data:
        return "has no 'status': not a vlmbench results file"
    return _explain(_RESULTS(data))


def prediction_problem(row: Any) -> str | None:
    """What keeps ``row`` from being a prediction record (a line of predictions.jsonl), or None."""
    if not isinstance(row, dict):
        return f"holds {_shown(row)}, not a prediction record"
    return _explain(_PREDICTION(row))
