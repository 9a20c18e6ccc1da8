"""Requests with their images, batched by a DataLoader whose workers read and decode the images.

Workers are tied to the process that started them: they die with it (even after SIGKILL), ignore the
Ctrl-C and SIGTERM that the main process handles by finishing its batch, and a worker that dies or
stops handing back batches becomes an error after ``timeout`` seconds instead of a hang.

How many workers a run gets unless it says (:func:`default_workers`): one per core that the model
leaves free, at most four. A model on an accelerator, or one that does little CPU work, leaves all
cores but the model loop's; a torch model on the CPU keeps one core per torch thread busy, and a
worker on one of those cores slows every operation of the model (its threads wait for each other)
by more than the worker saves (measured in benchmarks/harness_overhead.py, docs/performance.md).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from vlmbench.errors import VlmbenchError
from vlmbench.plugin.request import Batch, Request
from vlmbench.tasks.dataset import ImageSource
from vlmbench.tasks.images import ImageProblem, decode_image, sha256_bytes

# Long enough for a slow processor on a large batch, short enough that a stuck worker is noticed.
DEFAULT_WORKER_TIMEOUT = 600.0
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
):
    from torch.utils.data import DataLoader

    batches = batch_order(requests, batch_size)
    workers = min(num_workers, len(batches))
    return DataLoader(
        RequestImages(requests, source, keep_bytes=bool(getattr(model, "wants_image_bytes", False))),
        batch_sampler=batches,
        collate_fn=Collate(model),
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        worker_init_fn=functools.partial(_init_worker, os.getpid()) if workers else None,
        timeout=timeout if workers else 0,
    )


def iterate(loader) -> Iterator[Batch]:
    """The loader's batches; a worker that died or stopped answering becomes a clear error."""
    it = iter(loader)
    try:
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except RuntimeError as exc:
                text = str(exc)
                if text.startswith(("DataLoader timed out", "DataLoader worker (pid")):
                    raise VlmbenchError(
                        f"a DataLoader worker failed: {text.splitlines()[0]} (a full /dev/shm, a file-size "
                        "limit or a crash can cause this; answers stored so far are kept — rerun the same "
                        "command to resume, with --num-workers 0 to avoid worker processes)"
                    ) from None
                raise
            yield batch
    finally:
        with contextlib.suppress(Exception):
            it._shutdown_workers()


def _init_worker(main_pid: int, _worker_id: int) -> None:
    # The main process turns Ctrl-C and SIGTERM into "finish the batch, then stop"; a worker must not
    # die first and take the batch in flight with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with(main_pid)


def _die_with(main_pid: int) -> None:
    """Ask the kernel to kill this worker when its parent dies (Linux). Without it a worker of a
    SIGKILLed run can block forever on a full result pipe, holding its memory."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != main_pid:  # the parent died before the request took effect
        os._exit(1)
