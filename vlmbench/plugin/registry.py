"""Lazy registries of models, metrics and tasks.

An entry describes a plugin (enough for ``vlmbench list``) and names its implementation as
``"module:attribute"``; the module is imported only when the entry is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from vlmbench.errors import UnknownNameError, VlmbenchError

REQUEST_TYPES = ("generate", "rank")


@dataclass(frozen=True)
class ModelEntry:
    """A registered model plugin.

    ``family`` selects the task's prompt template (``prompt: {family: "..."}``); it defaults to the name.
    ``parameters`` is a human-readable size of the default checkpoint (e.g. ``"385M"``) for listings;
    runs record the exact count of the weights actually loaded. ``aliases`` are other names the model
    answers to (another tool's spelling); the entry, its runs and its listings keep ``name``.
    """

    name: str
    target: str
    summary: str = ""
    default_checkpoint: str | None = None
    request_types: tuple[str, ...] = ("generate",)
    parameters: str | None = None
    family: str | None = None
    aliases: tuple[str, ...] = ()
    plugin: str = ""

    def __post_init__(self) -> None:
        _check_target(self.target, self.name)
        object.__setattr__(self, "aliases", tuple(self.aliases))
        bad = [t for t in self.request_types if t not in REQUEST_TYPES]
        if bad or not self.request_types:
            raise VlmbenchError(
                f"model {self.name!r}: request_types must be a non-empty subset of {REQUEST_TYPES}"
            )
        if self.family is None:
            object.__setattr__(self, "family", self.name)


@dataclass(frozen=True)
class MetricEntry:
    """A registered metric plugin.

    ``level`` is ``"sample"`` (a score per sample, averaged; computed once per unique pair) or
    ``"corpus"`` (a statistic over the whole set). ``outputs`` lists the score columns it produces
    (default: one column named like the metric). ``assets`` names what it needs (for listings).
    """

    name: str
    target: str
    summary: str = ""
    higher_is_better: bool = True
    level: str = "sample"
    outputs: tuple[str, ...] = ()
    assets: tuple[str, ...] = ()
    plugin: str = ""

    def __post_init__(self) -> None:
        _check_target(self.target, self.name)
        if self.level not in ("sample", "corpus"):
            raise VlmbenchError(
                f"metric {self.name!r}: level must be 'sample' or 'corpus', not {self.level!r}"
            )
        if not self.outputs:
            object.__setattr__(self, "outputs", (self.name,))


@dataclass(frozen=True)
class GeneratorEntry:
    """A registered QA generator (dataset curation: listing + image -> single-word QA pairs)."""

    name: str
    target: str
    summary: str = ""
    needs_network: bool = False
    plugin: str = ""

    def __post_init__(self) -> None:
        _check_target(self.target, self.name)


@dataclass(frozen=True)
class _FileEntry:
    """A YAML file found in a registered task folder: it is its own implementation, so an entry
    names the file instead of a ``"module:attribute"`` target."""

    name: str
    path: Path
    summary: str = ""
    plugin: str = ""


@dataclass(frozen=True)
class TaskEntry(_FileEntry):
    """A task YAML file found in a registered task folder."""

    version: str = ""


@dataclass(frozen=True)
class RunConfigEntry(_FileEntry):
    """A run file (models, tasks, options) found in a registered task folder: ``run --config NAME``."""


@dataclass(frozen=True)
class ProtocolEntry(_FileEntry):
    """An evaluation protocol file found in a registered task folder: ``run --protocol NAME``."""


E = TypeVar("E", ModelEntry, MetricEntry, GeneratorEntry, TaskEntry, RunConfigEntry, ProtocolEntry)


@dataclass
class Registry(Generic[E]):
    """Entries by name. ``base`` (``"module:Class"``) is the class every implementation must subclass;
    ``check(entry, cls)`` verifies what the entry declares against the class, once, when the class is
    first loaded — so the listing and the behaviour can never disagree."""

    kind: str
    base: str | None = None
    check: Callable[[Any, type], None] | None = None
    _entries: dict[str, E] = field(default_factory=dict)
    _classes: dict[str, type] = field(default_factory=dict, repr=False)
    _aliases: dict[str, str] = field(default_factory=dict, repr=False)  # alias -> the entry's name

    def add(self, entry: E) -> None:
        old = self._entries.get(entry.name)
        if old is not None and old != entry:
            raise VlmbenchError(
                f"{self.kind} {entry.name!r} is registered twice: by {old.plugin or '?'} and by {entry.plugin or '?'}"
            )
        aliases = getattr(entry, "aliases", ())
        for name in (entry.name, *aliases):
            owner = self._aliases.get(name) or (name if name in self._entries and name in aliases else None)
            if owner is not None and owner != entry.name:
                raise VlmbenchError(
                    f"{self.kind} name {name!r} is taken by {owner!r}; {entry.name!r} cannot use it as well"
                )
        self._entries[entry.name] = entry
        self._aliases.update(dict.fromkeys(aliases, entry.name))

    def get(self, name: str) -> E:
        """The entry of ``name`` or of one of its aliases."""
        try:
            return self._entries[self._aliases.get(name, name)]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def load(self, name: str) -> type:
        """The implementation class of ``name`` (or an alias), imported and checked (once per process)."""
        entry = self.get(name)
        name = entry.name
        if name not in self._classes:
            cls = load_target(entry.target)
            base = load_target(self.base) if self.base else object
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise VlmbenchError(
                    f"{self.kind} {name!r}: {entry.target} is not a subclass of {base.__module__}.{base.__qualname__}"
                )
            if self.check is not None:
                self.check(entry, cls)
            self._classes[name] = cls
        return self._classes[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)


def _check_target(target: str, name: str) -> None:
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise VlmbenchError(f"{name!r}: implementation must be given as 'module:attribute', not {target!r}")


def load_target(target: str) -> Any:
    """Import ``"package.module:Attr.sub"`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise VlmbenchError(f"cannot import {module_name!r} (for {target!r}): {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise VlmbenchError(f"{module_name!r} has no attribute {attr!r} (for {target!r})") from None
    return obj
