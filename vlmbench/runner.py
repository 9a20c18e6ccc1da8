"""``evaluate()``: one model on one task, end to end, in three steps.

1. :func:`plan_run` checks everything that can be checked without a model — task, model arguments,
   metric options, device, output folder, cache — and builds the requests. A mistake costs seconds.
2. :func:`execute` answers what the cache does not hold yet (DataLoader workers decode images, the
   model loop stores each batch), across data-parallel ranks when launched that way.
3. :func:`report` writes ``predictions.jsonl`` (before any metric runs) and ``results.json``.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench import artifacts, distributed
from vlmbench.assets import cache_dir
from vlmbench.dataset import Sample
from vlmbench.devices import resolve_device
from vlmbench.distributed import DistInfo, dist_info
from vlmbench.errors import AssetMissingError, DataError, Interrupted, ModelFailed, SampleError, VlmbenchError
from vlmbench.hashing import json_digest
from vlmbench.images import sha256_bytes
from vlmbench.loader import DEFAULT_WORKER_TIMEOUT, make_loader
from vlmbench.loop import ModelLoop
from vlmbench.metric import Metric, MetricContext
from vlmbench.model import Model
from vlmbench.plugins import Plugins, load_plugins
from vlmbench.provenance import provenance
from vlmbench.request import Request
from vlmbench.results import config_block, metric_blocks, model_block, prediction_records, score_records
from vlmbench.scoring import build_metrics
from vlmbench.spec import MetricSpec
from vlmbench.store import CachedPrediction, PredictionStore, RunKey, done_in_shards, merge_shards, shard_dir
from vlmbench.task import Task, resolve_task, task_warnings

__all__ = ["RunConfig", "RunResult", "evaluate", "execute", "plan_run", "report", "resolve_device"]

MAX_SEED = 2**32 - 1


def default_cache_path() -> Path:
    return cache_dir() / "predictions.sqlite"


@dataclass
class RunConfig:
    """Options of one run (the CLI's flags). ``cache=None`` means the default cache file,
    ``cache=False`` keeps predictions in memory only."""

    batch_size: int = 8
    limit: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    num_workers: int | None = None  # None: one per spare CPU core, at most 4
    output_dir: Path = Path("runs")
    cache: Path | bool | None = None
    metrics: list[str] | None = None
    on_bad_sample: str = "skip"
    progress: bool = True
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise VlmbenchError("batch size must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise VlmbenchError("--limit must be at least 1")
        if not 0 <= self.seed <= MAX_SEED:
            raise VlmbenchError(f"--seed must be between 0 and {MAX_SEED}, got {self.seed}")
        if self.num_workers is None:
            # The main process needs a core for the model loop; workers beyond the spare cores only
            # compete with it (measured in benchmarks/harness_overhead.py).
            self.num_workers = min(4, max(0, (os.cpu_count() or 1) - 1))
        if self.num_workers < 0:
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


def evaluate(
    model: str,
    task: str | Path | Task,
    *,
    model_args: str | dict[str, Any] | None = None,
    plugins: Plugins | None = None,
    **config: Any,
) -> RunResult:
    """Evaluate ``model`` on ``task`` and write its artifacts. ``config`` takes :class:`RunConfig` fields."""
    plan = plan_run(model, task, RunConfig(**config), model_args=model_args, plugins=plugins)
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
    kind = task.spec.request_type
    if kind not in entry.request_types:
        raise VlmbenchError(
            f"model {model!r} cannot answer {kind!r} requests (it supports {', '.join(entry.request_types)}); "
            f"task {task.name!r} asks for {kind!r}"
        )
    _seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    instance = plugins.create_model(model, model_args, device=device, dtype=cfg.dtype, seed=cfg.seed)
    metric_specs = [MetricSpec(m) for m in cfg.metrics] if cfg.metrics else task.spec.metrics
    context = MetricContext(difficulty_weights=task.spec.difficulty_weights, seed=cfg.seed, device=device)
    metrics = build_metrics(metric_specs, plugins, context)  # option errors surface before any model work

    skipped: Counter[str] = Counter()
    examples: list[str] = []
    for problem in task.row_problems:
        if cfg.on_bad_sample == "stop":
            raise DataError(problem.message)
        skipped[problem.reason] += 1
        examples.append(problem.message)
    samples = task.samples[: cfg.limit] if cfg.limit else list(task.samples)
    if not samples:
        raise DataError(f"task {task.name!r} has no samples to evaluate")
    template = task.spec.prompt_template(entry.family, cls.default_prompt)
    requests = [_request(task, template, s, kind) for s in samples]
    settings = {"kind": kind, "prompt_template": template}
    if kind == "generate":
        settings["generation"] = task.spec.generation.as_kwargs()
    key = RunKey(instance.fingerprint(), task.hash, json_digest(settings))
    run_dir = cfg.output_dir / _safe(task.name) / f"{_safe(instance.name)}-{key.model_fp[:8]}"
    artifacts.ensure_output_dir(cfg.output_dir)
    return RunPlan(cfg, task, instance, metrics, samples, requests, key, run_dir, device, skipped, examples)


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
            generation=plan.task.spec.generation,
            batch_size=cfg.batch_size,
            on_bad_sample=cfg.on_bad_sample,
            load=lambda: _load(plan),
            show_progress=cfg.progress and dist.is_main,
        )
        for r in plan.requests:
            if r.sample_id in stale:
                loop.skip(r, stale[r.sample_id])
        try:
            if todo:
                # Before the DataLoader starts: its workers inherit the loaded processor instead of
                # loading it again, and a model that cannot load is known before any image is read.
                loop.ensure_loaded()
            loader = make_loader(
                todo,
                plan.task.image_source,
                plan.model,
                batch_size=cfg.batch_size,
                num_workers=cfg.num_workers,
                timeout=cfg.worker_timeout,
            )
            loop.run(loader, len(todo))
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
    artifacts.write_jsonl(plan.run_dir / artifacts.PREDICTIONS, records)
    n_scored = sum(r["status"] == "ok" for r in records)
    results = {
        "schema": artifacts.RESULTS_SCHEMA,
        "status": "ok",
        "task": {**task.describe(), "n_samples": len(plan.samples), "n_scored": n_scored},
        "model": model_block(plan.model, plan.key, plan.samples),
        **metric_blocks(scored),
        "skipped_samples": dict(sorted(outcome.skipped.items())),
        "skipped_sample_examples": outcome.examples[:20],
        "warnings": dict(sorted(task_warnings(task, plan.samples).items())),
        "notices": outcome.notices,
        "config": config_block(cfg, task, plan.device),
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


def _load(plan: RunPlan) -> None:
    plan.model.load()
    if plan.model.needs_training_data:
        train = plan.task.train_samples
        plan.model.fit(train if train is not None else plan.task.samples)


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
    results = {
        "schema": artifacts.RESULTS_SCHEMA,
        "status": "skipped",
        "reason": str(exc),
        "task": plan.task.describe(),
        "model": model_block(plan.model, plan.key),
        "metrics": {},
        "config": config_block(plan.cfg, plan.task, plan.device),
        "provenance": provenance(),
    }
    artifacts.write_json(plan.run_dir / artifacts.RESULTS, results)
    return RunResult("skipped", plan.run_dir, results)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
