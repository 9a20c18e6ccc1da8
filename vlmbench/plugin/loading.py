"""Finding and loading plugins.

``load_plugins()`` imports every module exposed under the ``vlmbench`` entry-point group (the
built-in plugins use that group too), registers it with a pluggy manager and calls its hooks with
callbacks that fill the registries. A plugin that fails to import or to register is recorded with
its distribution name and skipped; the others still load.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from vlmbench.errors import VlmbenchError
from vlmbench.plugin import hookspecs
from vlmbench.plugin.registry import (
    GeneratorEntry,
    MetricEntry,
    ModelEntry,
    ProtocolEntry,
    Registry,
    RunConfigEntry,
    TaskEntry,
)

if TYPE_CHECKING:
    from vlmbench.plugin.generator import Generator
    from vlmbench.plugin.metric import Metric, MetricContext
    from vlmbench.plugin.model import Model
    from vlmbench.tasks.spec import TaskSpec
    from vlmbench.tasks.task import Task

ENTRY_POINT_GROUP = "vlmbench"


@dataclass
class PluginInfo:
    """One plugin module as found through an entry point (or passed explicitly)."""

    name: str
    distribution: str
    version: str
    module: str
    error: str | None = None


def _check_model(entry: ModelEntry, cls: type) -> None:
    from vlmbench.plugin.model import Model

    for kind in entry.request_types:
        if getattr(cls, kind) is getattr(Model, kind):
            raise VlmbenchError(
                f"model {entry.name!r} is registered for {kind!r} requests, but {entry.target} has no {kind}() method"
            )


def _check_metric(entry: MetricEntry, cls: type) -> None:
    from vlmbench.plugin.metric import SampleMetric

    level = "sample" if issubclass(cls, SampleMetric) else "corpus"
    if entry.level != level:
        raise VlmbenchError(
            f"metric {entry.name!r} is registered as {entry.level}-level, but {entry.target} is a {level}-level metric"
        )


@dataclass
class Plugins:
    """Everything the installed plugins registered, and the one way to turn a name into an instance."""

    manager: pluggy.PluginManager
    models: Registry[ModelEntry] = field(
        default_factory=lambda: Registry("model", "vlmbench.plugin.model:Model", _check_model)
    )
    metrics: Registry[MetricEntry] = field(
        default_factory=lambda: Registry("metric", "vlmbench.plugin.metric:Metric", _check_metric)
    )
    generators: Registry[GeneratorEntry] = field(
        default_factory=lambda: Registry("generator", "vlmbench.plugin.generator:Generator")
    )
    tasks: Registry[TaskEntry] = field(default_factory=lambda: Registry("task"))
    run_configs: Registry[RunConfigEntry] = field(default_factory=lambda: Registry("run configuration"))
    protocols: Registry[ProtocolEntry] = field(default_factory=lambda: Registry("protocol"))
    plugins: list[PluginInfo] = field(default_factory=list)

    def create_model(
        self,
        name: str,
        args: str | Mapping[str, Any] | None = None,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        seed: int = 0,
    ) -> Model:
        """A model plugin with its ``args`` validated (``"k=v,..."`` or a mapping); no weights loaded."""
        cls = self.models.load(name)
        return cls.create(self.models.get(name), _given(args), device=device, dtype=dtype, seed=seed)

    def create_metric(
        self, name: str, options: str | Mapping[str, Any] | None = None, context: MetricContext | None = None
    ) -> Metric:
        """A metric plugin with its options validated; assets are loaded later, by ``setup()``."""
        from vlmbench.plugin.metric import MetricContext

        cls = self.metrics.load(name)
        context = context or MetricContext(difficulty_weights={})
        return cls.create(self.metrics.get(name), _given(options), context)

    def create_generator(self, name: str, args: str | Mapping[str, Any] | None = None) -> Generator:
        """A QA generator plugin with its options validated."""
        return self.generators.load(name).create(self.generators.get(name), _given(args))

    @property
    def problems(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def call_each(self, hook_name: str, **kwargs: Any) -> None:
        """Call one hook on every plugin separately, so one broken plugin cannot stop the others."""
        hook = getattr(self.manager.hook, hook_name)
        for impl in hook.get_hookimpls():
            try:
                impl.function(**kwargs)
            except Exception as exc:
                self._fail(impl.plugin_name, f"{hook_name} failed: {type(exc).__name__}: {exc}")

    def _fail(self, plugin_name: str, message: str) -> None:
        for info in self.plugins:
            if _manager_name(info) == plugin_name:
                info.error = message if info.error is None else f"{info.error}; {message}"
                return


def _given(args: str | Mapping[str, Any] | None) -> dict[str, Any]:
    from vlmbench.plugin.args import parse_kv

    return parse_kv(args) if isinstance(args, str) or args is None else dict(args)


_loaded: Plugins | None = None


def load_plugins(*, reload: bool = False, extra: Iterable[object] = ()) -> Plugins:
    """Load all installed plugins once and return their registrations.

    Calling it again returns the same object unless ``reload`` is true. ``extra`` registers plugin
    objects that are not installed (useful in tests and notebooks); it implies a reload.
    """
    global _loaded
    extra = list(extra)
    if _loaded is not None and not reload and not extra:
        return _loaded

    manager = pluggy.PluginManager("vlmbench")
    manager.add_hookspecs(hookspecs)
    plugins = Plugins(manager=manager)

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        info = PluginInfo(name=ep.name, distribution=dist, version=version, module=ep.value)
        plugins.plugins.append(info)
        try:
            module = ep.load()
            manager.register(module, name=_manager_name(info))
        except Exception as exc:
            info.error = f"import failed: {type(exc).__name__}: {exc}"
            info.error += "\n" + "".join(traceback.format_exception_only(type(exc), exc)).strip()
    for i, obj in enumerate(extra):
        module_name = getattr(obj, "__name__", type(obj).__name__)
        info = PluginInfo(name=f"extra-{i}", distribution="(not installed)", version="", module=module_name)
        plugins.plugins.append(info)
        manager.register(obj, name=_manager_name(info))

    for hook_name, registry, entry_type in (
        ("register_models", plugins.models, ModelEntry),
        ("register_metrics", plugins.metrics, MetricEntry),
        ("register_generators", plugins.generators, GeneratorEntry),
    ):
        _collect(plugins, hook_name, registry, entry_type)
    _collect_tasks(plugins)

    _loaded = plugins
    return plugins


def _manager_name(info: PluginInfo) -> str:
    return f"{info.distribution}:{info.name}"


def _plugin_label(plugins: Plugins, manager_name: str) -> str:
    for info in plugins.plugins:
        if _manager_name(info) == manager_name:
            return info.distribution
    return manager_name


def _collect(plugins: Plugins, hook_name: str, registry: Registry, entry_type: type) -> None:
    hook = getattr(plugins.manager.hook, hook_name)
    for impl in hook.get_hookimpls():
        label = _plugin_label(plugins, impl.plugin_name)

        def register(name: str, target: str, _label: str = label, **meta: Any) -> None:
            registry.add(entry_type(name=name, target=target, plugin=_label, **meta))

        _call_isolated(plugins, impl, hook_name, register)


def _collect_tasks(plugins: Plugins) -> None:
    for impl in plugins.manager.hook.register_tasks.get_hookimpls():
        label = _plugin_label(plugins, impl.plugin_name)

        def register(folder: str | Path, _label: str = label) -> None:
            for entry in scan_task_folder(Path(folder), plugin=_label):
                registry = {TaskEntry: plugins.tasks, ProtocolEntry: plugins.protocols}
                registry.get(type(entry), plugins.run_configs).add(entry)

        _call_isolated(plugins, impl, "register_tasks", register)


def _call_isolated(plugins: Plugins, impl: Any, hook_name: str, register: Callable[..., None]) -> None:
    try:
        impl.function(register=register)
    except Exception as exc:
        plugins._fail(impl.plugin_name, f"{hook_name} failed: {type(exc).__name__}: {exc}")


def scan_task_folder(folder: Path, plugin: str = "") -> list[TaskEntry | RunConfigEntry | ProtocolEntry]:
    """The task files (``task:``), run files (``models:``) and protocol files (``protocol:``) in
    ``folder``: name, description and version (not validated here)."""
    from vlmbench.tasks.spec import read_yaml_file, with_include

    entries: list[TaskEntry | RunConfigEntry | ProtocolEntry] = []
    for path in sorted(folder.glob("*.yaml")):
        data = read_yaml_file(path) or {}
        if isinstance(data, dict) and "protocol" in data and "task" not in data:
            summary = _first_sentence(str(data.get("description") or ""))
            entries.append(ProtocolEntry(str(data["protocol"]), path.resolve(), summary, plugin))
            continue
        if isinstance(data, dict) and "models" in data and "task" not in data:
            summary = _first_sentence(str(data.get("description") or ""))
            entries.append(RunConfigEntry(path.stem, path.resolve(), summary, plugin))
            continue
        if not isinstance(data, dict) or "task" not in data:
            continue
        if "include" in data:
            data = with_include(data, path, seen=(path.resolve(),))
        entries.append(
            TaskEntry(
                name=str(data["task"]),
                path=path.resolve(),
                summary=_first_sentence(str(data.get("description") or "")),
                version=str(data.get("version", "")),
                plugin=plugin,
            )
        )
    return entries


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def resolve_task(name_or_path: str | Path | TaskSpec, plugins: Plugins | None = None) -> Task:
    """A task by registered name, by path to a YAML file, or from a spec object."""
    # Imported here: task modules read data (PIL, numpy), and loading plugins must stay light.
    from vlmbench.tasks.spec import TaskSpec, load_spec
    from vlmbench.tasks.task import Task

    if isinstance(name_or_path, TaskSpec):
        return Task(name_or_path)
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return Task(load_spec(candidate))
    plugins = plugins or load_plugins()
    return Task(load_spec(plugins.tasks.get(str(name_or_path)).path))
