"""Exceptions vlmbench raises on purpose; each message tells the user what to do next."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VlmbenchError(Exception):
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
    """The run was stopped by Ctrl-C after storing every finished batch."""
