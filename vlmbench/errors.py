"""Exceptions vlmbench raises on purpose; each message tells the user what to do next."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def _rebuild(cls: type, args: tuple, kwargs: dict, state: dict) -> BaseException:
    error = cls(*args, **kwargs)
    error.__dict__.update(state)
    return error


#: Exit status of a command that evaluated nothing: every model was skipped (or, with
#: ``--fail-on-skip``, something was).
EXIT_NOTHING_EVALUATED = 4


class PicklableError(Exception):
    """An exception that survives a pickle round trip whatever its ``__init__`` takes.

    Exceptions cross process boundaries (DataLoader workers, data-parallel ranks). Python pickles an
    exception as ``cls(*self.args)``, which breaks as soon as ``__init__`` takes other arguments than
    the message it passes on. This base remembers the constructor's arguments instead.
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        error = super().__new__(cls, *args)
        error._init_args = (args, kwargs)
        return error

    def __reduce__(self):
        args, kwargs = self.__dict__.get("_init_args", (self.args, {}))
        state = {k: v for k, v in self.__dict__.items() if k != "_init_args"}
        return (_rebuild, (type(self), args, kwargs, state))


class VlmbenchError(PicklableError):
    """Base class: an error the CLI reports as one clear message, without a traceback."""


class UnknownNameError(VlmbenchError, KeyError):
    """A model, metric, task or option name that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name = kind, name
        self.known = sorted(known)
        super().__init__(unknown_message(kind, name, self.known))

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def did_you_mean(name: str, known: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)


def unknown_message(kind: str, name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = did_you_mean(name, known)
    msg = f"unknown {kind} {name!r}"
    if close:
        msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
    if known:
        msg += f" (known: {', '.join(known)})"
    return msg


class SpecError(VlmbenchError):
    """A task file (or another YAML/JSON config) that does not match its schema."""


class ArgError(VlmbenchError):
    """Invalid ``--model-args`` or metric options."""


class AssetMissingError(VlmbenchError):
    """Weights, an encoder, WordNet or a dataset that is not available locally (and cannot be fetched)."""

    def __init__(self, asset: str, how: str):
        self.asset, self.how = asset, how
        super().__init__(f"{asset} is not available: {how}")


class DataError(VlmbenchError):
    """A dataset file that cannot be read (the message names the file and the line)."""


class Interrupted(VlmbenchError):
    """The run was stopped by Ctrl-C or SIGTERM after storing every finished batch.

    ``exit_code`` follows the shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for
    SIGTERM)."""

    def __init__(self, message: str, exit_code: int = 130):
        self.exit_code = exit_code
        super().__init__(message)


class SampleError(VlmbenchError):
    """One request that cannot be answered (an unreadable image, a prompt longer than the model takes).

    The run skips the sample and counts it under ``reason``; it never stops the other samples."""

    def __init__(self, reason: str, message: str):
        self.reason, self.message = reason, message
        super().__init__(f"{reason}: {message}")


class ModelFailed(VlmbenchError):
    """A model that failed on every request it was given: it is reported with this reason and the
    run goes on with the next model."""


class UnsupportedTask(VlmbenchError):
    """A model that cannot answer the task's kind of request at all: that model is skipped with this
    reason, the other models of the run still run."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (loaders' messages run over many lines)."""
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".")[:300] if text else type(exc).__name__
