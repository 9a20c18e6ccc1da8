"""``evaluate()``: one model on one task, end to end, in three steps.

1. :func:`~vlmbench.evaluation.plan.plan_run` checks everything that can be checked without a model — task, model arguments,
   metric options, device, output folder, cache — and builds the requests. A mistake costs seconds.
2. :func:`execute` answers what the cache does not hold yet (DataLoader workers decode images, the
   model loop stores each batch), across data-parallel ranks when launched that way.
3. :func:`report` writes ``predictions.jsonl`` (before any metric runs) and ``results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench.artifacts import run_files
from vlmbench.artifacts.provenance import provenance
from vlmbench.console import hide_unactionable_messages
from vlmbench.devices import resolve_device
from vlmbench.errors import (
    AssetMissingError,
    Interrupted,
    ModelFailed,
    SampleError,
)
from vlmbench.evaluation import distributed
from vlmbench.evaluation.distributed import DistInfo, dist_info
from vlmbench.evaluation.inference import ModelLoop
from vlmbench.evaluation.loader import default_workers, make_loader
from vlmbench.evaluation.plan import RunConfig, RunPlan, plan_run
from vlmbench.evaluation.report import config_block, model_block, prediction_records
from vlmbench.evaluation.store import (
    CachedPrediction,
    PredictionStore,
    done_in_shards,
    merge_shards,
    shard_dir,
)
from vlmbench.plugin.loading import Plugins
from vlmbench.plugin.request import Request
from vlmbench.scoring.records import metric_blocks, score_records
from vlmbench.tasks.images import sha256_bytes
from vlmbench.tasks.protocol import protocol_record
from vlmbench.tasks.task import Task, task_warnings

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


@dataclass
class RunResult:
    status: str  # "ok", "skipped", or "worker" (a data-parallel rank other than 0)
    run_dir: Path
    results: dict
    computed: int = 0
    cached: int = 0
    model_calls: int = 0
    skipped_samples: Counter = field(default_factory=Counter)
    # The model stopped answering (every request failed, its server went away): the run goes on with
    # the other models, and the command line reports it as an error, not as a skip.
    failed: bool = False


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
    hide_unactionable_messages()
    dist = dist_info()
    try:
        outcome = execute(plan, dist)
    except (AssetMissingError, ModelFailed) as exc:
        failed = isinstance(exc, ModelFailed)
        if dist.is_main:
            return dataclasses.replace(_write_skipped_model(plan, exc), failed=failed)
        return RunResult("skipped", plan.run_dir, {"status": "skipped", "reason": str(exc)}, failed=failed)
    if outcome is None:
        return RunResult("worker", plan.run_dir, {})
    return report(plan, outcome)


def execute(plan: RunPlan, dist: DistInfo | None = None) -> Outcome | None:
    """Answer the requests the cache does not hold (valid for the images as they are now).

    Returns None on a data-parallel rank other than 0, which only contributes answers."""
    cfg, dist = plan.cfg, dist or dist_info()
    distributed.init(dist)
    started = time.perf_counter()
    notices: list[str] = []
    # Data-parallel ranks write their own shard files next to the cache (or the run folder without a
    # cache); rank 0 merges them after everyone is done. A single process writes the cache directly.
    main_path = cfg.cache_path or (plan.run_dir / ".ddp-cache.sqlite" if dist.enabled else None)
    shards = shard_dir(main_path) if dist.enabled and main_path else None
    with PredictionStore(main_path) as store:
        if store.repaired:
            notices.append(
                _warn(
                    f"the prediction cache was damaged; it was moved to {store.repaired} and a new one started"
                )
            )
        valid, stale, todo = _pending(plan, store, shards, dist)
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
        try:
            workers = _answer(plan, loop, writer, todo)
        finally:
            if writer is not store:
                writer.close()
        gathered = _gather(plan, loop, store, shards, dist)
        if gathered is None:
            return None
        predictions = store.get_many(
            plan.key, [r.sample_id for r in plan.requests if r.sample_id not in stale]
        )
        model_info = store.model_info(plan.key.model_fp)
    if cfg.cache_path is None and main_path is not None:
        for leftover in main_path.parent.glob(main_path.name + "*"):
            leftover.unlink()
    if loop.interrupted:
        raise Interrupted(_interrupted_message(loop, cfg.cache_path is not None), loop.exit_code)
    return Outcome(
        predictions=predictions,
        computed=len(predictions.keys() - valid),  # on rank 0 of a data-parallel run: all ranks together
        cached=len(valid),
        model_calls=loop.model_calls,
        skipped=gathered[0],
        examples=gathered[1],
        notices=notices + loop.notices,
        timing={
            **loop.timing,
            **(plan.model.timings() if loop.computed else {}),
            "wall_seconds": time.perf_counter() - started,
        },
        model_info=model_info,
        world_size=dist.world_size,
        workers=workers,
    )


def _pending(
    plan: RunPlan, store: PredictionStore, shards: Path | None, dist: DistInfo
) -> tuple[set[str], dict[str, SampleError], list[Request]]:
    """What the cache holds for the images as they are now, what can no longer be read, and this
    process's share of what is left to answer."""
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
    return valid, stale, todo


def _answer(plan: RunPlan, loop: ModelLoop, writer: PredictionStore, todo: list[Request]) -> tuple[int, str]:
    """Load the model, start the DataLoader and run the loop; returns the workers used and why."""
    cfg = plan.cfg
    workers = (0, "no answers to compute")
    try:
        if todo:
            # Before the DataLoader starts: its workers inherit the loaded processor and tables instead
            # of loading them again, and a model that cannot load is known before any image is read.
            # The default worker count depends on where and how the loaded model computes.
            loop.ensure_loaded()
            workers = (
                (cfg.num_workers, "given")
                if cfg.num_workers is not None
                else default_workers(plan.model, plan.device)
            )
        # No loader when the cache answers everything: building one imports torch (seconds).
        loader = (
            make_loader(
                todo,
                plan.task.image_source,
                plan.model,
                batch_size=plan.batch_size,
                num_workers=workers[0],
                timeout=cfg.worker_timeout,
            )
            if todo
            else None
        )
        loop.run(loader, len(todo))
        if loop.loaded and loop.computed:
            writer.put_model_info(plan.key.model_fp, plan.model.describe())
    except KeyboardInterrupt:
        raise Interrupted(
            _interrupted_message(loop, cfg.cache_path is not None), loop.exit_code or 130
        ) from None
    return workers


def _gather(
    plan: RunPlan, loop: ModelLoop, store: PredictionStore, shards: Path | None, dist: DistInfo
) -> tuple[Counter, list[str]] | None:
    """The skipped samples of every process; on data-parallel rank 0 the shards merged into the store.
    None on the other ranks, whose part is done."""
    skipped, examples = Counter(plan.skipped), list(plan.examples)
    if not dist.enabled:
        skipped.update(loop.skipped)
        return skipped, examples + loop.examples
    run_files.write_json(
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
    return skipped, examples


def report(plan: RunPlan, outcome: Outcome) -> RunResult:
    """Write predictions.jsonl (before scoring, so that a failing metric costs no answers) and results.json."""
    task, cfg = plan.task, plan.cfg
    records = prediction_records(plan.samples, plan.requests, outcome.predictions, task.spec.filters)
    run_files.write_jsonl(plan.run_dir / run_files.PREDICTIONS, records)
    started = time.perf_counter()
    scored = score_records(
        records,
        plan.metrics,
        weights=task.spec.difficulty_weights,
        bootstrap_samples=task.spec.bootstrap_samples,
        seed=cfg.seed,
        cache=cfg.score_cache_path,
        progress=cfg.progress,
    )
    timing = {
        **outcome.timing,
        "scoring_seconds": time.perf_counter() - started,
        "scoring_by_metric": scored.seconds,
    }
    if outcome.computed == 0:
        timing["cached_rerun"] = True  # every answer came from the cache: no model timings to report
    run_files.write_jsonl(plan.run_dir / run_files.PREDICTIONS, records)
    n_scored = sum(r["status"] == "ok" for r in records)
    results = {
        "schema": run_files.RESULTS_SCHEMA,
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
        "protocol": protocol_record(plan.protocol),
        "cache": {
            "path": str(cfg.cache_path) if cfg.cache_path else None,
            "computed": outcome.computed,
            "cached": outcome.cached,
        },
        "timing": timing,
        "provenance": provenance(),
    }
    run_files.write_json(plan.run_dir / run_files.RESULTS, results)
    return RunResult(
        "ok", plan.run_dir, results, outcome.computed, outcome.cached, outcome.model_calls, outcome.skipped
    )


def _still_valid(plan: RunPlan, done: dict[str, str]) -> tuple[set[str], dict[str, SampleError]]:
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
        elif done[r.sample_id] == now:  # the store returns only answers stored with their image's hash
            valid.add(r.sample_id)
    return valid, stale


def _load(plan: RunPlan, todo: list[Request]) -> None:
    _seed_torch(plan.cfg.seed)
    plan.model.load()
    if plan.model.needs_training_data:
        train = plan.task.train_samples
        plan.model.fit(train if train is not None else plan.task.samples)
    plan.model.setup(todo)


def _seed_torch(seed: int) -> None:
    """Seed torch just before a model loads: each model's random draws start from the run's seed."""
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)


def _interrupted_message(loop: ModelLoop, cached: bool) -> str:
    if not cached:  # --no-cache: the answers lived in memory only
        return (
            f"interrupted: --no-cache kept the {loop.computed} answers of this run in memory only, so none "
            "is stored; the same command starts over (without --no-cache a rerun resumes)"
        )
    return (
        f"interrupted: {loop.computed} answers from this run are stored in the cache; "
        "run the same command again to resume"
    )


def _warn(message: str) -> str:
    import click

    click.secho(f"warning: {message}", fg="yellow", err=True)
    return message


def _write_skipped_model(plan: RunPlan, exc: Exception) -> RunResult:
    """Record why the model was skipped — unless the folder holds a real result, which a skip never
    replaces (say weights that went missing after a successful run)."""
    results = {
        "schema": run_files.RESULTS_SCHEMA,
        "status": "skipped",
        "reason": str(exc),
        "task": plan.task.describe(),
        "model": model_block(plan.model, plan.key, label=plan.label),
        "metrics": {},
        "config": config_block(plan),
        "protocol": protocol_record(plan.protocol),
        "provenance": provenance(),
    }
    if not _holds_result(plan.run_dir):
        run_files.write_json(plan.run_dir / run_files.RESULTS, results)
    return RunResult("skipped", plan.run_dir, results)


def _holds_result(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / run_files.RESULTS).read_text(encoding="utf-8")).get("status") == "ok"
    except (OSError, ValueError, AttributeError):
        return False
