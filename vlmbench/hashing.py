"""Hashes: of JSON-able identities (fingerprints, task and settings hashes) and of files.

``json_digest`` names anything that determines outputs, canonically (sorted keys). For files:

Model fingerprints include the sha256 of the weights they load, so that two checkpoints never share
cached predictions. A multi-gigabyte file should be read in full once, not at every run: facts are
remembered in ``<cache dir>/file_facts.json``, keyed by absolute path and valid while the file's size
and modification time are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlmbench.cache import cache_dir
from vlmbench.files import open_regular


def json_digest(obj: Any, length: int | None = 16) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys), as hex, cut to ``length`` characters."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
    return digest[:length] if length else digest


# Smaller files are hashed on every call: cheaper than reading and rewriting the memo.
_MEMO_MIN_BYTES = 16 * 2**20
_memory: dict[tuple[str, int, int, str], Any] = {}


def _memo_path() -> Path:
    return cache_dir() / "file_facts.json"


def remembered(path: str | Path, what: str, compute: Callable[[Path], Any], *, always: bool = False) -> Any:
    """``compute(path)``, remembered for this file version under the name ``what``.

    Results of files under 16 MiB are kept in memory only, unless ``always`` is true. ``compute`` must
    return JSON-serialisable data.
    """
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, what)
    if key in _memory:
        return _memory[key]
    if st.st_size < _MEMO_MIN_BYTES and not always:
        _memory[key] = value = compute(path)
        return value
    memo_path = _memo_path()
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    entry = memo.get(str(path))
    if not (
        isinstance(entry, dict)
        and entry.get("size") == st.st_size
        and entry.get("mtime_ns") == st.st_mtime_ns
    ):
        entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "facts": {}}
    if what not in entry["facts"]:
        entry["facts"][what] = compute(path)
        memo[str(path)] = entry
        _save(memo_path, memo)
    _memory[key] = entry["facts"][what]
    return entry["facts"][what]


def _save(memo_path: Path, memo: dict) -> None:
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_name(f"{memo_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, indent=0, sort_keys=True), encoding="utf-8")
        os.replace(tmp, memo_path)
    except OSError:
        pass  # only a speed-up: the fact is worked out again next time


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's content (remembered for large files)."""
    return remembered(path, "sha256", _sha256)


def tree_sha256(path: str | Path) -> str:
    """sha256 over the files under ``path`` (relative names and contents; hidden files ignored);
    a single file's name and content when ``path`` is a file."""
    root = Path(path)
    if root.is_file():
        files = [root]
    else:
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    digest = hashlib.sha256()
    for file in files:
        name = file.name if file == root else file.relative_to(root).as_posix()
        digest.update(name.encode() + b"\0" + file_sha256(file).encode() + b"\n")
    return digest.hexdigest()
