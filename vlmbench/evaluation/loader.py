"""Requests with their images, batched by a DataLoader whose workers read and decode the images.

Workers are started as every loader of vlmbench starts them (:mod:`vlmbench.evaluation.workers`): they
die with the main process, leave signals to it, and a worker that dies or hangs is an error, not a hang.

How many workers a run gets unless it says (:func:`default_workers`): one per core that the model
leaves free, at most four. A model on an accelerator, or one that does little CPU work, leaves all
cores but the model loop's; a torch model on the CPU keeps one core per torch thread busy, and a
worker on one of those cores slows every operation of the model (its threads wait for each other)
by more than the worker saves (measured in benchmarks/harness_overhead.py, docs/performance.md).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from vlmbench.evaluation.workers import DEFAULT_WORKER_TIMEOUT, data_loader
from vlmbench.plugin.request import Batch, Request
from vlmbench.tasks.dataset import ImageSource
from vlmbench.tasks.images import ImageProblem, decode_image, sha256_bytes

# Beyond four, workers add memory and start-up time while the model, not the data, sets the pace.
MAX_DEFAULT_WORKERS = 4


class RequestImages:
    """Map-style dataset: a request with its image decoded (in a worker process when there are any).

    With ``keep_bytes`` the request carries the file's bytes instead of the decoded image: the image is
    still decoded once, so that an unreadable one is skipped here rather than sent to a server."""

    def __init__(self, requests: list[Request], source: ImageSource, keep_bytes: bool = False):
        self.requests = requests
        self.source = source
        self.keep_bytes = keep_bytes

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, i: int) -> Request:
        request = replace(self.requests[i])
        try:
            data = self.source.read(request.image_ref)
            request.image_sha256 = sha256_bytes(data)
            image = decode_image(data, name=request.image_ref)
            if self.keep_bytes:
                request.image_bytes = data
            else:
                request.image = image
        except ImageProblem as problem:
            request.problem = problem
        return request


class Collate:
    """Splits a batch into readable and unreadable requests and lets the model prepare its inputs."""

    def __init__(self, model: Any):
        self.model = model

    def __call__(self, requests: list[Request]) -> Batch:
        good = [r for r in requests if r.problem is None]
        failed = [r for r in requests if r.problem is not None]
        batch = Batch(good, None, failed)
        if good:
            try:
                batch.inputs = self.model.collate(good)
            except Exception as exc:
                # One bad request must not cost its batch: the model loop retries request by request.
                batch.error = f"{type(exc).__name__}: {exc}"
        return batch


def batch_order(requests: list[Request], batch_size: int) -> list[list[int]]:
    """Longest prompts first: similar lengths share a batch (less padding), and an out-of-memory error
    shows up in the first batch rather than hours in."""
    order = sorted(range(len(requests)), key=lambda i: (-len(requests[i].prompt), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and ``taskset`` set),
    shared with the other processes of a data-parallel run on the same machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    return max(1, cores // max(1, local_processes))


def default_workers(model: Any, device: str, cores: int | None = None) -> tuple[int, str]:
    """The DataLoader worker count for a run that did not choose one, and why (for results.json).
    Call it once the model is loaded."""
    cores = cores or available_cores()
    if not device.startswith("cpu"):
        busy, why = 1, f"the model runs on {device}"
    elif model.computes_on_cpu():
        import torch

        busy = torch.get_num_threads()
        why = f"the model computes on the CPU with {busy} torch thread{'s' * (busy != 1)}"
    else:
        busy, why = 1, "the model does little CPU work"
    workers = min(MAX_DEFAULT_WORKERS, max(0, cores - busy))
    spare = cores - busy
    if workers == 0:
        return 0, f"{why} on {cores} core{'s' * (cores != 1)}: no core to spare for a worker"
    return workers, (
        f"{why}, leaving {spare} of {cores} cores for workers"
        + (f" (at most {MAX_DEFAULT_WORKERS})" if spare > MAX_DEFAULT_WORKERS else "")
    )


def make_loader(
    requests: list[Request],
    source: ImageSource,
    model: Any,
    *,
    batch_size: int,
    num_workers: int,
    timeout: float = DEFAULT_WORKER_TIMEOUT,
) -> Any:
    """The run's DataLoader: requests in :func:`batch_order`, images read in workers
    (:mod:`vlmbench.evaluation.workers` says how they are started and ended)."""
    return data_loader(
        RequestImages(requests, source, keep_bytes=bool(getattr(model, "wants_image_bytes", False))),
        batch_order(requests, batch_size),
        Collate(model),
        num_workers=num_workers,
        timeout=timeout,
    )
