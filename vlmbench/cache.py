"""Where vlmbench keeps what it computes once: the prediction cache, file hashes, a WordNet built from a
system copy; and the check that an SQLite file is one of vlmbench's caches before it is changed."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from vlmbench.files import open_regular


def cache_dir() -> Path:
    """vlmbench's cache folder: ``$VLMBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/vlmbench`` (``~/.cache/vlmbench``)."""
    base = os.environ.get("VLMBENCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "vlmbench"
    )
    return Path(base)


# -- vlmbench's SQLite caches ------------------------------------------------------------------------
# The prediction cache and the score cache are SQLite files at paths a user may give. A file that is not
# one of them (another program's database, or one made to look like ours) is refused before anything in it
# is changed: no table created, no mark stamped, no journal mode switched.


def schema_problem(db: sqlite3.Connection, tables: Mapping[str, Sequence[str]]) -> str | None:
    """Why the open database is not a cache whose tables are ``tables`` (name -> column names), or None.
    It may hold only those tables (some of them, or none yet) and their automatic indexes: a view, a
    trigger, another table or index, or one of the tables with other columns makes it someone else's."""
    for kind, name, table in db.execute("SELECT type, name, tbl_name FROM sqlite_master"):
        if kind == "table" and name in tables:
            continue
        if kind == "index" and name.startswith("sqlite_autoindex_") and table in tables:
            continue
        return f"holds a {kind} {name!r} that no vlmbench cache has"
    for name, columns in tables.items():
        found = tuple(row[1] for row in db.execute(f"PRAGMA table_info({name})"))
        if found and found != tuple(columns):
            return f"has a table {name!r} with other columns ({', '.join(map(str, found))})"
    return None


_SQLITE_MAGIC = b"SQLite format 3\x00"


class NotSQLite(ValueError):
    """A file that should be an SQLite database and is not."""


def sqlite_mark(path: Path) -> int | None:
    """The application id in the header of the SQLite file at ``path`` (0 when none is set), read
    without opening it as a database; None when the file is absent or empty. A file that is not SQLite
    raises :class:`NotSQLite`; one that is not a regular file, :class:`vlmbench.files.NotRegularFile`."""
    try:
        with open_regular(path) as fh:
            header = fh.read(100)
    except FileNotFoundError:
        return None
    if not header:
        return None
    if not header.startswith(_SQLITE_MAGIC):
        raise NotSQLite(f"{path} is not an SQLite database")
    return int.from_bytes(header[68:72], "big") if len(header) >= 72 else 0
