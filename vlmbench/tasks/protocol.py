"""Evaluation protocols: a named, typed bundle of settings that changes how a task is asked and scored.

A protocol file (YAML, in a registered task folder, with a top-level ``protocol:`` key) states, in one
place, everything that must differ from a task's own settings to follow someone else's method: the
answer filters, the metrics with their options, per-family prompt templates, the candidate answers of
ranking models, generation settings, model arguments per model plugin, and — for commands that train or
quantise — the fine-tuning options and the 8-bit step. ``run --protocol NAME`` and ``score --protocol
NAME`` select one; without it a task is used as it is.

A protocol's :attr:`ProtocolSpec.hash` covers every setting; runs record the name and hash in
results.json and in their prediction-cache key, so a protocol's runs and default runs never share cached
answers or result folders.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench import schema
from vlmbench.errors import SpecError
from vlmbench.hashing import json_digest
from vlmbench.tasks.spec import (
    CandidateSpec,
    GenerationSpec,
    MetricSpec,
    check_template,
    read_yaml_file,
)
from vlmbench.tasks.task import Task


@dataclass
class ProtocolSpec:
    """The settings of one protocol; ``None`` (or empty) keeps the task's own."""

    protocol: str
    version: str
    description: str = ""
    #: answer filters applied to raw outputs before every metric (an empty list: none)
    filters: list[str] | None = None
    #: the metrics scored, with their options (replaces the task's list)
    metrics: list[MetricSpec] | None = None
    #: prompt templates by model family, over the task's (``default`` included)
    prompt: dict[str, str] = field(default_factory=dict)
    #: where ranking models' candidate answers come from
    candidates: CandidateSpec | None = None
    generation: GenerationSpec | None = None
    #: arguments per model plugin (``{PLUGIN: {name: value}}``), under the user's own
    model_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: options of fine-tuning runs made under this protocol (the fine-tuning plugin checks them)
    finetune: dict[str, Any] = field(default_factory=dict)
    #: the 8-bit step of a study: ``model`` (plugin) and its ``args`` (the plugin checks them)
    quantization: dict[str, Any] = field(default_factory=dict)
    source_path: Path | None = field(default=None, repr=False, init=False)

    def settings(self) -> dict[str, Any]:
        """Every setting, as recorded in results.json (no file paths)."""
        data = dataclasses.asdict(self)
        data.pop("source_path", None)
        return data

    @property
    def hash(self) -> str:
        return json_digest(self.settings())

    def identity(self) -> dict[str, str]:
        """What a run's cache key and results.json hold of the protocol."""
        return {"name": self.protocol, "version": self.version, "hash": self.hash}

    def metric_options(self) -> dict[str, dict[str, Any]]:
        """The options the protocol gives each metric it names."""
        return {m.name: dict(m.options) for m in self.metrics or []}

    def apply(self, task: Task) -> Task:
        """``task`` as this protocol asks and scores it (the samples already read are shared)."""
        spec = dataclasses.replace(
            task.spec,
            filters=list(self.filters) if self.filters is not None else task.spec.filters,
            metrics=[MetricSpec(m.name, dict(m.options)) for m in self.metrics]
            if self.metrics is not None
            else task.spec.metrics,
            prompt={**task.spec.prompt, **self.prompt},
            candidates=self.candidates if self.candidates is not None else task.spec.candidates,
            generation=self.generation if self.generation is not None else task.spec.generation,
        )
        spec.source_path = task.spec.source_path
        return task.with_spec(spec)


def protocol_record(protocol: ProtocolSpec | None) -> dict[str, Any] | None:
    """results.json's ``protocol``: which protocol asked and scored a run (name, version, hash of its
    settings, and the settings themselves), or None for the task's own settings."""
    if protocol is None:
        return None
    return {**protocol.identity(), "settings": protocol.settings()}


def load_protocol(path: str | Path) -> ProtocolSpec:
    """Read and check a protocol file."""
    path = Path(path)
    data = read_yaml_file(path)
    if not isinstance(data, dict) or "protocol" not in data:
        raise SpecError(f"{path}: a protocol file is a mapping with a 'protocol' name")
    data = dict(data)
    if isinstance(data.get("metrics"), list):
        data["metrics"] = [{"name": m} if isinstance(m, str) else m for m in data["metrics"]]
    spec: ProtocolSpec = schema.build(ProtocolSpec, data, where="", source=str(path))
    for family, template in spec.prompt.items():
        check_template(template, where=f"{path}: prompt.{family}")
    if spec.filters is not None:
        from vlmbench.tasks.filters import check_filters

        check_filters(spec.filters, where=f"{path}: filters")
    spec.source_path = path
    return spec
