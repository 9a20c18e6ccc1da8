"""``evaluate()``: one model on one task, end to end.

task -> samples -> requests -> (DataLoader workers decode images) -> model -> prediction store
-> answer filters -> metrics -> predictions.jsonl + results.json
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import resource
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench import artifacts, distributed
from vlmbench.args import parse_kv
from vlmbench.assets import cache_dir
from vlmbench.dataset import ImageSource, Sample
from vlmbench.distributed import dist_info
from vlmbench.errors import AssetMissingError, DataError, Interrupted, VlmbenchError
from vlmbench.filters import apply_filters
from vlmbench.hashing import json_digest
from vlmbench.images import ImageProblem, decode_image, sha256_bytes
from vlmbench.metric import MetricContext
from vlmbench.model import Model
from vlmbench.normalize import vqa_normalize
from vlmbench.plugins import Plugins, load_plugins
from vlmbench.provenance import provenance
from vlmbench.registry import load_target
from vlmbench.request import Batch, Request
from vlmbench.scoring import build_metrics, score
from vlmbench.spec import MetricSpec
from vlmbench.store import CachedPrediction, PredictionStore, RunKey
from vlmbench.task import Task, resolve_task, task_warnings


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

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise VlmbenchError("batch size must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise VlmbenchError("--limit must be at least 1")
        if self.num_workers is None:
            # The main process needs a core for the model loop; workers beyond the spare cores only
            # compete with it (measured in benchmarks/harness_overhead.py).
            self.num_workers = min(4, max(0, (os.cpu_count() or 1) - 1))
        if self.num_workers < 0:
            raise VlmbenchError("--num-workers must be 0 or more")
        if self.on_bad_sample not in ("skip", "stop"):
            raise VlmbenchError("on_bad_sample must be 'skip' or 'stop'")
        self.output_dir = Path(self.output_dir)


@dataclass
class RunResult:
    status: str  # "ok" or "skipped"
    run_dir: Path
    results: dict
    computed: int = 0
    cached: int = 0
    model_calls: int = 0
    skipped_samples: Counter = field(default_factory=Counter)


def evaluate(
    model: str,
    task: str | Path | Task,
    *,
    model_args: str | dict[str, Any] | None = None,
    plugins: Plugins | None = None,
    **config: Any,
) -> RunResult:
    """Evaluate ``model`` on ``task`` and write its artifacts. ``config`` takes :class:`RunConfig` fields."""
    cfg = RunConfig(**config)
    plugins = plugins or load_plugins()
    task = task if isinstance(task, Task) else resolve_task(task, plugins)
    entry = plugins.models.get(model)
    cls = load_target(entry.target)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise VlmbenchError(f"model {model!r}: {entry.target} is not a vlmbench.model.Model subclass")
    kind = task.spec.request_type
    if kind not in entry.request_types:
        raise VlmbenchError(
            f"model {model!r} cannot answer {kind!r} requests (it supports {', '.join(entry.request_types)}); "
            f"task {task.name!r} asks for {kind!r}"
        )
    _seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    given = parse_kv(model_args) if isinstance(model_args, str) or model_args is None else dict(model_args)
    instance: Model = cls.create(entry, given, device=device, dtype=cfg.dtype, seed=cfg.seed)
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

    cache_path = (
        None
        if cfg.cache is False
        else Path(cfg.cache)
        if cfg.cache not in (None, True)
        else default_cache_path()
    )
    dist = dist_info()
    distributed.init(dist)
    timing: dict[str, Any] = {}
    started = time.perf_counter()
    warnings_: list[str] = []
    # Data-parallel ranks write their own shard files next to the cache (or the run folder without
    # a cache); rank 0 merges them after everyone is done. A single process writes the cache directly.
    main_path = cache_path or (run_dir / ".ddp-cache.sqlite" if dist.enabled else None)
    shard_dir = main_path.with_name(main_path.name + ".shards") if dist.enabled and main_path else None
    with PredictionStore(main_path) as store:
        if store.repaired:
            warnings_.append(
                f"the prediction cache was damaged; it was moved to {store.repaired} and a new one started"
            )
        done = store.done_ids(key)
        writer = store
        if shard_dir is not None:
            shard_dir.mkdir(parents=True, exist_ok=True)
            for shard in sorted(shard_dir.glob("rank*.sqlite")):
                with PredictionStore(shard) as other:
                    done |= other.done_ids(key)
            writer = PredictionStore(shard_dir / f"rank{dist.rank}.sqlite")
        todo = [r for r in requests if r.sample_id not in done]
        if dist.enabled:
            # Every rank must shard the same list: nobody writes before all have read what is done.
            distributed.barrier(dist)
            todo = todo[dist.rank :: dist.world_size]
        loop = _Loop(instance, task, cfg, writer, key, show_progress=cfg.progress and dist.is_main)
        try:
            loop.run(todo)
        except AssetMissingError as exc:
            if dist.is_main:
                return _write_skipped_model(run_dir, exc, instance, task, cfg, key)
            return RunResult("skipped", run_dir, {"status": "skipped", "reason": str(exc)})
        finally:
            if writer is not store:
                writer.close()
        if dist.enabled:
            artifacts.write_json(
                shard_dir / f"rank{dist.rank}.skipped.json",
                {"counts": loop.skipped, "examples": loop.examples},
            )
            distributed.barrier(dist)
            if not dist.is_main:
                return RunResult("worker", run_dir, {}, loop.computed, 0, loop.model_calls, loop.skipped)
            for shard in sorted(shard_dir.glob("rank*.skipped.json")):
                info = json.loads(shard.read_text())
                skipped.update(info["counts"])
                examples.extend(info["examples"])
                shard.unlink()
            for shard in sorted(shard_dir.glob("rank*.sqlite")):
                store.merge_from(shard)
                for leftover in shard.parent.glob(shard.name + "*"):
                    leftover.unlink()
            with contextlib.suppress(OSError):
                shard_dir.rmdir()  # left in place if another run is still writing shards there
        else:
            skipped.update(loop.skipped)
            examples.extend(loop.examples)
        cached = store.get_many(key, [r.sample_id for r in requests])
        computed = len(cached.keys() - done)  # on rank 0 of a data-parallel run: all ranks together
    if cache_path is None and main_path is not None:
        for leftover in main_path.parent.glob(main_path.name + "*"):
            leftover.unlink()
    timing.update(loop.timing)
    timing["wall_seconds"] = time.perf_counter() - started
    if loop.interrupted:
        raise Interrupted(
            f"interrupted: {loop.computed} answers from this run are stored in the cache; "
            "run the same command again to resume"
        )

    records = _records(samples, requests, cached, task.spec.filters)
    artifacts.write_jsonl(run_dir / artifacts.PREDICTIONS, records)  # outputs are safe before metrics run

    n_cached = len(done & {r.sample_id for r in requests})
    scored_rows = [r for r in records if r["status"] == "ok"]
    scoring_started = time.perf_counter()
    scored = score(
        metrics,
        [r["answer"] for r in scored_rows],
        [r["references"] for r in scored_rows],
        [r["difficulty"] for r in scored_rows],
        weights=task.spec.difficulty_weights,
        bootstrap_samples=task.spec.bootstrap_samples,
        seed=cfg.seed,
    )
    timing["scoring_seconds"] = time.perf_counter() - scoring_started
    for col, values in scored.sample_scores.items():
        for row, value in zip(scored_rows, values, strict=True):
            row["scores"][col] = float(value)
    artifacts.write_jsonl(run_dir / artifacts.PREDICTIONS, records)

    results = {
        "schema": artifacts.RESULTS_SCHEMA,
        "status": "ok",
        "task": {**task.describe(), "n_samples": len(samples), "n_scored": len(scored_rows)},
        "model": _model_block(instance, key, samples),
        "metrics": scored.metrics,
        "by_difficulty": scored.by_difficulty,
        "metric_details": scored.details,
        "skipped_metrics": scored.skipped,
        "skipped_samples": dict(sorted(skipped.items())),
        "skipped_sample_examples": examples[:20],
        "warnings": dict(sorted(task_warnings(task, samples).items())),
        "notices": warnings_ + loop.notices,
        "config": _config_block(cfg, task, device),
        "cache": {
            "path": str(cache_path) if cache_path else None,
            "computed": computed,
            "cached": n_cached,
        },
        "timing": timing,
        "provenance": provenance(),
    }
    artifacts.write_json(run_dir / artifacts.RESULTS, results)
    return RunResult("ok", run_dir, results, computed, n_cached, loop.model_calls, skipped)


class _Loop:
    """The model loop: batches from a DataLoader, one store transaction per batch.

    Ctrl-C (SIGINT) lets the batch in flight finish and be stored, then stops; a second Ctrl-C
    stops at once. An out-of-memory error halves the batch and retries, and later batches stay at
    the smaller size; a single request that still does not fit is skipped as ``out_of_memory``.
    """

    def __init__(
        self,
        model: Model,
        task: Task,
        cfg: RunConfig,
        store: PredictionStore,
        key: RunKey,
        show_progress: bool = True,
    ):
        self.model, self.task, self.cfg, self.store, self.key = model, task, cfg, store, key
        self.show_progress = show_progress
        self.loaded = False
        self.computed = 0
        self.model_calls = 0
        self.max_batch = cfg.batch_size
        self.interrupted = False
        self.skipped: Counter[str] = Counter()
        self.examples: list[str] = []
        self.notices: list[str] = []
        self.timing: dict[str, Any] = {
            "load_seconds": 0.0,
            "model_seconds": 0.0,
            "data_wait_seconds": 0.0,
            "loop_seconds": 0.0,
        }

    def _ensure_loaded(self) -> None:
        # Loaded on the first batch that has a readable image: a rerun with nothing to do, or with only
        # unreadable images left, never pays for loading weights.
        if self.loaded:
            return
        t0 = time.perf_counter()
        self.model.load()
        if self.model.needs_training_data:
            train = self.task.train_samples
            self.model.fit(train if train is not None else self.task.samples)
        self.timing["load_seconds"] = time.perf_counter() - t0
        self.loaded = True

    def run(self, todo: list[Request]) -> None:
        if not todo:
            return
        from tqdm.auto import tqdm

        loader = _make_loader(todo, self.task.image_source, self.model, self.cfg)
        t_loop = time.perf_counter()
        bar = tqdm(
            total=len(todo),
            unit="sample",
            disable=not self.show_progress,
            desc=self.model.name,
            dynamic_ncols=True,
        )
        try:
            with _GracefulInterrupt() as interrupt:
                waited = time.perf_counter()
                for batch in loader:
                    self.timing["data_wait_seconds"] += time.perf_counter() - waited
                    self._handle_failed(batch.failed)
                    if batch.requests:
                        self._ensure_loaded()
                        t0 = time.perf_counter()
                        self._run_batch(batch)
                        self.timing["model_seconds"] += time.perf_counter() - t0
                    bar.update(len(batch.requests) + len(batch.failed))
                    if interrupt.requested:
                        self.interrupted = True
                        break
                    waited = time.perf_counter()
        finally:
            bar.close()
            self.timing["loop_seconds"] = time.perf_counter() - t_loop
            done = self.computed + sum(self.skipped.values())
            if self.timing["loop_seconds"] > 0:
                self.timing["samples_per_second"] = done / self.timing["loop_seconds"]
            self.timing["peak_memory_mb"] = _peak_memory_mb()

    def _handle_failed(self, failed: list[Request]) -> None:
        for r in failed:
            self._skip(r, r.problem.reason, r.problem.message)

    def _skip(self, r: Request, reason: str, message: str) -> None:
        message = f"sample {r.sample_id} ({r.image_ref}): {message}"
        if self.cfg.on_bad_sample == "stop":
            raise DataError(message)
        self.skipped[reason] += 1
        self.examples.append(message)

    def _run_batch(self, batch: Batch) -> None:
        """Answer a batch (in chunks of at most ``max_batch``) and store each chunk as it completes."""
        pending = [batch] if len(batch) <= self.max_batch else self._split(batch.requests, self.max_batch)
        while pending:
            part = pending.pop(0)
            try:
                outputs = self._call(part)
            except Exception as exc:
                if not _is_out_of_memory(exc):
                    raise
                _free_accelerator_memory()
                if len(part) == 1:
                    self._skip(part.requests[0], "out_of_memory", "out of memory with a batch of one")
                    continue
                self.max_batch = max(1, len(part) // 2)
                self.notices.append(
                    f"out of memory at batch size {len(part)}; continuing with {self.max_batch}"
                )
                pending = self._split(part.requests, self.max_batch) + pending
                continue
            self.store.put_many(self.key, outputs)
            self.computed += len(outputs)

    def _split(self, requests: list[Request], size: int) -> list[Batch]:
        # Re-collate in this process: the worker's collated inputs belong to the whole batch.
        return [
            Batch(chunk, self.model.collate(chunk))
            for chunk in (requests[i : i + size] for i in range(0, len(requests), size))
        ]

    def _call(self, batch: Batch) -> list[CachedPrediction]:
        self.model_calls += 1
        reqs = batch.requests
        if reqs[0].kind == "generate":
            raw = self.model.generate(batch, self.task.spec.generation)
            _check_len(self.model, raw, reqs)
            return [
                CachedPrediction(r.sample_id, r.kind, r.prompt, str(a), None, r.image_sha256)
                for r, a in zip(reqs, raw, strict=True)
            ]
        scores = self.model.rank(batch)
        _check_len(self.model, scores, reqs)
        out = []
        for r, s in zip(reqs, scores, strict=True):
            s = [float(x) for x in s]
            if len(s) != len(r.candidates):
                raise VlmbenchError(
                    f"model {self.model.name!r} returned {len(s)} scores for {len(r.candidates)} candidates"
                )
            best = int(np.argmax(s)) if s else -1
            out.append(
                CachedPrediction(
                    r.sample_id, r.kind, r.prompt, r.candidates[best] if s else "", s, r.image_sha256
                )
            )
        return out


class _GracefulInterrupt:
    """First SIGINT: note it (the loop stops after storing the current batch). Second: stop now."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nvlmbench: stopping after the current batch (Ctrl-C again to stop now)",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _is_out_of_memory(exc: Exception) -> bool:
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(exc, (RuntimeError, MemoryError)) and "out of memory" in str(exc).lower()


def _free_accelerator_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _check_len(model: Model, outputs: list, reqs: list[Request]) -> None:
    if len(outputs) != len(reqs):
        raise VlmbenchError(
            f"model {model.name!r} returned {len(outputs)} outputs for a batch of {len(reqs)}"
        )


class _RequestImages:
    """Map-style dataset: a request with its image decoded (in a worker process)."""

    def __init__(self, requests: list[Request], source: ImageSource):
        self.requests = requests
        self.source = source

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, i: int) -> Request:
        request = replace(self.requests[i])
        try:
            data = self.source.read(request.image_ref)
            request.image_sha256 = sha256_bytes(data)
            request.image = decode_image(data, name=request.image_ref)
        except ImageProblem as problem:
            request.problem = problem
        return request


class _Collate:
    def __init__(self, model: Model):
        self.model = model

    def __call__(self, requests: list[Request]) -> Batch:
        good = [r for r in requests if r.problem is None]
        failed = [r for r in requests if r.problem is not None]
        return Batch(good, self.model.collate(good) if good else None, failed)


def _make_loader(todo: list[Request], source: ImageSource, model: Model, cfg: RunConfig):
    from torch.utils.data import DataLoader

    # Longest prompts first: similar lengths share a batch (less padding), and an out-of-memory
    # error shows up in the first batch rather than hours in.
    order = sorted(range(len(todo)), key=lambda i: (-len(todo[i].prompt), i))
    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    workers = min(cfg.num_workers, len(batches))
    return DataLoader(
        _RequestImages(todo, source),
        batch_sampler=batches,
        collate_fn=_Collate(model),
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        worker_init_fn=_ignore_sigint if workers else None,
    )


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C is handled by the main process, which finishes its batch; workers must not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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


def _records(
    samples: list[Sample], requests: list[Request], cached: dict[str, CachedPrediction], filters
) -> list[dict]:
    rows = []
    for sample, request in zip(samples, requests, strict=True):
        pred = cached.get(sample.id)
        row: dict[str, Any] = {
            "sample_id": sample.id,
            "image_id": sample.image_id,
            "image": sample.image,
            "image_sha256": pred.image_sha256 if pred else None,
            "question": sample.question,
            "references": list(sample.answers),
            "difficulty": sample.difficulty,
            "prompt": request.prompt,
        }
        if pred is None:
            row.update(status="skipped", raw=None, answer=None, scores={})
        else:
            row.update(status="ok", raw=pred.raw, answer=apply_filters(pred.raw, filters), scores={})
            if pred.scores is not None:
                top = np.argsort(pred.scores)[::-1][:5]
                row["top_candidates"] = [[request.candidates[i], pred.scores[i]] for i in top]
        rows.append(row)
    return rows


def _model_block(model: Model, key: RunKey, samples: list[Sample] | None = None) -> dict:
    block = {
        **model.describe(),
        "label": model.label(),
        "fingerprint": key.model_fp,
        "identity": model.identity(),
    }
    vocabulary = model.answer_vocabulary() if samples else None
    if vocabulary is not None:
        known = {vqa_normalize(a) for a in vocabulary}
        outside = sum(all(vqa_normalize(a) not in known for a in s.answers) for s in samples)
        block["vocabulary"] = {"size": len(known), "reference_outside_share": outside / len(samples)}
    return block


def _config_block(cfg: RunConfig, task: Task, device: str) -> dict:
    return {
        "batch_size": cfg.batch_size,
        "limit": cfg.limit,
        "seed": cfg.seed,
        "device": device,
        "dtype": cfg.dtype,
        "num_workers": cfg.num_workers,
        "on_bad_sample": cfg.on_bad_sample,
        "generation": task.spec.generation.as_kwargs(),
        "filters": task.spec.filters,
        "difficulty_weights": {str(k): v for k, v in task.spec.difficulty_weights.items()},
        "bootstrap_samples": task.spec.bootstrap_samples,
    }


def _write_skipped_model(
    run_dir: Path, exc: AssetMissingError, model: Model, task: Task, cfg: RunConfig, key: RunKey
) -> RunResult:
    results = {
        "schema": artifacts.RESULTS_SCHEMA,
        "status": "skipped",
        "reason": str(exc),
        "task": task.describe(),
        "model": _model_block(model, key),
        "metrics": {},
        "config": _config_block(cfg, task, model.device),
        "provenance": provenance(),
    }
    artifacts.write_json(run_dir / artifacts.RESULTS, results)
    return RunResult("skipped", run_dir, results)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    except ImportError:
        pass
    return "cpu"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def _peak_memory_mb() -> dict[str, float]:
    out = {"process_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    try:
        import torch

        if torch.cuda.is_available():
            out["cuda_allocated"] = torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
