"""Progress of scoring on stderr: one labelled line per metric, only when it takes more than a moment.

A metric that loads an encoder or WordNet is silent for seconds otherwise (the encoder metrics turn the
libraries' own weight-loading bars off, ``vlmbench.console.library_bars_off``, so those do not stand in
for it). ``scoring: sbert 112/225 pairs`` names the
metric and counts the distinct (answer, reference) pairs it has scored; pairs read from the score cache
count as done from the start. Nothing at all is shown for a metric done within :data:`DELAY` seconds,
nor when progress is off (``-q``, or ``progress=False`` in the Python API).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

#: Seconds a metric may take before its line appears.
DELAY = 1.0


class ScoringProgress:
    """The progress line of one metric (a no-op when ``enabled`` is false)."""

    def __init__(self, name: str, total: int, done: int, enabled: bool):
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                initial=done,
                desc=f"scoring: {name}",
                unit="pair",
                delay=DELAY,
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def __enter__(self) -> ScoringProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    @contextlib.contextmanager
    def setting_up(self) -> Iterator[None]:
        """While the metric loads its assets: the line says so once :data:`DELAY` has passed."""
        if self._bar is None:
            yield
            return
        self._bar.set_postfix_str("setting up", refresh=False)
        timer = threading.Timer(DELAY, self._bar.refresh)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            self._bar.set_postfix_str("", refresh=False)

    def advance(self, pairs: int) -> None:
        if self._bar is not None:
            self._bar.update(pairs)
