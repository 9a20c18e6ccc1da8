"""Processes and signals: DataLoader workers never outlive their command, and a stopped command stops
promptly and says what is true.

Real subprocesses with default settings (DataLoader workers on), as a user or a service manager starts
and stops them: `vlmbench finetune` and `vlmbench study` killed mid-training, a run stopped while a
worker is stuck. Workers are found by PID (the children of the command, from /proc) before the signal.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from vlmbench.errors import Interrupted
from vlmbench.evaluation.runner import evaluate
from vlmbench.plugin.hookspecs import hookimpl
from vlmbench.plugin.loading import load_plugins
from vlmbench.plugin.model import Model

from vlmbench_testing import (
    REPO,
    cached_answers,
    child_pids,
    colour_rows,
    make_images,
    start_cli,
    stop,
    survivors,
    wait_until,
    write_task,
)

GROUP = "Crashes and interruptions"
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc for processes")


# One torch thread: these tiny models train fastest that way, and the suite shares its cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    wait_until(condition, proc, timeout)
    assert proc.poll() is None, "the command ended before the signal"
    assert condition(), "the command did not get there in time"


def _training(pattern: str):
    """True once a fine-tuning run matching ``pattern`` has logged a training step."""

    def check() -> bool:
        return any('"train"' in Path(p).read_text() for p in glob.glob(pattern))

    return check


# -- training workers -------------------------------------------------------------------------------


def _finetune_argv(squares_yaml: Path, blip: Path, out: Path) -> list[str]:
    return ["finetune", "-t", str(squares_yaml), "-o", str(out), "--pretrained", str(blip), "--device", "cpu",
            "--epochs", "1000", "-b", "2", "--val-split", "", "--log-every", "1"]  # fmt: skip


def _study_argv(tmp_path: Path, squares_yaml: Path, blip: Path, out: Path) -> list[str]:
    run_file = tmp_path / "study.yaml"
    run_file.write_text(yaml.safe_dump({"models": ["prior"], "tasks": [str(squares_yaml)]}))
    lora = [f"pretrained={blip}", "epochs=1000", "batch_size=2", "val_split=", "log_every=1", "device=cpu"]
    return ["study", "-c", str(run_file), "-o", str(out), "--no-quantization", "--metrics", "exact_match",
            "-q", *(a for s in lora for a in ("--lora-set", s))]  # fmt: skip


@pytest.fixture(scope="module")
def squares_yaml(tmp_path_factory) -> Path:
    from finetune.squares import make_squares_task

    return make_squares_task(tmp_path_factory.mktemp("squares"), {"train": 16, "test": 4}).yaml


@pytest.mark.slow(seconds=15)
@pytest.mark.parametrize(
    ("command", "sig"),
    [("finetune", signal.SIGKILL), ("finetune", signal.SIGTERM), ("study", signal.SIGKILL), ("study", signal.SIGINT)],
    ids=["finetune-SIGKILL", "finetune-SIGTERM", "study-SIGKILL", "study-SIGINT"],
)  # fmt: skip
def test_training_workers_die_with_their_command(
    command, sig, tmp_path, squares_yaml, tiny_checkpoint, reliability
):
    """The fine-tuning loader's workers (two by default) are gone within seconds of the command, however
    it ends; Ctrl-C and SIGTERM stop training at once with exit 130/143 and how to continue."""
    blip, out, log = tiny_checkpoint("blip"), tmp_path / "out", tmp_path / "stderr.txt"
    if command == "finetune":
        argv, metrics = _finetune_argv(squares_yaml, blip, out), str(out / "metrics.jsonl")
    else:
        argv, metrics = (
            _study_argv(tmp_path, squares_yaml, blip, out),
            str(out / "lora" / "*" / "metrics.jsonl"),
        )
    proc = start_cli(argv, ONE_THREAD, stderr=log)
    try:
        _wait_for(_training(metrics), proc)
        workers = child_pids(proc.pid)
        stop(proc, sig, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = log.read_text()
    assert len(workers) == 2, (workers, err)  # `finetune`'s default --num-workers
    assert survivors(workers) == [], "a training DataLoader worker outlived its command"
    name = signal.Signals(sig).name
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        outcome = "both workers gone within seconds (they die with the command)"
    else:
        assert proc.returncode == 128 + sig, err
        assert "Traceback" not in err and "Aborted!" not in err
        message = err.strip().splitlines()[-1]
        assert re.search(r"vlmbench: interrupted: fine-tuning \S+ stopped at step \d+;", message), message
        hint = "run the same command again to resume" if command == "study" else "--resume|start over"
        assert re.search(hint, message), message
        outcome = (
            f"exit {128 + sig} at once with the step reached, the latest checkpoint and how to resume; "
            "both workers gone within seconds"
        )
    reliability.record(GROUP, f"{name} to `vlmbench {command}` mid-training (default workers)", 1, outcome)


# -- a stuck worker -----------------------------------------------------------------------------------


@pytest.mark.slow(seconds=5)
def test_sigterm_while_a_worker_is_stuck_stops_at_once(plugin_env, tmp_path, reliability):
    """Waiting on a stuck worker there is no batch in flight: SIGTERM stops now, keeping what was stored,
    instead of waiting out the 600 s worker timeout."""
    rows = colour_rows(make_images(tmp_path / "t" / "images", 8))
    rows[5]["question"] = "hang?"  # the shortest prompt: the last batch, which a worker never finishes
    task = write_task(tmp_path / "t", rows)
    cache, log = tmp_path / "cache.sqlite", tmp_path / "stderr.txt"
    argv = ["run", "-m", "slow-echo", "-a", "hang_on=hang", "-t", str(task), "-b", "4", "--cache", str(cache),
            "-o", str(tmp_path / "runs"), "-q"]  # fmt: skip
    proc = start_cli(argv, {**ONE_THREAD, **plugin_env}, stderr=log)
    try:
        _wait_for(
            lambda: cached_answers(cache) >= 12, proc, timeout=120
        )  # three batches answered, the fourth stuck
        workers = child_pids(proc.pid)
        time.sleep(0.3)
        started = time.time()
        stop(proc, signal.SIGTERM)
        took = time.time() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    err = log.read_text()
    assert proc.returncode == 143 and took < 15, (took, err)
    assert workers and survivors(workers) == []
    assert cached_answers(cache) == 12 and "12 answers from this run are stored in the cache" in err
    reliability.record(
        GROUP,
        "SIGTERM while a DataLoader worker is stuck (no batch in flight)",
        1,
        f"stopped in {took:.0f} s (not the 600 s worker timeout), exit 143; stored answers kept; worker gone",
    )


# -- what an interrupted run says ---------------------------------------------------------------------


class SelfInterrupting(Model):
    """Answers, and sends this process Ctrl-C during its second batch (as a user would)."""

    calls = 0

    def generate(self, batch, generation):
        SelfInterrupting.calls += 1
        if SelfInterrupting.calls == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return ["x"] * len(batch)


class _Plugin:
    @hookimpl
    def register_models(self, register):
        register("self-interrupting", f"{__name__}:SelfInterrupting")


def test_an_interrupted_run_says_what_was_stored(tmp_path, tiny_task, reliability):
    plugins = load_plugins(extra=[_Plugin()])
    try:
        messages = {}
        for cache in (tmp_path / "cache.sqlite", False):
            SelfInterrupting.calls = 0
            with pytest.raises(Interrupted) as exc:
                evaluate("self-interrupting", tiny_task, plugins=plugins, cache=cache, batch_size=4,
                         num_workers=0, progress=False, output_dir=tmp_path / "runs")  # fmt: skip
            assert exc.value.exit_code == 130
            messages[cache is False] = str(exc.value)
    finally:
        load_plugins(reload=True)
    assert "8 answers from this run are stored in the cache; run the same command again" in messages[False]
    assert "stored in the cache" not in messages[True] and "resume" not in messages[True].split("(")[0]
    assert "--no-cache kept the 8 answers of this run in memory only, so none is stored" in messages[True]
    reliability.record(
        GROUP,
        "Ctrl-C during a `--no-cache` run",
        1,
        "exit 130; the message says nothing was stored and that the command starts over (not 'resume')",
    )


def test_every_dataloader_follows_the_one_policy(reliability):
    """Only the policy's own module builds a DataLoader: every other loader (evaluation, fine-tuning's
    training and validation) gets its workers from ``data_loader``."""
    sources = [p for d in ("vlmbench", "plugins") for p in (REPO / d).rglob("*.py")]
    builders = sorted(
        str(p.relative_to(REPO)) for p in sources if re.search(r"\bDataLoader\(", p.read_text())
    )
    assert builders == ["vlmbench/evaluation/workers.py"]
    users = [p for p in sources if re.search(r"\bdata_loader\(", p.read_text())]
    assert {p.name for p in users} >= {"workers.py", "loader.py", "data.py"}
    reliability.record(
        GROUP,
        f"static scan of {len(sources)} modules for DataLoaders",
        1,
        "one builder (evaluation/workers.py: workers die with the command, ignore group signals, time out); "
        "evaluation and fine-tuning both use it",
    )
