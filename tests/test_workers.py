"""DataLoader workers and the load phase: how many workers a run gets by default (and why, in
results.json), and that what a model prepares while loading reaches the workers without being built
again there."""

from __future__ import annotations

import os

import pytest
import torch

from vlmbench.evaluation.loader import MAX_DEFAULT_WORKERS, available_cores, default_workers
from vlmbench.evaluation.runner import RunConfig, evaluate
from vlmbench.plugin.hookspecs import hookimpl
from vlmbench.plugin.loading import load_plugins
from vlmbench.plugin.model import Model
from vlmbench.plugin.registry import ModelEntry

from vlmbench_testing import colour_rows, make_images, write_task

ENTRY = ModelEntry(name="t", target="x:Y")


class Light(Model):
    """No torch weights: answers from the question alone."""

    def generate(self, batch, generation):
        return [r.question.split()[-1] for r in batch.requests]


class Torchy(Light):
    """Holds a torch module, as a model computing on the CPU does."""

    def load(self):
        self.net = torch.nn.Linear(2, 2)


class Wrapped(Light):
    """Holds its module one level down (a wrapper object), as some plugins do."""

    def load(self):
        self.runner = type("Runner", (), {})()
        self.runner.model = torch.nn.Linear(2, 2)


class Prepared(Light):
    """Builds a table in ``setup``; ``collate`` reports which process built it and which uses it."""

    setups: list[int] = []

    def setup(self, requests):
        Prepared.setups.append(len(requests))
        self.table = {"built_in": os.getpid()}

    def collate(self, requests):
        return {"built_in": self.table["built_in"], "used_in": os.getpid()}

    def generate(self, batch, generation):
        return [f"{batch.inputs['built_in']}-{batch.inputs['used_in']}" for _ in batch.requests]


class _Plugin:
    @hookimpl
    def register_models(self, register):
        for name, cls in (("light", Light), ("torchy", Torchy), ("prepared", Prepared)):
            register(name, f"{__name__}:{cls.__name__}", summary="test")


@pytest.fixture
def plugins():
    Prepared.setups.clear()
    yield load_plugins(extra=[_Plugin()])
    load_plugins(reload=True)


@pytest.fixture
def task(tmp_path):
    images = make_images(tmp_path / "t" / "images", 6)
    return write_task(tmp_path / "t", colour_rows(images))


def _loaded(cls) -> Model:
    model = cls(ENTRY, {}, device="cpu")
    model.load()
    return model


# -- the default count -------------------------------------------------------------------------------


def test_a_torch_model_on_the_cpu_gets_only_the_cores_its_threads_leave(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    count, reason = default_workers(_loaded(Torchy), "cpu", cores=2)
    assert count == 0 and "2 torch threads on 2 cores" in reason and "no core to spare" in reason
    assert default_workers(_loaded(Torchy), "cpu", cores=5)[0] == 3
    assert default_workers(_loaded(Wrapped), "cpu", cores=2)[0] == 0
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert default_workers(_loaded(Torchy), "cpu", cores=32) == (
        MAX_DEFAULT_WORKERS,
        f"the model computes on the CPU with 8 torch threads, leaving 24 of 32 cores for workers "
        f"(at most {MAX_DEFAULT_WORKERS})",
    )


def test_an_accelerator_or_a_light_model_leaves_every_core_but_the_loops():
    count, reason = default_workers(_loaded(Torchy), "cuda:0", cores=2)
    assert count == 1 and reason.startswith("the model runs on cuda:0")
    assert default_workers(_loaded(Light), "cpu", cores=3) == (
        2,
        "the model does little CPU work, leaving 2 of 3 cores for workers",
    )
    assert default_workers(_loaded(Light), "cpu", cores=1)[0] == 0
    assert default_workers(_loaded(Light), "mps", cores=16)[0] == MAX_DEFAULT_WORKERS


def test_weights_elsewhere_than_the_cpu_do_not_count_as_cpu_work():
    model = Torchy(ENTRY, {}, device="cpu")
    model.net = torch.nn.Linear(2, 2, device="meta")
    assert not model.computes_on_cpu()
    assert not Light(ENTRY, {}, device="cpu").computes_on_cpu()
    assert _loaded(Torchy).computes_on_cpu() and _loaded(Wrapped).computes_on_cpu()


def test_processes_of_one_data_parallel_run_share_the_cores(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    alone = available_cores()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert available_cores() == max(1, alone // 2)


def test_the_count_and_its_reason_are_recorded(tmp_path, task, plugins):
    run = evaluate("torchy", task, plugins=plugins, output_dir=tmp_path / "a", progress=False)
    config = run.results["config"]
    assert (config["num_workers"], config["num_workers_reason"]) == default_workers(_loaded(Torchy), "cpu")
    given = evaluate(
        "torchy", task, plugins=plugins, output_dir=tmp_path / "b", progress=False, num_workers=1, cache=False
    )
    assert (given.results["config"]["num_workers"], given.results["config"]["num_workers_reason"]) == (
        1,
        "given",
    )
    # Answered from the cache: no loader, no workers.
    again = evaluate("torchy", task, plugins=plugins, output_dir=tmp_path / "a", progress=False)
    assert again.computed == 0 and again.results["config"]["num_workers"] == 0
    assert again.results["config"]["num_workers_reason"] == "no answers to compute"


def test_an_explicit_count_wins_and_none_means_the_default():
    assert RunConfig().num_workers is None
    assert RunConfig(num_workers=3).num_workers == 3


# -- the load phase -------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1])
def test_what_setup_builds_reaches_the_workers(tmp_path, task, plugins, workers):
    run = evaluate(
        "prepared", task, plugins=plugins, output_dir=tmp_path / "runs", progress=False, num_workers=workers
    )
    assert Prepared.setups == [12]  # once, with every request to answer, in the main process
    built, used = {tuple(map(int, a.split("-"))) for a in _raw_answers(run.run_dir)}.pop()
    assert built == os.getpid()
    assert (used == os.getpid()) == (workers == 0)  # a worker used the main process's table


def test_setup_is_not_called_when_every_answer_is_cached(tmp_path, task, plugins):
    evaluate("prepared", task, plugins=plugins, output_dir=tmp_path / "runs", progress=False, num_workers=0)
    evaluate("prepared", task, plugins=plugins, output_dir=tmp_path / "runs", progress=False, num_workers=0)
    assert Prepared.setups == [12]


def _raw_answers(run_dir) -> list[str]:
    import json

    return [json.loads(line)["raw"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def test_a_decoder_vlm_builds_its_candidate_tables_while_loading(tiny_checkpoint, one_torch_thread):
    from vlmbench.plugin.registry import load_target
    from vlmbench.plugin.request import Request

    entry = load_plugins().models.get("qwen2.5-vl")
    model = load_target(entry.target).create(entry, {"pretrained": str(tiny_checkpoint("qwen2.5-vl"))})
    model.load()
    common = {"question": "q", "image_ref": "a.jpg", "image_id": "a"}
    colours, rooms = ("red", "blue"), ("kitchen", "office", "bedroom")
    requests = [
        Request("1", "rank", "q", candidates=colours, **common),
        Request("2", "rank", "q", candidates=rooms, **common),
        Request("3", "rank", "q", candidates=colours, **common),
    ]
    model.setup(requests)
    tables = dict(model._candidate_tokens._cache)
    assert [key[0] for key in tables] == [colours, rooms]  # the most common set first
    end = model.end_of_answer_id()
    assert all(ids[-1] == end for key in tables for ids in tables[key])
    assert model.candidate_ids(colours) is tables[(colours, model.answer_prefix, end)]  # not built again
    model.setup([Request("4", "generate", "q", **common)])  # nothing to build for generate requests
    assert dict(model._candidate_tokens._cache) == tables


@pytest.mark.parametrize(
    ("error", "shown"), [(EOFError, False), (ConnectionResetError, False), (ValueError, True)]
)
def test_a_transfer_the_main_process_abandoned_is_not_a_traceback_in_the_worker(monkeypatch, error, shown):
    """A worker hands tensors over through multiprocessing's resource-sharer thread; when the main process
    stops mid-handover that thread reports the dropped connection through sys.excepthook. The worker's
    hook leaves that one case out and shows any other error. (Runs the real thread function.)"""
    import sys
    import threading
    from multiprocessing.resource_sharer import _ResourceSharer

    from vlmbench.evaluation.workers import _quiet_abandoned_transfers

    class Conn:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def recv(self):
            return None  # the stop message: the thread's loop ends

    outcomes = iter([error("the other end went away"), Conn()])

    class Listener:
        def accept(self):
            outcome = next(outcomes)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

    seen = []
    monkeypatch.setattr(sys, "excepthook", _quiet_abandoned_transfers(lambda kind, *rest: seen.append(kind)))
    sharer = _ResourceSharer.__new__(_ResourceSharer)
    sharer._listener, sharer._cache = Listener(), {}
    thread = threading.Thread(target=sharer._serve)  # it blocks signals: never on the test's own thread
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert seen == ([error] if shown else [])
