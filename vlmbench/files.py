"""Opening the files a user names: regular files only, opened without waiting for a writer.

A FIFO, socket or device given where a file is expected (a run file, a task file or its ``include:``,
a dataset or candidate file, a cache, an external predictions file, an adapter's config) would block
its reader forever, or never end. Every such file is opened here: with ``O_NONBLOCK``, so that opening
a FIFO does not wait for a writer, then checked on the opened descriptor (``fstat``), so that what is
read is the file that was checked even if the path is replaced in between.

Files that another library opens by path itself (SQLite databases, PEFT's adapter config) can only
be checked by path first (:func:`check_regular`); a path replaced after that check is the one race
left, and only someone who can already write there can win it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vlmbench.errors import VlmbenchError

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class NotRegularFile(VlmbenchError):
    """A path that names a FIFO, socket or device where a regular file is expected."""


def _refuse(path: str | Path, mode: int) -> None:
    """Raise for anything but a regular file: a folder as open() would (IsADirectoryError), anything
    else as :class:`NotRegularFile`."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise NotRegularFile(f"{path} is {kind}, not a regular file")


@contextlib.contextmanager
def open_regular(path: str | Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading in binary mode, if it is a regular file (symlinks to one included).

    A missing or unreadable file raises the usual :class:`OSError` (``FileNotFoundError``,
    ``PermissionError``); a folder ``IsADirectoryError``; a FIFO, socket or device
    :class:`NotRegularFile`, without blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # what opening a Unix socket says
            _refuse(path, os.stat(path).st_mode)
        raise
    try:
        _refuse(path, os.fstat(fd).st_mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: reads behave as usual
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def read_regular(path: str | Path) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular` for what is refused)."""
    with open_regular(path) as fh:
        return fh.read()


def read_regular_text(path: str | Path) -> str:
    """The UTF-8 text of the regular file ``path`` (``UnicodeDecodeError`` when it is not UTF-8)."""
    return read_regular(path).decode("utf-8")


def read_named_text(path: Path, what: str, error: type[VlmbenchError]) -> str:
    """The UTF-8 text of ``path``, a ``what`` the user named (task file, run file, candidate file, ...);
    any problem reading it (missing, a folder, a FIFO or device, not UTF-8, unreadable) is ``error``
    with one message naming the file, so that each such file is refused in the same words."""
    try:
        return read_regular_text(path)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder, not a {what}") from None
    except NotRegularFile as exc:
        raise error(f"{what} {exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: the {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def check_regular(path: str | Path) -> bool:
    """Whether ``path`` exists, for a file another library will open by path; a FIFO, socket or device
    there raises :class:`NotRegularFile` and a folder ``IsADirectoryError``."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    _refuse(path, mode)
    return True
