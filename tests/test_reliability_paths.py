"""Paths that are not regular files: a FIFO, socket or device where a command expects a file.

Opening a FIFO for reading waits for a writer forever; every file a command reads from the user goes
through one checked reader (``vlmbench.files``) that refuses it at once. The commands run in this
process (click's runner) under a deadline: a hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from vlmbench.cli import cli
from vlmbench.files import NotRegularFile, check_regular, open_regular, read_regular
from vlmbench.plugin.loading import load_plugins

from vlmbench_testing import colour_rows, make_images, write_task

GROUP = "Hostile files"
DEADLINE_SECONDS = 30


@pytest.fixture(scope="module", autouse=True)
def _plugin_commands() -> None:
    """`study` and `sweep` come from plugins: add them to the CLI as ``vlmbench.cli.main`` does."""
    load_plugins().call_each("register_commands", cli=cli)


def _invoke(args: list[str], fifos: list[Path], env: dict[str, str] | None = None):
    """``vlmbench ARGS`` in this process; if it is still running after the deadline, its FIFOs get a
    writer (so that the blocked reader returns) and the test fails: the command waited on a FIFO."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=CliRunner().invoke(cli, args, env=env)))
    thread.start()
    thread.join(DEADLINE_SECONDS)
    if thread.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(DEADLINE_SECONDS)
        pytest.fail(f"vlmbench {' '.join(args)} waited on a FIFO")
    return box["result"]


def _refused(result, *words: str) -> None:
    """One ``Error:`` line naming what is wrong, exit status 2, no traceback."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "not a regular file" in errors[0], result.output
    assert "Traceback" not in result.output and all(w in errors[0] for w in words), errors


@pytest.fixture
def task(tmp_path: Path) -> Path:
    return write_task(tmp_path / "t", colour_rows(make_images(tmp_path / "t" / "images", 2)))


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_a_fifo_as_a_run_task_or_sweep_file_is_refused(tmp_path, task, reliability):
    fifo = _fifo(tmp_path / "fifo.yaml")
    including = tmp_path / "including.yaml"
    including.write_text(yaml.safe_dump({"include": "fifo.yaml", "task": "x"}))
    cases = {
        "a FIFO as the run file (`run --config`)": (["run", "--config", str(fifo)], "run file"),
        "a FIFO as the run file (`study -c`)": (["study", "-c", str(fifo), "-o", str(tmp_path / "s")], "run file"),
        "a FIFO as the task file (`run -t`)": (["run", "-m", "prior", "-t", str(fifo), "-o", str(tmp_path / "r")], "task file"),
        "a FIFO as the `include:` target of a task file": (
            ["run", "-m", "prior", "-t", str(including), "-o", str(tmp_path / "r")], "include",
        ),
        "a FIFO as the sweep file (`sweep -c`)": (["sweep", "-c", str(fifo), "-o", str(tmp_path / "w")], "sweep file"),
    }  # fmt: skip
    for args, word in cases.values():
        _refused(_invoke(args, [fifo]), word, str(fifo.name))
    assert not list(tmp_path.rglob("results.json"))
    reliability.record_each(
        GROUP,
        cases,
        "refused at once: one Error: line naming the file and what it is, exit 2; nothing written",
    )


def test_a_fifo_as_data_or_cache_is_refused(tmp_path, task, reliability):
    fifo = _fifo(tmp_path / "fifo.sqlite")
    data_fifo = _fifo(tmp_path / "t" / "fifo.csv")
    spec = yaml.safe_load(task.read_text())
    spec["dataset"]["path"] = "fifo.csv"
    (tmp_path / "t" / "fifo-data.yaml").write_text(yaml.safe_dump(spec))
    run = ["run", "-m", "prior", "-q", "-o", str(tmp_path / "r")]
    cases = {
        "`--cache` that is a FIFO": ([*run, "-t", str(task), "--cache", str(fifo)], fifo, "prediction cache"),
        "`--cache` that is a character device (/dev/null)": (
            [*run, "-t", str(task), "--cache", os.devnull], fifo, "character device",
        ),
        "dataset file that is a FIFO": ([*run, "-t", str(tmp_path / "t" / "fifo-data.yaml")], data_fifo, "dataset file"),
    }  # fmt: skip
    for args, pipe, word in cases.values():
        _refused(_invoke(args, [pipe]), word)
    assert not list(tmp_path.rglob("results.json"))
    reliability.record_each(
        GROUP, cases, "refused before any model work: one Error: line, exit 2; /dev/null left as it is"
    )


def test_a_fifo_as_the_score_cache_only_turns_it_off(tmp_path, task, reliability):
    fifo = _fifo(tmp_path / "scores.sqlite")
    with pytest.warns(UserWarning, match="scores.sqlite is a FIFO"):
        result = _invoke(
            ["run", "-m", "prior", "-t", str(task), "-q", "--metrics", "exact_match",
             "--cache", str(tmp_path / "cache.sqlite"), "-o", str(tmp_path / "r")],
            [fifo],
            env={"VLMBENCH_SCORE_CACHE": str(fifo)},
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and list((tmp_path / "r").rglob("results.json"))
    reliability.record(
        GROUP,
        "score cache (VLMBENCH_SCORE_CACHE) that is a FIFO",
        1,
        "one warning; scores computed without the cache, run completes (exit 0); the FIFO left as it is",
    )


def test_the_checked_reader(tmp_path, monkeypatch, reliability):
    regular = tmp_path / "file.txt"
    regular.write_text("hello")
    (tmp_path / "link.txt").symlink_to(regular)
    fifo = _fifo(tmp_path / "fifo")
    (tmp_path / "link-to-fifo").symlink_to(fifo)
    sock_path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        assert read_regular(regular) == read_regular(tmp_path / "link.txt") == b"hello"
        for path, kind in [(fifo, "FIFO"), (tmp_path / "link-to-fifo", "FIFO"), (sock_path, "socket"),
                           (Path(os.devnull), "character device")]:  # fmt: skip
            with pytest.raises(NotRegularFile, match=kind):
                read_regular(path)
            with pytest.raises(NotRegularFile, match=kind):
                check_regular(path)
    finally:
        server.close()
    with pytest.raises(IsADirectoryError):
        read_regular(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "missing")
    assert check_regular(regular) and not check_regular(tmp_path / "missing")
    # What is refused is what was opened (fstat of the descriptor), not what a path lookup said.
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **k: real_stat(regular))
    with pytest.raises(NotRegularFile, match="FIFO"), open_regular(fifo):
        pass
    reliability.record(
        GROUP,
        "FIFO, symlink to a FIFO, Unix socket and /dev/null given to the checked reader",
        4,
        "each refused without blocking, judged on the opened descriptor (no race with a path lookup)",
    )
