"""The model loop: batches in, answers stored, one store transaction per batch.

What can go wrong in a long evaluation is handled here, so that no answer that was computed is lost
and no single sample can stop the run:

- Ctrl-C or SIGTERM lets the batch in flight finish and be stored, then stops; waiting for a batch
  (none in flight), or at a second signal, it stops at once (:mod:`.signals`); the caller reports it
  with exit status 130 or 143.
- An out-of-memory error halves the batch and retries; later batches stay at the smaller size; a single
  request that still does not fit is skipped as ``out_of_memory``.
- Any other exception on a batch is retried request by request, so only the failing sample is skipped
  (``model_error``, with its message). A model that fails on every one of its first requests is broken
  rather than unlucky: it stops with :class:`ModelFailed` instead of failing 80,000 times.
- A model may answer part of a batch: a :class:`SampleError` in place of an answer skips that sample
  and the answers are stored (a server that rejected one request of many). A :class:`ModelFailed` in
  place of an answer (a server that went away), or raised, stops the loop once the batch's answers are
  stored; what was stored stays, and the same command resumes.
"""

from __future__ import annotations

import resource
import time
from collections import Counter
from typing import Any

import numpy as np

from vlmbench.errors import DataError, ModelFailed, SampleError, VlmbenchError
from vlmbench.evaluation.signals import StopRequested
from vlmbench.evaluation.store import CachedPrediction, PredictionStore, RunKey
from vlmbench.evaluation.workers import loader_batches
from vlmbench.plugin.request import Batch, Request

#: Requests that fail in a row, with none answered yet, before a model counts as broken.
FAIL_FAST_AFTER = 32
_MAX_MESSAGE = 500


class ModelLoop:
    """Answers requests batch by batch and stores each batch as it completes."""

    def __init__(
        self,
        model: Any,
        store: PredictionStore,
        key: RunKey,
        *,
        generation: Any,
        batch_size: int,
        on_bad_sample: str = "skip",
        load: Any = None,
        show_progress: bool = True,
    ):
        self.model, self.store, self.key = model, store, key
        self.generation = generation
        self.max_batch = batch_size
        self.on_bad_sample = on_bad_sample
        self._load = load
        self.show_progress = show_progress
        self.loaded = load is None
        self.computed = 0
        self.model_calls = 0
        self.failures_in_a_row = 0
        self.last_error = ""
        self.interrupted = False
        self.exit_code = 0
        self.skipped: Counter[str] = Counter()
        self.examples: list[str] = []
        self.notices: list[str] = []
        self.timing: dict[str, Any] = {
            "load_seconds": 0.0,
            "model_seconds": 0.0,
            "data_wait_seconds": 0.0,
            "loop_seconds": 0.0,
        }

    def ensure_loaded(self) -> None:
        # Loaded once there is work: the runner calls this before the DataLoader starts (its workers
        # inherit what was loaded); a rerun with nothing to do never pays for loading weights.
        if self.loaded:
            return
        t0 = time.perf_counter()
        self._load()
        self.timing["load_seconds"] = time.perf_counter() - t0
        self.loaded = True

    def run(self, loader, total: int) -> None:
        if total == 0:
            return
        from tqdm.auto import tqdm

        t_loop = time.perf_counter()
        bar = tqdm(
            total=total,
            unit="sample",
            disable=not self.show_progress,
            desc=self.model.name,
            dynamic_ncols=True,
        )
        try:
            with StopRequested() as stop:
                try:
                    self._batches(loader, stop, bar)
                except KeyboardInterrupt:  # stop now (a second signal, or none in flight)
                    self.interrupted, self.exit_code = True, stop.exit_code
                    raise
            if self.computed == 0 and self.failures_in_a_row and not self.interrupted:
                raise ModelFailed(
                    f"model {self.model.name!r} failed on each of its {self.failures_in_a_row} requests; "
                    f"the last error: {self.last_error}"
                )
        finally:
            bar.close()
            self.timing["loop_seconds"] = time.perf_counter() - t_loop
            done = self.computed + sum(self.skipped.values())
            if self.timing["loop_seconds"] > 0:
                self.timing["samples_per_second"] = done / self.timing["loop_seconds"]
            self.timing["peak_memory_mb"] = _peak_memory_mb()

    def _batches(self, loader, stop: StopRequested, bar) -> None:
        waited = time.perf_counter()
        for batch in loader_batches(loader, stop):
            self.timing["data_wait_seconds"] += time.perf_counter() - waited
            for r in batch.failed:
                self.skip(r, r.problem)
            if batch.requests:
                self.ensure_loaded()
                t0 = time.perf_counter()
                self._answer(batch)
                self.timing["model_seconds"] += time.perf_counter() - t0
            bar.update(len(batch.requests) + len(batch.failed))
            if stop.requested:
                self.interrupted, self.exit_code = True, stop.exit_code
                return
            waited = time.perf_counter()

    def skip(self, r: Request, problem: SampleError) -> None:
        message = f"sample {r.sample_id} ({r.image_ref}): {problem.message}"
        if self.on_bad_sample == "stop":
            raise DataError(message)
        self.skipped[problem.reason] += 1
        self.examples.append(message[:_MAX_MESSAGE])

    # -- answering ----------------------------------------------------------------------------------

    def _answer(self, batch: Batch) -> None:
        """Answer a batch (in chunks of at most ``max_batch``) and store each chunk as it completes."""
        if batch.error is not None:
            pending = self._split(batch.requests, 1)
        elif len(batch) <= self.max_batch:
            pending = [batch]
        else:
            pending = self._split(batch.requests, self.max_batch)
        while pending:
            part = pending.pop(0)
            try:
                outputs, unanswered = self._call(part)
            except ModelFailed:
                raise
            except SampleError as problem:
                if len(part) > 1:
                    pending = self._split(part.requests, 1) + pending
                else:
                    self.skip(part.requests[0], problem)
                continue
            except Exception as exc:
                if _is_out_of_memory(exc):
                    pending = self._after_out_of_memory(part) + pending
                elif len(part) > 1:
                    pending = self._split(part.requests, 1) + pending
                else:
                    self._model_error(part.requests[0], exc)
                continue
            self.store.put_many(self.key, outputs)
            self.computed += len(outputs)
            if outputs:
                self.failures_in_a_row = 0
            # After the answers are stored: --on-bad-sample stop raises here, and so does a model that
            # can answer nothing more.
            for r, problem in unanswered:
                if isinstance(problem, ModelFailed):
                    raise problem
                self.skip(r, problem)

    def _after_out_of_memory(self, part: Batch) -> list[Batch]:
        _free_accelerator_memory()
        if len(part) == 1:
            self.skip(part.requests[0], SampleError("out_of_memory", "out of memory with a batch of one"))
            return []
        self.max_batch = max(1, len(part) // 2)
        self.notices.append(f"out of memory at batch size {len(part)}; continuing with {self.max_batch}")
        return self._split(part.requests, self.max_batch)

    def _model_error(self, r: Request, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}".strip()[:_MAX_MESSAGE]
        self.failures_in_a_row += 1
        if self.computed == 0 and self.failures_in_a_row >= FAIL_FAST_AFTER:
            raise ModelFailed(
                f"model {self.model.name!r} failed on each of its first {self.failures_in_a_row} requests; "
                f"the last error: {message}"
            ) from exc
        self.skip(r, SampleError("model_error", message))
        self.last_error = message

    def _split(self, requests: list[Request], size: int) -> list[Batch]:
        # Re-collate in this process: the worker's collated inputs belong to the whole batch.
        out = []
        for chunk in (requests[i : i + size] for i in range(0, len(requests), size)):
            try:
                out.append(Batch(chunk, self.model.collate(chunk)))
            except Exception as exc:
                if len(chunk) > 1:
                    out.extend(self._split(chunk, 1))
                elif isinstance(exc, SampleError):
                    self.skip(chunk[0], exc)
                else:
                    self._model_error(chunk[0], exc)
        return out

    def _call(self, batch: Batch) -> tuple[list[CachedPrediction], list[tuple[Request, VlmbenchError]]]:
        self.model_calls += 1
        reqs = batch.requests
        out = []
        if reqs[0].kind == "generate":
            raw = self.model.generate(batch, self.generation)
            _check_len(self.model, raw, reqs)
            for r, a in zip(reqs, raw, strict=True):
                if not isinstance(a, (SampleError, ModelFailed)):
                    out.append(CachedPrediction(r.sample_id, r.kind, r.prompt, str(a), None, r.image_sha256))
        else:
            scores = self.model.rank(batch)
            _check_len(self.model, scores, reqs)
            for r, s in zip(reqs, scores, strict=True):
                if isinstance(s, (SampleError, ModelFailed)):
                    continue
                s = [float(x) for x in s]
                if len(s) != len(r.candidates):
                    raise VlmbenchError(
                        f"model {self.model.name!r} returned {len(s)} scores for {len(r.candidates)} candidates"
                    )
                best = int(np.argmax(s)) if s else -1
                answer = r.candidates[best] if s else ""
                out.append(CachedPrediction(r.sample_id, r.kind, r.prompt, answer, s, r.image_sha256))
            raw = scores
        unanswered = [
            (r, o) for r, o in zip(reqs, raw, strict=True) if isinstance(o, (SampleError, ModelFailed))
        ]
        return out, unanswered


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


def _check_len(model: Any, outputs: list, reqs: list[Request]) -> None:
    if len(outputs) != len(reqs):
        raise VlmbenchError(
            f"model {model.name!r} returned {len(outputs)} outputs for a batch of {len(reqs)}"
        )


def _peak_memory_mb() -> dict[str, float]:
    out = {"process_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    try:
        import torch

        if torch.cuda.is_available():
            out["cuda_allocated"] = torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    return out
