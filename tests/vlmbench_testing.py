"""Helpers shared by the test modules (imported as ``vlmbench_testing``; fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SAMPLE_TASK = REPO / "tasks" / "abo_sample"  # the bundled sample: its CSV and images

# The fault-injection test files (relative to tests/): each records its faults for docs/reliability.md.
RELIABILITY_FILES = (
    "test_reliability.py",
    "test_bad_inputs_cli.py",
    "test_reliability_artifacts.py",
    "test_reliability_adapters.py",
    "test_reliability_caches.py",
    "test_reliability_options.py",
    "test_reliability_outputs.py",
    "test_reliability_outputs_replace.py",
    "test_reliability_paths.py",
    "test_reliability_processes.py",
    "test_reliability_text.py",
    "models/test_hostile_model_files.py",
    "data/test_abo_gemini.py",
    "data/test_reliability_download_secrets.py",
)

COLOURS = {"red": (220, 30, 30), "green": (40, 160, 60), "blue": (40, 80, 210), "yellow": (240, 220, 40)}


def closest_colour(image: Image.Image) -> str:
    """The name in :data:`COLOURS` nearest the image's mean colour: how the test models "see"."""
    px = np.asarray(image).reshape(-1, 3).mean(0)
    return min(COLOURS, key=lambda n: ((px - COLOURS[n]) ** 2).sum())


def image_colours(n: int) -> list[str]:
    """The colours of ``n`` generated images: the names of :data:`COLOURS` in turn."""
    names = list(COLOURS)
    return [names[i % len(names)] for i in range(n)]


def sample_row(image_id: str, path: str, question: str, answer: str, difficulty: int) -> dict:
    """A row of a task CSV in the study's columns."""
    return {
        "image_id": image_id,
        "path": path,
        "question": question,
        "answer": answer,
        "difficulty": difficulty,
    }


def make_images(root: Path, n: int) -> list[tuple[str, str]]:
    """``n`` solid-colour JPEG images under ``root/xx/``; returns (relative path, colour) pairs."""
    out = []
    for i, colour in enumerate(image_colours(n)):
        rel = f"{i:02x}/img{i:03d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), COLOURS[colour]).save(root / rel, quality=95)
        out.append((rel, colour))
    return out


def write_task(
    folder: Path,
    rows: list[dict],
    extra: dict | None = None,
    name: str = "tiny",
    filename: str = "data.csv",
) -> Path:
    """A task YAML + CSV (the study's columns) in ``folder``; images are expected in folder/images."""
    folder.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0].keys()) if rows else ["image_id", "path", "question", "answer", "difficulty"]
    with open(folder / filename, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    spec = {"task": name, "version": 1, "dataset": {"path": filename, "image_root": "images"}}
    spec.update(extra or {})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def colour_rows(images: list[tuple[str, str]]) -> list[dict]:
    """Two questions per image: its colour (difficulty 0) and a constant answer (difficulty 3)."""
    rows = []
    for rel, colour in images:
        stem = Path(rel).stem
        rows.append(sample_row(stem, rel, "What colour is the square?", colour, 0))
        rows.append(sample_row(stem, rel, "What shape is shown?", "square", 3))
    return rows


def run_cli(
    args: list[str], env: dict | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python -m vlmbench ARGS`` in a fresh process (what a user's shell does)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "vlmbench", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


def invoke_cli(args: list[str]) -> subprocess.CompletedProcess:
    """Run ``vlmbench ARGS`` in this process, for tests whose subject is a command's checks, not the
    process: the same group, error handling and exit codes as ``run_cli``, without a process start
    (about half a second of imports each). A traceback fails the test: exceptions are not caught."""
    from click.testing import CliRunner

    from vlmbench.cli import cli

    result = CliRunner().invoke(cli, args, prog_name="vlmbench", catch_exceptions=False)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


# -- a vlmbench process in the background: started, signalled, its cache and its workers watched --------


def start_cli(args: list[str], env: dict | None = None, stderr: Path | None = None) -> subprocess.Popen:
    """Start ``python -m vlmbench ARGS`` in the background (``env`` added to this process's), its
    output discarded but for stderr written to the file ``stderr``: a file, not a pipe, since a worker
    that outlived its command would hold a pipe open and an unread pipe that fills stalls the command."""
    with open(stderr, "w") if stderr else contextlib.nullcontext(subprocess.DEVNULL) as err:
        return subprocess.Popen(
            [sys.executable, "-m", "vlmbench", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **(env or {})},
        )


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> bool:
    """Poll ``condition`` until it holds, ``proc`` ends or ``timeout`` seconds pass; whether it holds."""
    deadline = time.time() + timeout
    while not condition() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    return condition()


def stop(proc: subprocess.Popen, sig: int, timeout: float = 60) -> int:
    """Send ``sig`` to ``proc`` and wait for it to end; its exit status. One still running after
    ``timeout`` seconds is killed and the wait's ``TimeoutExpired`` fails the test."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def cached_answers(db: Path) -> int:
    """How many answers the prediction cache ``db`` holds: 0 while the run has not created it yet (it
    is not created here) or holds it locked."""
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=1)) as con:
            return con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the DataLoader workers of a command), read from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def survivors(pids: list[int], within: float = 5.0) -> list[int]:
    """Which of ``pids`` are still alive after ``within`` seconds; those are killed (the test failed)."""
    deadline = time.time() + within
    while any(pid_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if pid_alive(p)]
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left
