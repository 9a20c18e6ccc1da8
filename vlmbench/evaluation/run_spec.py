"""What ``vlmbench run`` is asked for: models (each with its own arguments), tasks and options.

From the command line, where each ``--model-args`` binds to the ``--model`` before it (the order
lm-evaluation-harness users type: ``--model NAME --model_args pretrained=A``), or from a YAML file
(``run --config``) that lists the same things, so that a whole study is one reviewed file::

    models:
      - mymodel                               # its default checkpoint
      - name: mymodel
        args: {pretrained: runs/ft/best}      # a second instance of the same plugin
        label: mymodel-finetuned              # optional: how it is shown in tables and figures
    tasks: [mytask]
    options: {batch_size: 8, limit: null, gen_kwargs: {max_new_tokens: 5}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench import schema
from vlmbench.errors import ArgError, SpecError, VlmbenchError
from vlmbench.plugin.args import parse_kv, split_scoped
from vlmbench.tasks.protocol import ProtocolSpec, load_protocol


@dataclass(frozen=True)
class ModelChoice:
    """One model instance to run: a plugin name, its arguments and an optional label. Arguments are the
    ``k=v,...`` text of a command line, or the mapping of a run file, kept as it is: a value or key
    holding ``,`` or ``=`` is never split again."""

    name: str
    args: str | Mapping[str, Any] = ""
    label: str | None = None


def bind_model_args(events: Sequence[tuple[str, str]]) -> list[ModelChoice]:
    """Model instances from ``("model", NAME)`` and ``("args", "k=v,...")`` events in command-line order.

    An ``args`` value binds to the ``model`` before it; one given before any model applies to every
    model; ``NAME:k=v`` addresses the model named NAME, which must then be given exactly once.
    """
    models: list[list[str]] = []  # [name, args...] per instance
    common: list[str] = []
    scoped: list[tuple[str, str]] = []
    for kind, value in events:
        if kind == "model":
            models.append([value])
            continue
        scope, rest = split_scoped(value)
        if scope is not None:
            scoped.append((scope, rest))
        elif models:
            models[-1].append(value)
        else:
            common.append(value)
    for scope, rest in scoped:
        matches = [m for m in models if m[0] == scope]
        if not matches:
            raise VlmbenchError(
                f"--model-args {scope}:{rest} names model {scope!r}, which is not among --model"
            )
        if len(matches) > 1:
            raise VlmbenchError(
                f"--model-args {scope}:{rest} is ambiguous: model {scope!r} is given {len(matches)} times; "
                f"put the arguments right after the --model they belong to"
            )
        matches[0].append(rest)
    choices = [ModelChoice(m[0], ",".join(a for a in [*common, *m[1:]] if a)) for m in models]
    for choice in choices:
        try:
            parse_kv(choice.args)  # a key given twice (-a k=3 -a k=4) fails here, before anything loads
        except ArgError as exc:
            raise ArgError(f"--model-args of model {choice.name!r}: {exc}") from None
    return choices


def split_tasks(values: Sequence[str]) -> list[str]:
    """``-t a -t b`` and ``--tasks a,b`` alike; order kept, repeats dropped."""
    tasks: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name and name not in tasks:
                tasks.append(name)
    return tasks


def parse_batch_size(value: str | int) -> int | str:
    """``--batch-size``: a positive number, or ``auto`` (the largest that fits on a GPU)."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise VlmbenchError(f"--batch-size must be a positive number or 'auto', got {value!r}")
    return int(text)


def parse_limit(value: str | float | int | None) -> int | float | None:
    """``--limit N`` (the first N samples) or ``--limit 0.1`` (that fraction of them, rounded up)."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VlmbenchError(
            f"--limit must be a number of samples or a fraction below 1, got {value!r}"
        ) from None
    if not math.isfinite(number) or number <= 0:
        raise VlmbenchError(f"--limit must be positive, got {value!r}")
    if number < 1:
        return number
    if not number.is_integer():
        raise VlmbenchError(f"--limit must be a whole number of samples or a fraction below 1, got {value!r}")
    return int(number)


def limited_count(total: int, limit: int | float | None) -> int:
    """How many of ``total`` samples a limit keeps."""
    if limit is None:
        return total
    if isinstance(limit, float):
        return min(total, max(1, math.ceil(total * limit)))
    return min(total, limit)


def parse_gen_kwargs(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """``max_new_tokens=5,num_beams=3`` -> generation settings that override the task's. A mapping (a
    run file's ``gen_kwargs``) is taken as it is: its keys and typed values are never split again."""
    if not text:
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    try:
        given = parse_kv(text)
    except ArgError as exc:
        raise ArgError(f"--gen-kwargs: {exc}") from None
    return {k: _number_or_text(v) for k, v in given.items()}


def _number_or_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


# -- run --config FILE.yaml ---------------------------------------------------------------------------


@dataclass
class FileModel:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    label: str | None = None


@dataclass
class RunOptions:
    """The options a run file may set; each is the command-line option of the same name."""

    batch_size: int | str | None = None
    limit: float | None = None
    device: str | None = None
    dtype: str | None = None
    seed: int | None = None
    num_workers: int | None = None
    output_dir: str | None = None
    cache: str | None = None
    no_cache: bool | None = None
    metrics: list[str] | None = None
    on_bad_sample: str | None = None
    gen_kwargs: dict[str, Any] | None = None
    fail_on_skip: bool | None = None


@dataclass
class RunFile:
    models: list[Any]
    tasks: list[str]
    description: str = ""
    options: RunOptions = field(default_factory=RunOptions)
    source: Path | None = field(default=None, init=False)

    def model_choices(self) -> list[ModelChoice]:
        out = []
        for i, item in enumerate(self.models):
            where = f"{self.source}: models[{i}]"
            entry = schema.build(
                FileModel, {"name": item} if isinstance(item, str) else item, where="", source=where
            )
            out.append(ModelChoice(entry.name, dict(entry.args), entry.label))
        return out


def find_run_file(value: str, plugins: Any) -> Path:
    """The run file ``value`` names: a YAML path, or a bundled run configuration's name
    (``vlmbench list configs``; an unknown name is an error with did-you-mean)."""
    path = Path(value).expanduser()
    if path.is_file() or value.endswith((".yaml", ".yml")):
        return path
    return plugins.run_configs.get(value).path


def load_run_file(path: str | Path) -> RunFile:
    """Read and validate a run configuration file; relative ``output_dir`` and ``cache`` paths and
    task files are resolved against the file's folder."""
    from vlmbench.tasks.spec import read_yaml_file

    path = Path(path)
    data = read_yaml_file(path, "run file")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a run file must be a mapping with models, tasks and options")
    run = schema.build(RunFile, data, where="", source=str(path))
    run.source = path
    if not run.models or not run.tasks:
        raise SpecError(f"{path}: a run file needs at least one model and one task")
    run.model_choices()  # validates every entry now
    base = path.resolve().parent
    for key in ("output_dir", "cache"):
        value = getattr(run.options, key)
        if value and not Path(value).expanduser().is_absolute():
            setattr(run.options, key, str(base / value))
    run.tasks = [
        str(base / t) if t.endswith((".yaml", ".yml")) and not Path(t).is_absolute() else t for t in run.tasks
    ]
    return run


def find_protocol(value: str | ProtocolSpec, plugins: Any) -> ProtocolSpec:
    """The protocol ``value`` names: a registered protocol's name (``vlmbench list protocols``; an
    unknown name is an error with did-you-mean) or a protocol YAML file; a spec is returned as is."""
    if isinstance(value, ProtocolSpec):
        return value
    path = Path(value).expanduser()
    if path.is_file() or value.endswith((".yaml", ".yml")):
        return load_protocol(path)
    return load_protocol(plugins.protocols.get(value).path)
