"""DataLoader workers, one policy for every loader vlmbench starts (evaluation here, fine-tuning through
``vlmbench.api.data_loader``):

- **Workers die with their process**, even after SIGKILL (``PR_SET_PDEATHSIG`` on Linux): a worker of
  a killed run never lives on, reparented, holding its memory.
- **The main process decides what a signal means.** Workers ignore Ctrl-C and SIGTERM sent to the
  whole process group (the terminal's Ctrl-C, a service manager's stop): a worker dying first would
  turn "finish the batch in flight" into a crash. Once the main process ends its loader, SIGTERM ends
  a worker at once, so a worker stuck on a slow or hung file costs no waiting.
- **No hang.** A worker that dies or stops handing back batches becomes a :class:`VlmbenchError` after
  ``timeout`` seconds (while the main process waits for a batch).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from vlmbench.errors import VlmbenchError
from vlmbench.evaluation.signals import StopRequested

# Long enough for a slow processor on a large batch, short enough that a stuck worker is noticed.
DEFAULT_WORKER_TIMEOUT = 600.0
# Batches each worker prepares ahead of the main process.
PREFETCH_BATCHES = 4
# How long a worker asked to end may take before it is killed.
_END_GRACE_SECONDS = 2.0


def data_loader(
    dataset: Any,
    batches: list[list[int]],
    collate: Any,
    *,
    num_workers: int,
    timeout: float = DEFAULT_WORKER_TIMEOUT,
    generator: Any = None,
) -> Any:
    """A ``torch.utils.data.DataLoader`` over ``batches`` (lists of dataset indices) whose workers
    follow the policy above; iterate it with :func:`loader_batches`."""
    from torch.utils.data import DataLoader

    workers = min(num_workers, len(batches))
    return DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        prefetch_factor=PREFETCH_BATCHES if workers else None,
        worker_init_fn=WorkerInit(os.getpid()) if workers else None,
        timeout=timeout if workers else 0,
        generator=generator,
    )


def loader_batches(loader: Iterable[Any], stop: StopRequested | None = None) -> Iterator[Any]:
    """The loader's batches; a worker that died or stopped answering becomes a clear error. While it
    waits for a batch, ``stop`` knows that none is in flight. However iteration ends (exhausted, an
    error, an interruption, the caller leaving the loop), the workers are gone when it returns."""
    it = iter(loader)
    finished = False
    try:
        while True:
            try:
                with stop.waiting() if stop is not None else contextlib.nullcontext():
                    batch = next(it)
            except StopIteration:
                finished = True
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
        _end_workers(it, loader, at_once=not finished)


def _end_workers(it: Any, loader: Any, *, at_once: bool) -> None:
    """Shut the iterator's workers down. ``at_once`` (iteration ended early): SIGTERM them first, so
    that one stuck on a file ends now instead of being waited for; the last resort is SIGKILL."""
    workers = list(getattr(it, "_workers", ()))
    init = getattr(loader, "worker_init_fn", None)
    if isinstance(init, WorkerInit):
        init.ending.value = 1  # from now on SIGTERM ends them (see WorkerInit)
    if at_once:
        for w in workers:
            with contextlib.suppress(Exception):
                if w.is_alive():
                    w.terminate()
        for w in workers:
            with contextlib.suppress(Exception):
                w.join(_END_GRACE_SECONDS)
    with contextlib.suppress(Exception):
        it._shutdown_workers()
    for w in workers:  # a worker deaf to SIGTERM (stuck in C code): its loader is gone, so kill it
        with contextlib.suppress(Exception):
            if w.is_alive():
                w.kill()
                w.join(_END_GRACE_SECONDS)


class WorkerInit:
    """``worker_init_fn`` of every loader: ties the worker to the main process (``main_pid``) and sets
    its signals. ``ending`` is shared memory the main process sets when it ends the loader: until
    then the worker ignores SIGTERM, afterwards SIGTERM ends it."""

    def __init__(self, main_pid: int):
        self.main_pid = main_pid
        self.ending = multiprocessing.RawValue("b", 0)

    def __call__(self, _worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        sys.excepthook = _quiet_abandoned_transfers(sys.excepthook)
        _die_with(self.main_pid)

    def _on_sigterm(self, signum, frame) -> None:
        if self.ending.value:
            os._exit(0)  # exit status 0: torch's SIGCHLD watch in the main process reports no failure


def _quiet_abandoned_transfers(previous: Any) -> Any:
    """``sys.excepthook`` for a worker. Tensors reach the main process as file descriptors, handed over by
    multiprocessing's resource-sharer thread in the worker; when the main process stops (Ctrl-C, SIGTERM)
    in the middle of such a handover, that thread prints the dropped connection as a traceback. The main
    process reports the stop itself, so that one case is not shown; any other error is."""

    def hook(kind: type[BaseException], error: BaseException, tb: Any) -> None:
        frames, abandoned = tb, False
        while frames is not None:
            code = frames.tb_frame.f_code
            abandoned |= code.co_name == "_serve" and code.co_filename.endswith("resource_sharer.py")
            frames = frames.tb_next
        if not (abandoned and issubclass(kind, (EOFError, ConnectionError))):
            previous(kind, error, tb)

    return hook


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
