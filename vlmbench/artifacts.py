"""Run artifacts on disk: ``results.json`` and ``predictions.jsonl``, always replaced atomically."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vlmbench.errors import VlmbenchError

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
    return sorted(root.rglob(RESULTS))


def load_results(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    data["_path"] = str(path)
    return data
