"""Task specifications: the YAML schema, loading and validation.

A task file says where the samples come from, how to ask each model, which answers to accept and how to
score them. ``load_spec(path)`` returns a validated :class:`TaskSpec` with ``${ENV}`` variables expanded
and relative paths resolved against the YAML file's folder. See docs/task_format.md.
"""

from __future__ import annotations

import math
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlmbench import hub, schema
from vlmbench.errors import SpecError
from vlmbench.files import read_named_text

PROMPT_FIELDS = ("question", "choices")
# A task name becomes a folder name: nothing that could leave the output folder or collide after escaping.
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_BOOTSTRAP_SAMPLES = 100_000
# Far above a single-word answer, far below what would exhaust memory in generate().
MAX_NEW_TOKENS = 8192
MAX_BEAMS = 64
DEFAULT_WEIGHTS = {0: 1.0, 1: 2.0, 2: 4.0, 3: 8.0, 5: 20.0}


@dataclass
class Columns:
    """Canonical field -> column name in the source file. The defaults read the seed study's CSV."""

    image: str = "path"
    question: str = "question"
    answer: str = "answer"
    image_id: str | None = "image_id"
    difficulty: str | None = "difficulty"
    id: str | None = None
    split: str | None = None


@dataclass
class DatasetSpec:
    path: str
    format: Literal["csv", "jsonl", "hf"] | None = None
    image_root: str | None = None
    columns: Columns = field(default_factory=Columns)
    # Several reference answers in one cell, e.g. "sofa|couch" with answer_separator "|".
    answer_separator: str | None = None
    # Shown when the dataset is missing, e.g. the command that prepares it.
    missing_hint: str | None = None

    def __post_init__(self) -> None:
        if self.format is None:
            suffix = Path(self.path).suffix.lower()
            self.format = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(suffix, "hf")


@dataclass
class CandidateSpec:
    """Where the candidate answers of ``rank`` requests come from."""

    source: Literal["train_answers", "task_answers", "file", "reference_and_list"] = "train_answers"
    path: str | None = None
    top_k: int | None = None
    by_question_type: bool = False
    #: source reference_and_list: the fixed answers each sample's first reference is added to
    answers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.source == "file" and not self.path:
            raise ValueError("candidates.source 'file' needs candidates.path")
        if self.source == "reference_and_list" and not self.answers:
            raise ValueError("candidates.source 'reference_and_list' needs candidates.answers")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("candidates.top_k must be at least 1")


@dataclass
class MetricSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationSpec:
    max_new_tokens: int = 10
    num_beams: int = 1
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None

    def __post_init__(self) -> None:
        # Every setting is checked here, before a model loads: a value generate() refuses would fail
        # every request after the model work, and a NaN could not even be written to results.json.
        if self.max_new_tokens < 1 or self.num_beams < 1:
            raise ValueError("max_new_tokens and num_beams must be at least 1")
        if self.max_new_tokens > MAX_NEW_TOKENS or self.num_beams > MAX_BEAMS:
            raise ValueError(
                f"max_new_tokens must be at most {MAX_NEW_TOKENS} and num_beams at most {MAX_BEAMS}"
            )
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.temperature is not None and (
            self.temperature < 0 or (self.do_sample and self.temperature == 0)
        ):
            raise ValueError(
                f"temperature must be positive when do_sample is true (0 or more otherwise), "
                f"got {self.temperature}"
            )
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be above 0 and at most 1, got {self.top_p}")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be positive, got {self.repetition_penalty}")

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``generate()``, without the unset ones."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class TaskSpec:
    task: str
    version: str
    dataset: DatasetSpec
    description: str = ""
    split: str | None = None
    train_split: str | None = None
    request_type: Literal["generate", "rank"] = "generate"
    prompt: dict[str, str] = field(default_factory=lambda: {"default": "{question}"})
    candidates: CandidateSpec | None = None
    filters: list[str] = field(
        default_factory=lambda: ["strip", "remove_answer_prefix", "first_word", "strip_punctuation"]
    )
    metrics: list[MetricSpec] = field(
        default_factory=lambda: [MetricSpec("exact_match"), MetricSpec("average_mark")]
    )
    difficulty_weights: dict[int, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    bootstrap_samples: int = 1000
    # Where the spec was read from: set by load_spec, never a key of the file.
    source_path: Path | None = field(default=None, repr=False, init=False)

    def prompt_template(self, family: str, model_default: str | None = None) -> str:
        """The template for a model family: the task's own for that family, else the model's, else the task default."""
        if family in self.prompt:
            return self.prompt[family]
        if model_default is not None:
            return model_default
        return self.prompt["default"]


def load_spec(path: str | Path) -> TaskSpec:
    """Read and validate a task YAML file."""
    path = Path(path)
    source = str(path)
    data = read_yaml_file(path)
    if isinstance(data, dict) and "include" in data:
        data = with_include(data, path, seen=(path.resolve(),))
    return spec_from_dict(data, source=source, base_dir=path.resolve().parent)


def read_yaml_file(path: Path, what: str = "task file") -> Any:
    """A YAML configuration file's data (``what`` names it in messages: task file, run file, ...); any
    problem reading it is a :class:`SpecError` naming the file. Only a regular file is read: a FIFO
    or device is refused without waiting on it."""
    text = read_named_text(path, what, SpecError)
    return schema.load_yaml(text, source=str(path))


def with_include(data: dict, path: Path, seen: tuple[Path, ...]) -> dict:
    """``include: other.yaml``: start from that file (relative to this one) and override its keys;
    mappings merge key by key, anything else is replaced. Relative paths in the included file are
    resolved against the including file's folder, so keep both in one folder."""
    data = dict(data)
    target = (path.parent / str(data.pop("include"))).resolve()
    if target in seen:
        raise SpecError(f"{path}: include: {target} includes itself")
    try:
        base = read_yaml_file(target)
    except SpecError as exc:
        raise SpecError(f"{path}: include: cannot read it: {exc}") from None
    if not isinstance(base, dict):
        raise SpecError(f"{path}: include: {target} is not a mapping")
    if "include" in base:
        base = with_include(base, target, (*seen, target))
    return _merge(base, data)


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def spec_from_dict(data: Any, *, source: str = "<task>", base_dir: Path | None = None) -> TaskSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a task file must be a mapping of keys to values")
    data = _expand_env(data, source, "")
    if isinstance(data.get("metrics"), list):
        data["metrics"] = [{"name": m} if isinstance(m, str) else m for m in data["metrics"]]
    spec: TaskSpec = schema.build(TaskSpec, data, where="", source=source)
    _check(spec, source)
    base = base_dir or Path.cwd()
    spec.dataset.path = _resolve(spec.dataset.path, base, keep_if_missing=spec.dataset.format == "hf")
    if spec.dataset.image_root is not None:
        spec.dataset.image_root = _resolve(spec.dataset.image_root, base)
    if spec.candidates and spec.candidates.path:
        spec.candidates.path = _resolve(spec.candidates.path, base)
        if not Path(spec.candidates.path).is_file():
            raise SpecError(f"{source}: candidates.path: {spec.candidates.path} is not a file")
    spec.source_path = Path(source) if base_dir else None
    return spec


def _check(spec: TaskSpec, source: str) -> None:
    if not TASK_NAME.fullmatch(spec.task):
        raise SpecError(
            f"{source}: task: {spec.task!r} is not a valid task name (letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 100 characters: it names the run folder)"
        )
    if "default" not in spec.prompt:
        raise SpecError(f"{source}: prompt: a 'default' template is required")
    for family, template in spec.prompt.items():
        check_template(template, where=f"{source}: prompt.{family}")
    if spec.request_type == "rank" and spec.candidates is None:
        spec.candidates = CandidateSpec()
    if spec.candidates and spec.candidates.source == "train_answers" and not spec.train_split:
        # Without a train split the answers of the evaluated samples are the only vocabulary there is.
        spec.candidates.source = "task_answers"
    if not 0 <= spec.bootstrap_samples <= MAX_BOOTSTRAP_SAMPLES:
        raise SpecError(
            f"{source}: bootstrap_samples must be between 0 (no intervals) and {MAX_BOOTSTRAP_SAMPLES}"
        )
    for level, weight in spec.difficulty_weights.items():
        if weight < 0:
            raise SpecError(f"{source}: difficulty_weights.{level}: weights must not be negative")
    from vlmbench.tasks.filters import check_filters

    check_filters(spec.filters, where=f"{source}: filters")


def check_template(template: str, *, where: str) -> None:
    """Templates name fields plainly (``{question}``): format specs and conversions could pad a prompt
    to millions of characters (``{question:>5000000}``) and are never needed."""
    try:
        parts = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise SpecError(f"{where}: invalid template {template!r}: {exc}") from None
    for name, spec, conversion in parts:
        if name not in PROMPT_FIELDS:
            raise SpecError(
                f"{where}: unknown field {{{name}}} in template {template!r}; "
                f"allowed fields: {', '.join('{' + f + '}' for f in PROMPT_FIELDS)}"
            )
        if spec or conversion:
            raise SpecError(
                f"{where}: field {{{name}}} in template {template!r} has a format specification or "
                f"conversion; write {{{name}}} alone"
            )


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any, source: str, where: str) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, source, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, source, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):

        def sub(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise SpecError(
                f"{source}: {where}: environment variable {name} is not set (write ${{{name}:-default}} for a default)"
            )

        return _ENV.sub(sub, value)
    return value


def is_hub_id(value: str) -> bool:
    """``"name"`` or ``"owner/name"`` (a Hugging Face Hub dataset id), as opposed to a local path."""
    return hub.is_hub_id(value, owner=False, not_suffixes=(".csv", ".jsonl", ".json"))


def _resolve(value: str, base: Path, keep_if_missing: bool = False) -> str:
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    candidate = (base / p).resolve()
    if keep_if_missing and not candidate.exists() and is_hub_id(value):
        return value  # a Hugging Face Hub dataset id, not a local path
    return str(candidate)
