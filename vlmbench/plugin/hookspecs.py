"""The hooks a vlmbench plugin can implement.

A plugin is a module (or object) exposed under the ``vlmbench`` entry-point group. It implements any of
these hooks with ``@vlmbench.hookimpl`` and registers things by calling the callback it is given; it never
touches a global table. Registrations name their implementation lazily as ``"module:attribute"`` so that
listing plugins never imports heavy libraries.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("vlmbench")
hookimpl = pluggy.HookimplMarker("vlmbench")


@hookspec
def register_models(register: Callable[..., None]) -> None:
    """Register model plugins: ``register(name, "pkg.module:ModelClass", summary=..., ...)``.

    Keyword arguments are those of :class:`vlmbench.plugin.registry.ModelEntry`.
    """


@hookspec
def register_metrics(register: Callable[..., None]) -> None:
    """Register metric plugins: ``register(name, "pkg.module:MetricClass", summary=..., ...)``.

    Keyword arguments are those of :class:`vlmbench.plugin.registry.MetricEntry`.
    """


@hookspec
def register_tasks(register: Callable[..., None]) -> None:
    """Register folders of task YAML files: ``register(path_to_folder)``."""


@hookspec
def register_generators(register: Callable[..., None]) -> None:
    """Register question-answer generators for dataset curation:
    ``register(name, "pkg.module:GeneratorClass", summary=...)``."""


@hookspec
def register_commands(cli) -> None:
    """Add click commands or groups to the ``vlmbench`` CLI: ``cli.add_command(...)``. A dataset
    plugin adds its pipeline to the ``download`` and ``prepare`` groups of ``cli.commands["data"]``."""
