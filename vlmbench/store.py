"""The prediction cache: model outputs in SQLite, written batch by batch.

Rows are keyed by (model fingerprint, task hash, sample id, settings hash), so rerunning a finished
run asks the model nothing, a run killed mid-way resumes where it stopped, and a new metric never
needs the model again. WAL mode lets several processes (ranks, or two runs) share one file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    model_fp TEXT NOT NULL,
    task_hash TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    settings_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    prompt TEXT NOT NULL,
    raw TEXT NOT NULL,
    scores TEXT,
    image_sha256 TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (model_fp, task_hash, sample_id, settings_hash)
)
"""


@dataclass(frozen=True)
class CachedPrediction:
    sample_id: str
    kind: str
    prompt: str
    raw: str
    scores: list[float] | None
    image_sha256: str | None


@dataclass(frozen=True)
class RunKey:
    model_fp: str
    task_hash: str
    settings_hash: str


_OPEN_ATTEMPTS = 5


class PredictionStore:
    def __init__(self, path: str | Path | None):
        """``path=None`` keeps predictions in memory only (``--no-cache``).

        A file that is not a readable SQLite database (truncated, overwritten, corrupted) is moved
        aside as ``<name>.corrupt-<time>`` and a new cache is started; ``self.repaired`` then names
        where the damaged file went.
        """
        self.path = Path(path) if path else None
        self.repaired: Path | None = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                self._db = self._open()
                return
            except sqlite3.OperationalError:
                # Locked or busy: another process (a second run, another rank) is using the file.
                # That is not damage; moving the file aside under it would be.
                if attempt == _OPEN_ATTEMPTS - 1:
                    raise
            except sqlite3.DatabaseError:
                if self.path is None:
                    raise
                if attempt == _OPEN_ATTEMPTS - 1:
                    self.repaired = _move_aside(self.path)
                    self._db = self._open()
                    return
            time.sleep(0.2 * (attempt + 1))  # a file being created by another process settles quickly

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path) if self.path else ":memory:", timeout=60)
        try:
            db.execute("PRAGMA busy_timeout = 60000")
            if self.path:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
                if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise sqlite3.DatabaseError("quick_check failed")  # damage, not contention
            db.execute(_SCHEMA)
            db.commit()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PredictionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def merge_from(self, other: Path) -> int:
        """Copy the rows of another cache file (a data-parallel rank's shard) into this one."""
        with sqlite3.connect(str(other), timeout=60) as src:
            rows = src.execute("SELECT * FROM predictions").fetchall()
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO predictions VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    def done_ids(self, key: RunKey) -> set[str]:
        rows = self._db.execute(
            "SELECT sample_id FROM predictions WHERE model_fp=? AND task_hash=? AND settings_hash=?",
            (key.model_fp, key.task_hash, key.settings_hash),
        )
        return {r[0] for r in rows}

    def put_many(self, key: RunKey, items: Iterable[CachedPrediction]) -> None:
        """Write one batch in one transaction: after a crash a batch is either all there or absent."""
        now = time.time()
        rows = [
            (
                key.model_fp,
                key.task_hash,
                p.sample_id,
                key.settings_hash,
                p.kind,
                p.prompt,
                p.raw,
                None if p.scores is None else json.dumps(p.scores),
                p.image_sha256,
                now,
            )
            for p in items
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO predictions VALUES (?,?,?,?,?,?,?,?,?,?)", rows)

    def get_many(self, key: RunKey, sample_ids: Sequence[str]) -> dict[str, CachedPrediction]:
        out: dict[str, CachedPrediction] = {}
        wanted = set(sample_ids)
        rows = self._db.execute(
            "SELECT sample_id, kind, prompt, raw, scores, image_sha256 FROM predictions "
            "WHERE model_fp=? AND task_hash=? AND settings_hash=?",
            (key.model_fp, key.task_hash, key.settings_hash),
        )
        for sid, kind, prompt, raw, scores, sha in rows:
            if sid in wanted:
                out[sid] = CachedPrediction(
                    sid, kind, prompt, raw, None if scores is None else json.loads(scores), sha
                )
        return out


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    path.replace(target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.replace(target.with_name(target.name + suffix))
    return target
