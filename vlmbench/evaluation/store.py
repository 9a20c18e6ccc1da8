"""The prediction cache: model outputs in SQLite, written batch by batch.

Rows are keyed by (model fingerprint, task hash, sample id, settings hash), so rerunning a finished
run asks the model nothing, a run killed mid-way resumes where it stopped, and a new metric never
needs the model again. WAL mode lets several processes (ranks, or two runs) share one file.

The file is checked before it is changed (its mark and every table, view and trigger in it: see
:func:`vlmbench.cache.schema_problem`), and every row is checked when read: a row that is not what
vlmbench writes (an answer that is not text, scores that are not a flat list of numbers, no hash of the
image it was answered for) is not trusted; its sample is answered again, and the rows ignored are
counted in a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vlmbench.cache import NotSQLite, schema_problem, sqlite_mark
from vlmbench.errors import VlmbenchError
from vlmbench.files import NotRegularFile

_MODEL_INFO = """
CREATE TABLE IF NOT EXISTS model_info (
    model_fp TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    created REAL NOT NULL
)
"""

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
# PRAGMA application_id marks a file as a vlmbench cache ("vlmb"), so that a path given by mistake
# (another program's database, a CSV file) is refused instead of being changed or moved aside.
APPLICATION_ID = 0x766C6D62
_COLUMNS = (
    "model_fp", "task_hash", "sample_id", "settings_hash", "kind", "prompt", "raw", "scores",
    "image_sha256", "created",
)  # fmt: skip
_TABLES = {"predictions": _COLUMNS, "model_info": ("model_fp", "info", "created")}
_READ = "sample_id, kind, prompt, raw, scores, image_sha256"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class PredictionStore:
    def __init__(self, path: str | Path | None):
        """``path=None`` keeps predictions in memory only (``--no-cache``).

        A vlmbench cache that is damaged (truncated, corrupted) is moved aside as
        ``<name>.corrupt-<time>`` and a new cache is started; ``self.repaired`` then names where the
        damaged file went. A file that is not a vlmbench cache is refused and left untouched.
        """
        self.path = Path(path) if path else None
        self.repaired: Path | None = None
        #: Rows not trusted since the store was opened, by reason (they are answered again).
        self.ignored: Counter[str] = Counter()
        if self.path:
            _check_location(self.path)
        ours = self.path is not None and _identify(self.path)
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                self._db = self._open()
                return
            except sqlite3.OperationalError as exc:
                # Locked or busy: another process (a second run, another rank) is using the file.
                # That is not damage; moving the file aside under it would be.
                if attempt == _OPEN_ATTEMPTS - 1:
                    raise VlmbenchError(f"cannot open the prediction cache {self.path}: {exc}") from None
            except sqlite3.DatabaseError:
                if self.path is None:
                    raise
                if attempt == _OPEN_ATTEMPTS - 1:
                    if ours != "vlmbench":
                        raise VlmbenchError(
                            f"{self.path} is not a readable vlmbench prediction cache; it was left as it is "
                            "(choose another --cache path, or move the file away)"
                        ) from None
                    self.repaired = _move_aside(self.path)
                    self._db = self._open()
                    return
            time.sleep(0.2 * (attempt + 1))  # a file being created by another process settles quickly

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path) if self.path else ":memory:", timeout=60)
        try:
            db.execute("PRAGMA busy_timeout = 60000")
            if self.path:
                if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise sqlite3.DatabaseError("quick_check failed")  # damage, not contention
                _check_tables(db, self.path)
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(_SCHEMA)
            db.execute(_MODEL_INFO)
            db.commit()
        except BaseException:
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
            rows = src.execute(f"SELECT {', '.join(_COLUMNS)} FROM predictions").fetchall()
            infos = src.execute("SELECT model_fp, info FROM model_info").fetchall()
        self._write(rows)
        for model_fp, info in infos:
            self.put_model_info(model_fp, json.loads(info))
        return len(rows)

    def done(self, key: RunKey) -> dict[str, str]:
        """Sample id -> the sha256 of the image it was answered for, for every stored answer of ``key``
        that can be trusted (see :meth:`_rows`)."""
        return {p.sample_id: p.image_sha256 for p in self._rows(key)}

    def _rows(self, key: RunKey) -> list[CachedPrediction]:
        """The rows of ``key`` as vlmbench writes them; the others are counted in :attr:`ignored` and a
        warning says how many of them were left out."""
        rows = self._db.execute(
            f"SELECT {_READ} FROM predictions WHERE model_fp=? AND task_hash=? AND settings_hash=?",
            (key.model_fp, key.task_hash, key.settings_hash),
        )
        out, ignored = [], Counter()
        for row in rows:
            found = _decode(row)
            if isinstance(found, CachedPrediction):
                out.append(found)
            else:
                ignored[found] += 1
        if ignored:
            self.ignored.update(ignored)
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(ignored.items()))
            warnings.warn(
                f"{sum(ignored.values())} answers in the prediction cache {self.path} cannot be trusted "
                f"({reasons}); they are computed again",
                stacklevel=3,
            )
        return out

    def done_ids(self, key: RunKey) -> set[str]:
        return set(self.done(key))

    def _write(self, rows: list[tuple]) -> None:
        try:
            with self._db:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO predictions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                    rows,
                )
        except sqlite3.OperationalError as exc:  # disk full, read-only file, I/O error
            raise VlmbenchError(
                f"cannot write to the prediction cache {self.path or '(in memory)'}: {exc}"
            ) from None

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
        self._write(rows)

    def put_model_info(self, model_fp: str, info: dict) -> None:
        """What a loaded model reported about itself (parameter count, checkpoint commit...), kept with
        its answers so that a rerun answered wholly from the cache can still report it."""
        row = (model_fp, json.dumps(info, sort_keys=True, default=str), time.time())
        try:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO model_info VALUES (?,?,?)", row)
        except sqlite3.OperationalError as exc:
            raise VlmbenchError(
                f"cannot write to the prediction cache {self.path or '(in memory)'}: {exc}"
            ) from None

    def model_info(self, model_fp: str) -> dict | None:
        row = self._db.execute("SELECT info FROM model_info WHERE model_fp=?", (model_fp,)).fetchone()
        try:
            info = json.loads(row[0]) if row else None
        except (TypeError, ValueError, RecursionError):  # not what vlmbench writes: as if absent
            return None
        return info if isinstance(info, dict) else None

    def get_many(self, key: RunKey, sample_ids: Sequence[str]) -> dict[str, CachedPrediction]:
        wanted = set(sample_ids)
        return {p.sample_id: p for p in self._rows(key) if p.sample_id in wanted}


def _decode(row: tuple) -> CachedPrediction | str:
    """A stored row as a prediction, or why it cannot be trusted."""
    sid, kind, prompt, raw, scores, sha = row
    if not all(isinstance(v, str) for v in (sid, kind, prompt, raw)):
        return "not text"
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        return "without the hash of their image"
    if scores is None:
        return CachedPrediction(sid, kind, prompt, raw, None, sha)
    try:
        values = json.loads(scores) if isinstance(scores, str) else None
    except (ValueError, RecursionError):
        values = None
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        return "with unreadable scores"
    return CachedPrediction(sid, kind, prompt, raw, [float(v) for v in values], sha)


def _check_location(path: Path) -> None:
    if path.is_dir():
        raise VlmbenchError(
            f"the prediction cache {path} is a folder; give a file path (e.g. {path}/predictions.sqlite)"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VlmbenchError(
            f"cannot create the folder of the prediction cache {path}: {exc.strerror or exc}"
        ) from None
    if not path.parent.is_dir():
        raise VlmbenchError(f"the prediction cache {path} cannot be created: {path.parent} is not a folder")
    if not os.access(path.parent, os.W_OK | os.X_OK) or (
        path.exists() and not os.access(path, os.R_OK | os.W_OK)
    ):
        raise VlmbenchError(
            f"the prediction cache {path} is not writable (choose another --cache path, or --no-cache)"
        )


def _identify(path: Path) -> str:
    """``"new"`` (absent or empty), ``"vlmbench"`` (marked as ours) or ``"unknown"`` (an SQLite file
    without our mark: an older vlmbench cache, or someone else's). Anything else is refused here."""
    try:
        mark = sqlite_mark(path)
    except NotRegularFile as exc:
        raise VlmbenchError(f"the prediction cache {exc} (check the --cache path)") from None
    except NotSQLite:
        raise VlmbenchError(
            f"{path} is not a vlmbench prediction cache (not an SQLite database); it was left as it is — "
            "check the --cache path"
        ) from None
    except OSError as exc:
        raise VlmbenchError(f"cannot read the prediction cache {path}: {exc.strerror or exc}") from None
    if mark is None:
        return "new"
    if mark == APPLICATION_ID:
        return "vlmbench"
    if mark:
        raise VlmbenchError(
            f"{path} is another program's SQLite database, not a vlmbench prediction cache; it was left as it is"
        )
    return "unknown"


def _check_tables(db: sqlite3.Connection, path: Path) -> None:
    """Any file, marked as ours or not, holds nothing but our tables (some may not exist yet)."""
    problem = schema_problem(db, _TABLES)
    if problem:
        raise VlmbenchError(
            f"{path} is an SQLite database that is not a vlmbench prediction cache (it {problem}); "
            "it was left as it is — check the --cache path"
        )


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    path.replace(target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.replace(target.with_name(target.name + suffix))
    return target


# -- data-parallel shards ----------------------------------------------------------------------------
# Each rank of a data-parallel run writes its answers to its own shard file beside the cache; after a
# barrier rank 0 merges them. Shards left by a killed run count as done on the next one.


def shard_dir(cache: Path) -> Path:
    return cache.with_name(cache.name + ".shards")


def done_in_shards(folder: Path, key: RunKey) -> dict[str, str]:
    done: dict[str, str] = {}
    for shard in sorted(folder.glob("rank*.sqlite")):
        with PredictionStore(shard) as other:
            done.update(other.done(key))
    return done


def merge_shards(store: PredictionStore, folder: Path) -> None:
    """Copy every rank's shard into ``store`` and delete the shards (the folder too, once empty)."""
    for shard in sorted(folder.glob("rank*.sqlite")):
        store.merge_from(shard)
        for leftover in shard.parent.glob(shard.name + "*"):
            leftover.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()  # left in place if another run is still writing shards there
