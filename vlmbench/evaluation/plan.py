"""Planning a run: everything that can be checked without a model, before any model work.

:func:`plan_run` resolves the task and the model (arguments validated), the metrics (options
validated), the device, the generation settings, the requests and the run's identity (cache key and
folder), checks that the output folder can be written and that no larger or different result would be
replaced. A mistake costs seconds, not an evaluation.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench import schema
from vlmbench.artifacts import run_files
from vlmbench.artifacts.run_files import safe_name
from vlmbench.cache import cache_dir
from vlmbench.devices import check_dtype, resolve_device
from vlmbench.errors import ArgError, DataError, UnsupportedTask, VlmbenchError
from vlmbench.evaluation.loader import DEFAULT_WORKER_TIMEOUT
from vlmbench.evaluation.run_spec import find_protocol, limited_count, parse_gen_kwargs, parse_limit
from vlmbench.evaluation.store import RunKey
from vlmbench.hashing import json_digest
from vlmbench.plugin.loading import Plugins, load_plugins, resolve_task
from vlmbench.plugin.metric import Metric, MetricContext
from vlmbench.plugin.model import Model
from vlmbench.plugin.request import Request
from vlmbench.scoring.score_cache import default_score_cache_path
from vlmbench.scoring.scorer import build_metrics
from vlmbench.scoring.stats import MAX_SEED
from vlmbench.tasks.dataset import HF_IMAGE_PREFIX, Sample
from vlmbench.tasks.protocol import ProtocolSpec
from vlmbench.tasks.spec import GenerationSpec, MetricSpec
from vlmbench.tasks.task import Task

# The first batch size tried by --batch-size auto on a GPU; out-of-memory errors halve it.
AUTO_BATCH_START = 128
# Requests per model call when neither the run nor the model chooses.
DEFAULT_BATCH_SIZE = 8


def default_cache_path() -> Path:
    return cache_dir() / "predictions.sqlite"


@dataclass
class RunConfig:
    """Options of one run (the CLI's flags). ``cache=None`` means the default cache file,
    ``cache=False`` keeps predictions in memory only."""

    # None: the model's preferred size, else 8; "auto": the largest that fits on a GPU (found by halving on OOM)
    batch_size: int | str | None = None
    limit: int | float | None = None  # a number of samples, or a fraction of them below 1
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    num_workers: int | None = None  # None: one per core the model leaves free, at most 4 (see loader)
    output_dir: Path = Path("runs")
    cache: Path | bool | None = None
    metrics: list[str] | None = None
    on_bad_sample: str = "skip"
    progress: bool = True
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT
    gen_kwargs: dict[str, Any] = field(default_factory=dict)  # overrides the task's generation settings
    label: str | None = None  # how the model is shown in tables and figures (default: its own label)
    replace: bool = False  # allow replacing a stored result of other data or more samples
    protocol: str | ProtocolSpec | None = None  # a protocol's name or file (how the task is asked and scored)
    metric_args: dict[str, dict[str, Any]] = field(default_factory=dict)  # options per metric name

    def __post_init__(self) -> None:
        if self.batch_size not in ("auto", None) and (
            not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise VlmbenchError(f"batch size must be a positive number or 'auto', got {self.batch_size!r}")
        self.limit = parse_limit(self.limit)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise VlmbenchError(f"--seed must be between 0 and {MAX_SEED}, got {self.seed!r}")
        try:
            check_dtype(self.dtype)
        except ArgError as exc:
            raise ArgError(f"--dtype: {exc}") from None
        self.gen_kwargs = parse_gen_kwargs(self.gen_kwargs)
        # The settings alone, on the defaults, are checked here; with the task's own in plan_run.
        _generation(GenerationSpec(), self.gen_kwargs)
        if self.num_workers is not None and self.num_workers < 0:
            raise VlmbenchError("--num-workers must be 0 or more")
        if self.on_bad_sample not in ("skip", "stop"):
            raise VlmbenchError("on_bad_sample must be 'skip' or 'stop'")
        if self.worker_timeout <= 0:
            raise VlmbenchError("worker_timeout must be positive")
        self.output_dir = Path(self.output_dir)

    @property
    def cache_path(self) -> Path | None:
        if self.cache is False:
            return None
        if self.cache in (None, True):
            return default_cache_path()
        return Path(self.cache)

    @property
    def score_cache_path(self) -> Path | None:
        """The metric score cache: on and off with the prediction cache (``--no-cache`` turns both off),
        always in vlmbench's cache folder (its rows are keyed by content, so every run may share it)."""
        return None if self.cache is False else default_score_cache_path()


@dataclass
class RunPlan:
    """Everything decided before a model is loaded."""

    cfg: RunConfig
    task: Task
    model: Model
    metrics: list[Metric]
    samples: list[Sample]
    requests: list[Request]
    key: RunKey
    run_dir: Path
    device: str
    generation: GenerationSpec
    batch_size: int
    label: str
    notes: list[str] = field(default_factory=list)  # how this run differs from a plain one, for tables
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    protocol: ProtocolSpec | None = None


def plan_run(
    model: str,
    task: str | Path | Task,
    cfg: RunConfig,
    *,
    model_args: str | dict[str, Any] | None = None,
    plugins: Plugins | None = None,
) -> RunPlan:
    plugins = plugins or load_plugins()
    task = task if isinstance(task, Task) else resolve_task(task, plugins)
    protocol = find_protocol(cfg.protocol, plugins) if cfg.protocol is not None else None
    if protocol is not None:
        task = protocol.apply(task)
        model_args = protocol_model_args(protocol, model, model_args)
    entry = plugins.models.get(model)
    cls = plugins.models.load(model)
    kind, notes = _request_type(entry, task)
    _seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    instance = plugins.create_model(model, model_args, device=device, dtype=cfg.dtype, seed=cfg.seed)
    instance.check_request_type(kind)
    metric_specs = metric_specs_for(task, cfg.metrics, cfg.metric_args)
    context = MetricContext(difficulty_weights=task.spec.difficulty_weights, seed=cfg.seed, device=device)
    metrics = build_metrics(metric_specs, plugins, context)  # option errors surface before any model work
    generation = _generation(task.spec.generation, cfg.gen_kwargs)

    skipped: Counter[str] = Counter()
    examples: list[str] = []
    for problem in task.row_problems:
        if cfg.on_bad_sample == "stop":
            raise DataError(problem.message)
        skipped[problem.reason] += 1
        examples.append(problem.message)
    samples = task.samples[: limited_count(len(task.samples), cfg.limit)]
    if not samples:
        raise DataError(f"task {task.name!r} has no samples to evaluate")
    _check_images_reachable(task, samples)
    template = task.spec.prompt_template(instance.prompt_family(), cls.default_prompt)
    requests = [_request(task, template, s, kind) for s in samples]
    settings: dict[str, Any] = {"kind": kind, "prompt_template": template}
    if kind == "generate":
        settings["generation"] = generation.as_kwargs()
    if protocol is not None:  # a protocol's runs never share answers or folders with default runs
        settings["protocol"] = protocol.identity()
    key = RunKey(instance.fingerprint(), task.hash, json_digest(settings))
    folder = _run_folder(instance, key, task, cfg, generation)
    if protocol is not None:
        folder += f"-{safe_name(protocol.protocol)}"
    run_dir = cfg.output_dir / safe_name(task.name) / folder
    run_files.ensure_output_dir(cfg.output_dir)
    run_files.check_replaceable(
        run_dir, data=task.hash, fingerprint=key.model_fp, n_samples=len(samples), replace=cfg.replace
    )
    notes += instance.notes()
    if cfg.limit is not None:
        notes.append(f"limited to {len(samples)} of {len(task.samples)} samples (--limit {cfg.limit})")
    if cfg.gen_kwargs:
        notes.append("generation: " + ", ".join(f"{k}={v}" for k, v in sorted(cfg.gen_kwargs.items())))
    return RunPlan(
        cfg, task, instance, metrics, samples, requests, key, run_dir, device, generation,
        _batch_size(cfg.batch_size, device, instance), cfg.label or instance.label(), notes, skipped, examples,
        protocol,
    )  # fmt: skip


def _check_images_reachable(task: Task, samples: list[Sample]) -> None:
    """Every model reads each request's image: image paths without a ``dataset.image_root`` to read them
    from would load the model only to skip every sample."""
    if task.spec.dataset.image_root is not None:
        return
    named = next((s for s in samples if not s.image.startswith(HF_IMAGE_PREFIX)), None)
    if named is not None:
        raise DataError(
            f"task {task.name!r}: its samples name image files ({named.where}: {named.image!r}), but the task "
            "file gives no dataset.image_root to read them from; set it (relative to the task file)"
        )


def metric_specs_for(
    task: Task, names: list[str] | None, options: dict[str, dict[str, Any]]
) -> list[MetricSpec]:
    """The metrics scored: ``names`` (else the task's), each with the task's options for it and then
    ``options`` (``--metric-args``), which must name metrics that are scored."""
    own = {m.name: m.options for m in task.spec.metrics}
    specs = [MetricSpec(n, dict(own.get(n, {}))) for n in names] if names else list(task.spec.metrics)
    scored = [s.name for s in specs]
    unused = [m for m in options if m not in scored]
    if unused:
        raise VlmbenchError(
            f"--metric-args names {', '.join(unused)}, which is not among the metrics scored "
            f"({', '.join(scored)})"
        )
    return [MetricSpec(s.name, {**s.options, **options.get(s.name, {})}) for s in specs]


def protocol_model_args(
    protocol: ProtocolSpec, model: str, given: str | dict[str, Any] | None
) -> dict[str, Any]:
    """A model's arguments under ``protocol``: the protocol's for that plugin, then the user's."""
    from vlmbench.plugin.args import parse_kv

    user = parse_kv(given) if isinstance(given, str) or given is None else dict(given)
    return {**protocol.model_args.get(model, {}), **user}


def _request_type(entry, task: Task) -> tuple[str, list[str]]:
    """What this model is asked: the task's request type, or — for a model that can only rank, on a
    ``generate`` task — ranking of the task's candidate answers (how contrastive image-text models answer)."""
    kind = task.spec.request_type
    if kind in entry.request_types:
        return kind, []
    if kind == "generate" and "rank" in entry.request_types:
        cand = task.candidate_spec
        source = cand.source.replace("_", " ")
        if cand.source == "reference_and_list":
            source = f"{', '.join(cand.answers)} and each sample's reference"
        return "rank", [f"answers by ranking candidates ({source}), as it cannot generate"]
    raise UnsupportedTask(
        f"model {entry.name!r} cannot answer {kind!r} requests (it supports {', '.join(entry.request_types)}); "
        f"task {task.name!r} asks for {kind!r}"
    )


def _generation(base: GenerationSpec, overrides: dict[str, Any]) -> GenerationSpec:
    """The task's generation settings with ``--gen-kwargs`` over them, checked as one."""
    if not overrides:
        return base
    merged = {**dataclasses.asdict(base), **overrides}
    return schema.build(GenerationSpec, merged, where="", source="--gen-kwargs")


def _batch_size(requested: int | str | None, device: str, model: Model) -> int:
    # A model that prefers a size (a server client: its concurrency) gets it unless the run sets one.
    # "auto" starts large on a GPU and lets the loop halve it on out-of-memory errors; a CPU run gets
    # no such signal before swapping, so it keeps the usual size.
    preferred = model.preferred_batch_size()
    if requested is None:
        return preferred or DEFAULT_BATCH_SIZE
    if requested == "auto":
        return preferred or (AUTO_BATCH_START if device.startswith("cuda") else DEFAULT_BATCH_SIZE)
    return int(requested)


def _run_folder(model: Model, key: RunKey, task: Task, cfg: RunConfig, generation: GenerationSpec) -> str:
    """``MODEL-FINGERPRINT``, plus what makes this run differ from a plain one of the same model: a
    limit (``-limit50``) or generation settings other than the task's (``-gen1a2b3c``)."""
    folder = f"{safe_name(model.name)}-{key.model_fp[:8]}"
    if generation != task.spec.generation:
        folder += f"-gen{json_digest(generation.as_kwargs(), 6)}"
    if cfg.limit is not None:
        folder += f"-limit{cfg.limit}"
    return folder


def _request(task: Task, template: str, sample: Sample, kind: str) -> Request:
    candidates = task.candidates_for(sample) if kind == "rank" else ()
    if kind == "rank" and not candidates:
        raise DataError(f"task {task.name!r}: no candidate answers for rank requests")
    return Request(
        sample_id=sample.id,
        kind=kind,
        prompt=task.render_prompt(template, sample, candidates),
        question=sample.question,
        image_ref=sample.image,
        image_id=sample.image_id,
        candidates=candidates,
    )


def _seed_everything(seed: int) -> None:
    # torch is seeded when a model loads (runner._load): importing it here would cost seconds before
    # the options are checked, and a rerun that the cache answers never needs it.
    random.seed(seed)
    np.random.seed(seed % (2**32))
