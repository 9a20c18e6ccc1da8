"""Ctrl-C and SIGTERM during model work: stop after the batch in flight, or at once when there is none.

The model loop lets the batch it is answering finish and be stored before it stops; while it only
waits for the next batch (a DataLoader worker may be stuck on a slow or hung file) there is nothing to
finish, so it stops at once instead of waiting out the worker timeout. Training stops at once (its
checkpoints are what is kept), except while it writes a checkpoint or an adapter, which is finished
first. Stopping at once raises ``KeyboardInterrupt``, which the caller turns
into :class:`~vlmbench.errors.Interrupted` with exit status 128 + the signal (130 for Ctrl-C, 143 for
SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


class StopRequested:
    """Catches SIGINT and SIGTERM while active. First signal: note it (:attr:`requested`) and let the
    batch in flight finish — or stop at once when ``at_once`` or while :meth:`waiting`. Second: stop at
    once. Handlers are installed only in the main thread (signals can only be handled there)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, *, at_once: bool = False) -> None:
        self.at_once = at_once
        self.signal: int | None = None
        self._waiting = False
        self._deferring = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signal or signal.SIGINT)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """While inside, no batch is in flight: a signal stops at once."""
        self._waiting = True
        try:
            yield
        finally:
            self._waiting = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """While inside (a file being replaced), a first signal is only noted; with ``at_once`` the
        stop comes when the block ends, so that nothing is left half-written."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if self.at_once and self.signal is not None and not self._deferring:
            raise KeyboardInterrupt

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self._deferring:
            print(
                f"\nvlmbench: {what}: stopping once the files being written are complete",
                file=sys.stderr,
                flush=True,
            )
            return
        if self.at_once or self._waiting:
            why = "" if self.at_once else " (no batch in flight)"
            print(f"\nvlmbench: {what}: stopping now{why}", file=sys.stderr, flush=True)
            raise KeyboardInterrupt
        print(
            f"\nvlmbench: {what}: stopping after the current batch ({what} again to stop now)",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
