"""Objects that metrics load once per process: the models behind BARTScore, BERTScore and SBERT."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class ProcessMemo(Generic[T]):
    """Values built once per process by key and shared by every metric instance: a model takes seconds
    to load and much memory, and several runs (or threads of one) score with the same one. Building
    happens under the lock, so concurrent callers build each value once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[Hashable, T] = {}

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The value for ``key``, built by ``build()`` the first time it is asked for."""
        with self._lock:
            if key not in self._values:
                self._values[key] = build()
            return self._values[key]
