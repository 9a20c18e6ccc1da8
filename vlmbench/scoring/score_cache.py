"""The score cache: metric scores of (prediction, reference) pairs in SQLite, reused across runs.

A cached rerun or a re-scoring would otherwise pay seconds per metric for loading an encoder or WordNet
to recompute scores it computed before. Rows are keyed by a metric's identity (its digest: everything
its scores depend on, see ``SampleMetric.cache_identity``), the prediction and the reference; the value
is the scores' IEEE doubles as bytes, so a stored score reads back bit for bit (NaN included, which an
SQLite REAL would turn into NULL). Beside them, per identity, the metric's ``describe()`` output, so a
metric that is not set up still records its details.

The file (``metric_scores.sqlite`` in vlmbench's cache folder unless ``VLMBENCH_SCORE_CACHE`` names
another; on and off with the prediction cache) is shared by concurrent processes (WAL mode; rows are only ever added). It is only a speed-up:
a damaged file is moved aside, another program's file left alone (checked before anything in it is
changed: see :func:`vlmbench.cache.schema_problem`), a locked or unwritable one skipped, a stored row
that is not what vlmbench writes recomputed — each with a warning, never an error of the run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench.cache import NotSQLite, cache_dir, schema_problem, sqlite_mark
from vlmbench.files import NotRegularFile

SCORE_CACHE_NAME = "metric_scores.sqlite"
# PRAGMA application_id "vlms": marks the file as a vlmbench score cache (the prediction cache is "vlmb").
APPLICATION_ID = 0x766C6D73
_TABLES = {
    "scores": ("key", "prediction", "reference", "scores"),
    "metrics": ("key", "identity", "details", "created"),
}
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS scores (
        key TEXT NOT NULL,
        prediction TEXT NOT NULL,
        reference TEXT NOT NULL,
        scores BLOB NOT NULL,
        PRIMARY KEY (key, prediction, reference)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS metrics (
        key TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        details TEXT NOT NULL,
        created REAL NOT NULL
    )""",
)
_DTYPE = np.dtype("<f8")


def default_score_cache_path() -> Path:
    """``$VLMBENCH_SCORE_CACHE`` if set, else ``metric_scores.sqlite`` in vlmbench's cache folder."""
    return Path(os.environ.get("VLMBENCH_SCORE_CACHE") or cache_dir() / SCORE_CACHE_NAME)


class ScoreCache:
    """One open score cache. Every method degrades to "nothing stored" on an SQLite error: the first
    error warns and turns the cache off for the rest of the process's use of this object."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        problem = _foreign(self.path)
        if problem:
            _warn(f"{self.path} {problem}; it was left as it is and scores are not cached")
            return
        try:
            self._db = self._open()
        except _Foreign as exc:
            _warn(f"{self.path} {exc}; it was left as it is and scores are not cached")
        except sqlite3.DatabaseError as exc:
            self._failed(exc)

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), timeout=30)
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            # Before anything is changed, whatever mark the file carries.
            problem = schema_problem(db, _TABLES)
            if problem:
                raise _Foreign(problem)
            if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            for statement in _SCHEMA:
                db.execute(statement)
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def details(self, key: str) -> dict[str, Any] | None:
        """The ``describe()`` output stored with the scores of ``key``."""
        row = self._query("SELECT details FROM metrics WHERE key = ?", (key,))
        if not row:
            return None
        try:
            found = json.loads(row[0][0]) if isinstance(row[0][0], str) else None
        except (ValueError, RecursionError):
            found = None
        if not isinstance(found, dict):
            # As if never stored: the metric's scores are computed again and stored anew.
            _warn(
                f"the score cache {self.path} holds unreadable details for one metric; its scores are computed again"
            )
            return None
        return found

    def lookup(self, key: str, pairs: Sequence[tuple[str, str]], width: int) -> dict[int, np.ndarray]:
        """Stored scores of ``pairs`` (by position in ``pairs``), ``width`` values each."""
        if self._db is None:
            return {}
        found: dict[int, np.ndarray] = {}
        bad = 0
        try:
            cursor = self._db.cursor()
            for i, (prediction, reference) in enumerate(pairs):
                row = cursor.execute(
                    "SELECT scores FROM scores WHERE key = ? AND prediction = ? AND reference = ?",
                    (key, prediction, reference),
                ).fetchone()
                if row is None:
                    continue
                if isinstance(row[0], bytes) and len(row[0]) == width * _DTYPE.itemsize:
                    found[i] = np.frombuffer(row[0], dtype=_DTYPE)
                else:
                    bad += 1
        except sqlite3.Error as exc:
            self._failed(exc)
            return {}
        if bad:
            _warn(f"{bad} stored scores in the score cache {self.path} are not what vlmbench writes; they are "
                  "computed again")  # fmt: skip
        return found

    def store(
        self,
        key: str,
        identity: dict[str, Any],
        details: dict[str, Any],
        pairs: Sequence[tuple[str, str]],
        values: np.ndarray,
    ) -> None:
        """Add the scores of ``pairs`` (``values``: one row of floats per pair) and the details of ``key``."""
        if self._db is None:
            return
        rows = np.ascontiguousarray(values, dtype=_DTYPE)
        try:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)",
                    ((key, p, r, rows[i].tobytes()) for i, (p, r) in enumerate(pairs)),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)",
                    (key, json.dumps(identity, sort_keys=True, default=str),
                     json.dumps(details, default=str), time.time()),
                )  # fmt: skip
        except sqlite3.Error as exc:
            self._failed(exc)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> ScoreCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        if self._db is None:
            return []
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            self._failed(exc)
            return []

    def _failed(self, exc: sqlite3.Error) -> None:
        """Turn the cache off; a damaged file (not a busy or read-only one) is moved aside and a new one
        started."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if isinstance(exc, sqlite3.OperationalError):  # locked, read-only, disk full: not damage
            _warn(f"the score cache {self.path} cannot be used ({exc}); scores are not cached")
            return
        target = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            self.path.replace(target)
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    side.replace(target.with_name(target.name + suffix))
        except OSError:
            _warn(f"the score cache {self.path} is damaged ({exc}); scores are not cached")
            return
        _warn(f"the score cache was damaged ({exc}); it was moved to {target} and a new one started")
        try:
            self._db = self._open()
        except (sqlite3.Error, _Foreign):
            self._db = None


class _Foreign(Exception):
    """The file is an SQLite database of another program."""


def _foreign(path: Path) -> str | None:
    """Why ``path`` is not a file this cache may use (not SQLite, another program's mark), or None."""
    try:
        mark = sqlite_mark(path)
    except NotRegularFile as exc:
        return str(exc).removeprefix(f"{path} ")
    except NotSQLite:
        return "is not an SQLite database"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if mark not in (None, 0, APPLICATION_ID):
        return "is another program's SQLite database"
    return None


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)
