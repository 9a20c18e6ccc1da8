"""Run artifacts on disk: ``results.json`` and ``predictions.jsonl``, always replaced atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

RESULTS = "results.json"
PREDICTIONS = "predictions.jsonl"
RESULTS_SCHEMA = "vlmbench.results/1"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic_write(path: Path, write) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: readers see
    the old file or the new one, never half of one, even if two runs write at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; artifacts get the usual permissions
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
