"""What the encoder metrics (BARTScore, BERTScore, SBERT) share: the models they load once per process,
and the identity their stored scores are kept under."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from vlmbench.api import SampleMetric, library_versions, model_identity, resolve_model

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


def encoder_identity(
    metric: SampleMetric, purpose: str, device: str, libraries: tuple[str, ...], **extra: Any
) -> dict[str, Any]:
    """The score-cache identity of a metric built on the encoder named by its ``model`` option: the
    metric's own identity, the encoder's files (found, not loaded), the device and the libraries that
    compute with it."""
    resolved = resolve_model(metric.options["model"], purpose=purpose)
    return {
        **metric.base_identity(),
        "model": model_identity(resolved.path),
        **extra,
        "device": device,
        "libraries": library_versions(*libraries),
    }
