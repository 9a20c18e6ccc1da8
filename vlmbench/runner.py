"""``evaluate()``: one model on one task, end to end, in three steps.

1. :func:`plan_run` checks everything that can be checked without a model — task, model arguments,
   metric options, device, output folder, cache — and builds the requests. A mistake costs seconds.
2. :func:`execute` answers what the cache does not hold yet (DataLoader workers decode images, the
   model loop stores each batch), across data-parallel ranks when launched that way.
3. :func:`report` writes ``predictions.jsonl`` (before any metric runs) and ``results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench import artifacts, distributed, schema
from vlmbench.artifacts import safe_name
from vlmbench.assets import cache_dir
from vlmbench.dataset import Sample
from vlmbench.devices import resolve_device
from vlmbench.distributed import DistInfo, dist_info
from vlmbench.errors import (
    AssetMissingError,
    DataError,
    Interrupted,
    ModelFailed,
    SampleError,
    UnsupportedTask,
    VlmbenchError,
)
from vlmbench.hashing import json_digest
from vlmbench.images import sha256_bytes
from vlmbench.loader import DEFAULT_WORKER_TIMEOUT, default_workers, make_loader
from vlmbench.loop import ModelLoop
from vlmbench.metric import Metric, MetricContext
from vlmbench.model import Model
from vlmbench.plugins import Plugins, load_plugins
from vlmbench.provenance import provenance
from vlmbench.request import Request
from vlmbench.results import config_block, metric_blocks, model_block, prediction_records, score_records
from vlmbench.runconfig import limited_count, parse_limit
from vlmbench.scoring import build_metrics
from vlmbench.spec import GenerationSpec, MetricSpec
from vlmbench.store import CachedPrediction, PredictionStore, RunKey, done_in_shards, merge_shards, shard_dir
from vlmbench.task import Task, resolve_task, task_warnings

__all__ = [
    "RunConfig",
    "RunResult",
    "evaluate",
    "execute",
    "plan_run",
    "report",
    "resolve_device",
    "run_plan",
]

MAX_SEED = 2**32 - 1
# The first batch size tried by --batch-size auto on a GPU; out-of-memory errors halve it.
AUTO_BATCH_START = 128


def default_cache_path() -> Path:
    return cache_dir() / "predictions.sqlite"


@dataclass
class RunConfig:
    """Options of one run (the CLI's flags). ``cache=None`` means the default cache file,
    ``cache=False`` keeps predictions in memory only."""

    batch_size: int | str = 8  # "auto": the largest that fits on a GPU (found by halving on OOM)
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

    def __post_init__(self) -> None:
        if self.batch_size != "auto" and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise VlmbenchError(f"batch size must be a positive number or 'auto', got {self.batch_size!r}")
        self.limit = parse_limit(self.limit)
        if not 0 <= self.seed <= MAX_SEED:
            raise VlmbenchError(f"--seed must be between 0 and {MAX_SEED}, got {self.seed}")
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


@dataclass
class RunResult:
    status: str  # "ok", "skipped", or "worker" (a data-parallel rank other than 0)
    run_dir: Path
    results: dict
    computed: int = 0
    cached: int = 0
    model_calls: int = 0
    skipped_samples: Counter = field(default_factory=Counter)


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


@dataclass
class Outcome:
    """What :func:`execute` found in and added to the cache."""

    predictions: dict[str, CachedPrediction]
    computed: int
    cached: int
    model_calls: int
    skipped: Counter
    examples: list[str]
    notices: list[str]
    timing: dict[str, Any]
    model_info: dict[str, Any] | None = None  # what the model reported when it last computed answers
    world_size: int = 1
    workers: tuple[int, str] = (0, "")  # DataLoader workers of this run, and why that many


def evaluate(
    model: str,
    task: str | Path | Task,
    *,
    model_args: str | dict[str, Any] | None = None,
    plugins: Plugins | None = None,
    **config: Any,
) -> RunResult:
    """Evaluate ``model`` on ``task`` and write its artifacts. ``config`` takes :class:`RunConfig` fields."""
    return run_plan(plan_run(model, task, RunConfig(**config), model_args=model_args, plugins=plugins))


def run_plan(plan: RunPlan) -> RunResult:
    """Execute a plan and report it; a model whose weights are missing or that fails on every request
    is reported as skipped (a result with its reason), never as an error of the whole run."""
    dist = dist_info()
    try:
        outcome = execute(plan, dist)
    except (AssetMissingError, ModelFailed) as exc:
        if dist.is_main:
            return _write_skipped_model(plan, exc)
        return RunResult("skipped", plan.run_dir, {"status": "skipped", "reason": str(exc)})
    if outcome is None:
        return RunResult("worker", plan.run_dir, {})
    return report(plan, outcome)


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
    entry = plugins.models.get(model)
    cls = plugins.models.load(model)
    kind, notes = _request_type(entry, task)
    _seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    instance = plugins.create_model(model, model_args, device=device, dtype=cfg.dtype, seed=cfg.seed)
    metric_specs = [MetricSpec(m) for m in cfg.metrics] if cfg.metrics else task.spec.metrics
    context = MetricContext(difficulty_weights=task.spec.difficulty_weights, seed=cfg.seed, device=device)
    metrics = build_metrics(metric_specs, plugins, context)  # option errors surface before any model work
    generation = _generation(task, cfg.gen_kwargs)

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
    template = task.spec.prompt_template(entry.family, cls.default_prompt)
    requests = [_request(task, template, s, kind) for s in samples]
    settings = {"kind": kind, "prompt_template": template}
    if kind == "generate":
        settings["generation"] = generation.as_kwargs()
    key = RunKey(instance.fingerprint(), task.hash, json_digest(settings))
    run_dir = cfg.output_dir / safe_name(task.name) / _run_folder(instance, key, task, cfg, generation)
    artifacts.ensure_output_dir(cfg.output_dir)
    _check_not_replacing(run_dir, task, len(samples), cfg.replace)
    if cfg.limit is not None:
        notes.append(f"limited to {len(samples)} of {len(task.samples)} samples (--limit {cfg.limit})")
    if cfg.gen_kwargs:
        notes.append("generation: " + ", ".join(f"{k}={v}" for k, v in sorted(cfg.gen_kwargs.items())))
    return RunPlan(
        cfg, task, instance, metrics, samples, requests, key, run_dir, device, generation,
        _batch_size(cfg.batch_size, device), cfg.label or instance.label(), notes, skipped, examples,
    )  # fmt: skip


def _request_type(entry, task: Task) -> tuple[str, list[str]]:
    """What this model is asked: the task's request type, or — for a model that can only rank, on a
    ``generate`` task — ranking of the task's candidate answers (how contrastive image-text models answer)."""
    kind = task.spec.request_type
    if kind in entry.request_types:
        return kind, []
    if kind == "generate" and "rank" in entry.request_types:
        source = task.candidate_spec.source.replace("_", " ")
        return "rank", [f"answers by ranking candidates ({source}), as it cannot generate"]
    raise UnsupportedTask(
        f"model {entry.name!r} cannot answer {kind!r} requests (it supports {', '.join(entry.request_types)}); "
        f"task {task.name!r} asks for {kind!r}"
    )


def _generation(task: Task, overrides: dict[str, Any]) -> GenerationSpec:
    if not overrides:
        return task.spec.generation
    merged = {**dataclasses.asdict(task.spec.generation), **overrides}
    return schema.build(GenerationSpec, merged, where="", source="--gen_kwargs")


def _batch_size(requested: int | str, device: str) -> int:
    # "auto" starts large on a GPU and lets the loop halve it on out-of-memory errors; a CPU run gets
    # no such signal before swapping, so it keeps the usual size.
    if requested == "auto":
        return AUTO_BATCH_START if device.startswith("cuda") else 8
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


def _check_not_replacing(run_dir: Path, task: Task, n_samples: int, allowed: bool) -> None:
    """A stored result of more samples or of other data is never replaced silently."""
    path = run_dir / artifacts.RESULTS
    if allowed or not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        old_task = old["task"] if old.get("status") == "ok" else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # unreadable: nothing of value to keep
    if not isinstance(old_task, dict):
        return
    if old_task.get("hash") != task.hash or int(old_task.get("n_samples") or 0) > n_samples:
        raise VlmbenchError(
            f"{run_dir} holds the result of {old_task.get('n_samples')} samples of task {old_task.get('name')!r} "
            f"(hash {old_task.get('hash')}); this run has {n_samples} samples (hash {task.hash}). "
            "Choose another --output-dir, or pass --replace to replace it"
        )


def execute(plan: RunPlan, dist: DistInfo | None = None) -> Outcome | None:
    """Answer the requests the cache does not hold (valid for the images as they are now).

    Returns None on a data-parallel rank other than 0, which only contributes answers."""
    cfg, dist = plan.cfg, dist or dist_info()
    distributed.init(dist)
    started = time.perf_counter()
    notices: list[str] = []
    cache_path = cfg.cache_path
    # Data-parallel ranks write their own shard files next to the cache (or the run folder without a
    # cache); rank 0 merges them after everyone is done. A single process writes the cache directly.
    main_path = cache_path or (plan.run_dir / ".ddp-cache.sqlite" if dist.enabled else None)
    shards = shard_dir(main_path) if dist.enabled and main_path else None
    with PredictionStore(main_path) as store:
        if store.repaired:
            notices.append(
                _warn(
                    f"the prediction cache was damaged; it was moved to {store.repaired} and a new one started"
                )
            )
        done = store.done(plan.key)
        if shards is not None:
            shards.mkdir(parents=True, exist_ok=True)
            done.update(done_in_shards(shards, plan.key))
        valid, stale = _still_valid(plan, done)
        todo = [r for r in plan.requests if r.sample_id not in valid and r.sample_id not in stale]
        if dist.enabled:
            # Every rank must shard the same list: nobody writes before all have read what is done.
            distributed.barrier(dist)
            todo = todo[dist.rank :: dist.world_size]
        writer = store if shards is None else PredictionStore(shards / f"rank{dist.rank}.sqlite")
        loop = ModelLoop(
            plan.model,
            writer,
            plan.key,
            generation=plan.generation,
            batch_size=plan.batch_size,
            on_bad_sample=cfg.on_bad_sample,
            load=lambda: _load(plan, todo),
            show_progress=cfg.progress and dist.is_main,
        )
        for r in plan.requests:
            if r.sample_id in stale:
                loop.skip(r, stale[r.sample_id])
        workers = (0, "no answers to compute")
        try:
            if todo:
                # Before the DataLoader starts: its workers inherit the loaded processor and tables
                # instead of loading them again, and a model that cannot load is known before any image
                # is read. The default worker count depends on where and how the loaded model computes.
                loop.ensure_loaded()
                workers = (
                    (cfg.num_workers, "given")
                    if cfg.num_workers is not None
                    else default_workers(plan.model, plan.device)
                )
            loader = make_loader(
                todo,
                plan.task.image_source,
                plan.model,
                batch_size=plan.batch_size,
                num_workers=workers[0],
                timeout=cfg.worker_timeout,
            )
            loop.run(loader, len(todo))
            if loop.loaded and loop.computed:
                writer.put_model_info(plan.key.model_fp, plan.model.describe())
        except KeyboardInterrupt:
            raise Interrupted(_interrupted_message(loop), loop.exit_code or 130) from None
        finally:
            if writer is not store:
                writer.close()
        skipped, examples = Counter(plan.skipped), list(plan.examples)
        if dist.enabled:
            artifacts.write_json(
                shards / f"rank{dist.rank}.skipped.json", {"counts": loop.skipped, "examples": loop.examples}
            )
            distributed.barrier(dist)
            if not dist.is_main:
                return None
            for part in sorted(shards.glob("rank*.skipped.json")):
                info = json.loads(part.read_text())
                skipped.update(info["counts"])
                examples.extend(info["examples"])
                part.unlink()
            merge_shards(store, shards)
        else:
            skipped.update(loop.skipped)
            examples.extend(loop.examples)
        predictions = store.get_many(
            plan.key, [r.sample_id for r in plan.requests if r.sample_id not in stale]
        )
        model_info = store.model_info(plan.key.model_fp)
    if cache_path is None and main_path is not None:
        for leftover in main_path.parent.glob(main_path.name + "*"):
            leftover.unlink()
    if loop.interrupted:
        raise Interrupted(_interrupted_message(loop), loop.exit_code)
    timing = {**loop.timing, "wall_seconds": time.perf_counter() - started}
    return Outcome(
        predictions=predictions,
        computed=len(predictions.keys() - valid),  # on rank 0 of a data-parallel run: all ranks together
        cached=len(valid),
        model_calls=loop.model_calls,
        skipped=skipped,
        examples=examples,
        notices=notices + loop.notices,
        timing=timing,
        model_info=model_info,
        world_size=dist.world_size,
        workers=workers,
    )


def report(plan: RunPlan, outcome: Outcome) -> RunResult:
    """Write predictions.jsonl (before scoring, so that a failing metric costs no answers) and results.json."""
    task, cfg = plan.task, plan.cfg
    records = prediction_records(plan.samples, plan.requests, outcome.predictions, task.spec.filters)
    artifacts.write_jsonl(plan.run_dir / artifacts.PREDICTIONS, records)
    started = time.perf_counter()
    scored = score_records(
        records,
        plan.metrics,
        weights=task.spec.difficulty_weights,
        bootstrap_samples=task.spec.bootstrap_samples,
        seed=cfg.seed,
    )
    timing = {**outcome.timing, "scoring_seconds": time.perf_counter() - started}
    if outcome.computed == 0:
        timing["cached_rerun"] = True  # every answer came from the cache: no model timings to report
    artifacts.write_jsonl(plan.run_dir / artifacts.PREDICTIONS, records)
    n_scored = sum(r["status"] == "ok" for r in records)
    results = {
        "schema": artifacts.RESULTS_SCHEMA,
        "status": "ok",
        "task": {**task.describe(), "n_samples": len(plan.samples), "n_scored": n_scored},
        "model": model_block(plan.model, plan.key, plan.samples, plan.label, outcome.model_info),
        "notes": plan.notes,
        **metric_blocks(scored),
        "skipped_samples": dict(sorted(outcome.skipped.items())),
        "skipped_sample_examples": outcome.examples[:20],
        "warnings": dict(sorted(task_warnings(task, plan.samples).items())),
        "notices": outcome.notices,
        "config": config_block(plan, outcome.world_size, outcome.workers),
        "cache": {
            "path": str(cfg.cache_path) if cfg.cache_path else None,
            "computed": outcome.computed,
            "cached": outcome.cached,
        },
        "timing": timing,
        "provenance": provenance(),
    }
    artifacts.write_json(plan.run_dir / artifacts.RESULTS, results)
    return RunResult(
        "ok", plan.run_dir, results, outcome.computed, outcome.cached, outcome.model_calls, outcome.skipped
    )


def _still_valid(plan: RunPlan, done: dict[str, str | None]) -> tuple[set[str], dict[str, SampleError]]:
    """Stored answers that still hold: the image they were computed for is the image there now.

    Returns the valid sample ids, and the samples whose image can no longer be read (they are skipped
    with the reason, never reported with an answer for an image that is gone). A changed image is
    neither: its sample is answered again."""
    valid: set[str] = set()
    stale: dict[str, SampleError] = {}
    current: dict[str, str | SampleError] = {}
    source = plan.task.image_source
    for r in plan.requests:
        if r.sample_id not in done:
            continue
        if r.image_ref not in current:
            try:
                current[r.image_ref] = sha256_bytes(source.read(r.image_ref))
            except SampleError as problem:
                current[r.image_ref] = problem
        now = current[r.image_ref]
        if isinstance(now, SampleError):
            stale[r.sample_id] = now
        elif done[r.sample_id] in (None, now):  # None: stored before image hashes were kept
            valid.add(r.sample_id)
    return valid, stale


def _load(plan: RunPlan, todo: list[Request]) -> None:
    plan.model.load()
    if plan.model.needs_training_data:
        train = plan.task.train_samples
        plan.model.fit(train if train is not None else plan.task.samples)
    plan.model.setup(todo)


def _interrupted_message(loop: ModelLoop) -> str:
    return (
        f"interrupted: {loop.computed} answers from this run are stored in the cache; "
        "run the same command again to resume"
    )


def _warn(message: str) -> str:
    import click

    click.secho(f"warning: {message}", fg="yellow", err=True)
    return message


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


def _write_skipped_model(plan: RunPlan, exc: Exception) -> RunResult:
    """Record why the model was skipped — unless the folder holds a real result, which a skip never
    replaces (say weights that went missing after a successful run)."""
    results = {
        "schema": artifacts.RESULTS_SCHEMA,
        "status": "skipped",
        "reason": str(exc),
        "task": plan.task.describe(),
        "model": model_block(plan.model, plan.key, label=plan.label),
        "metrics": {},
        "config": config_block(plan),
        "provenance": provenance(),
    }
    if not _holds_result(plan.run_dir):
        artifacts.write_json(plan.run_dir / artifacts.RESULTS, results)
    return RunResult("skipped", plan.run_dir, results)


def _holds_result(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / artifacts.RESULTS).read_text(encoding="utf-8")).get("status") == "ok"
    except (OSError, ValueError, AttributeError):
        return False


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
