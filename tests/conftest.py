"""Shared fixtures: small tasks on generated images, CLI helpers, plugin packages installed for tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from vlmbench_testing import RELIABILITY_FILES, REPO, colour_rows, make_images, write_task


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # pytest-xdist hands tests to its workers in collection order: the slow end-to-end tests go first,
    # the longest (``@pytest.mark.slow(seconds=N)``, N measured on 2 cores) before the rest, so that no
    # worker picks up a minutes-long test while the others are finishing.
    def expected(item: pytest.Item) -> float:
        mark = item.get_closest_marker("slow")
        return -1.0 if mark is None else float(mark.kwargs.get("seconds", 0))

    items.sort(key=expected, reverse=True)


@pytest.fixture
def tiny_task(tmp_path: Path) -> Path:
    """A 12-image, 24-question task with a difficulty mix, in a temporary folder."""
    images = make_images(tmp_path / "task" / "images", 12)
    return write_task(tmp_path / "task", colour_rows(images))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's prediction cache from tests, and never download: tests are offline
    whatever the machine can reach (metrics whose models are absent are reported as skipped)."""
    monkeypatch.setenv("VLMBENCH_CACHE_DIR", str(tmp_path / "vlmbench-cache"))
    # The score cache is shared by the whole test run, as a user's is by every run on their machine
    # (see _share_wordnet); a test that checks the cache itself gives itself a file of its own.
    if _SHARED_SCORE_CACHE in os.environ:
        monkeypatch.setenv("VLMBENCH_SCORE_CACHE", os.environ[_SHARED_SCORE_CACHE])
    else:
        monkeypatch.delenv("VLMBENCH_SCORE_CACHE", raising=False)
    monkeypatch.setenv("VLMBENCH_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest on one thread: on a busy machine, intra-op threads of kernels this small
    mostly wait for each other. Restored after the test. Suites of tiny models use it automatically."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """``tiny_checkpoint("blip")`` -> a directory with a tiny checkpoint (built on first use, once per test
    run). Under pytest-xdist each worker is a process with a session of its own: the checkpoints are built
    once for all of them, in the folder their temporary folders share, one builder at a time."""
    import tiny_models
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "tiny-checkpoints"
    root.mkdir(exist_ok=True)

    def get(name: str) -> Path:
        with FileLock(str(root / f"{name}.lock")):
            return tiny_models.build(name, root)

    return get


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The example third-party plugin and the test-helper plugins, pip-installed into a private
    folder; the returned environment puts that folder on PYTHONPATH for subprocesses."""
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
            "--no-index", "--target", str(target),
            str(REPO / "tests" / "thirdparty_plugin"), str(REPO / "tests" / "helper_plugins"),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    path = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"PYTHONPATH": path}


# -- reliability report ---------------------------------------------------------------------------
# Fault-injection tests call `reliability.record(...)`; with VLMBENCH_RELIABILITY_REPORT=PATH set, the
# session writes the collected table there (docs/reliability.md is produced this way).


class _Reliability:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int, str, str]] = []

    def record(self, group: str, fault: str, tries: int, outcome: str, lost: str = "nothing") -> None:
        row = (group, fault, tries, outcome, lost)
        if row not in self.rows:  # a test run with and without DataLoader workers records it once
            self.rows.append(row)

    def record_each(
        self, group: str, faults: Iterable[str], outcome: str, *, prefix: str = "", tries: int = 1
    ) -> None:
        """A row per fault of a set that one test injects alike and that all end the same way."""
        for fault in faults:
            self.record(group, f"{prefix}{fault}", tries, outcome)

    def markdown(self) -> str:
        lines = [
            "# Reliability report",
            "",
            "Produced by the fault-injection tests (the files of `RELIABILITY_FILES` in `tests/vlmbench_testing.py`):",
            "each fault was injected the given number of times; *lost* counts model answers that were computed and",
            "not kept. Runs use the default settings a user gets, DataLoader workers included; image and row faults",
            "are injected both with the default workers and with none. Regenerate with",
            "`VLMBENCH_RELIABILITY_REPORT=docs/reliability.md pytest "
            + " ".join(f"tests/{f}" for f in RELIABILITY_FILES)
            + "`.",
            "",
        ]
        group = None
        for g, fault, tries, outcome, lost in sorted(self.rows, key=lambda r: r[0]):
            if g != group:
                lines += ["", f"## {g}", "", "| fault | tries | what happened | lost |", "|---|---|---|---|"]
                group = g
            lines.append(f"| {fault} | {tries} | {outcome} | {lost} |")
        total = sum(r[2] for r in self.rows)
        lines += ["", f"{len(self.rows)} faults, {total} injections in all.", ""]
        return "\n".join(lines)


_RELIABILITY = _Reliability()


def pytest_configure(config: pytest.Config) -> None:
    # Each pytest-xdist worker would write the rows it happened to collect over the others' rows.
    if os.environ.get("VLMBENCH_RELIABILITY_REPORT") and config.getoption("numprocesses", default=None):
        raise pytest.UsageError(
            "VLMBENCH_RELIABILITY_REPORT collects the report in one process: run without -n"
        )
    _share_caches(config)
    _one_core_per_worker(config)


def _one_core_per_worker(config: pytest.Config) -> None:
    """Under pytest-xdist, give each test process its share of the cores for torch's intra-op threads.

    torch starts as many threads as the machine has cores, in every process: with one worker per core,
    each running a CLI subprocess with its own threads, the threads outnumber the cores several times and
    OpenMP's waiting threads spin on cores the others need (a tiny BLIP run over the sample costs 4x the CPU
    time it needs alone). A user's single run keeps torch's default; so do the tests that set their own
    count (the launches set OMP_NUM_THREADS=1, as torchrun does). Workers and subprocesses inherit it."""
    workers = config.getoption("numprocesses", default=None)
    if os.environ.get("PYTEST_XDIST_WORKER") or not workers or "OMP_NUM_THREADS" in os.environ:
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    count = cores if workers in ("auto", "logical") else int(workers)
    os.environ["OMP_NUM_THREADS"] = str(max(1, cores // max(1, count)))
    config.add_cleanup(lambda: os.environ.pop("OMP_NUM_THREADS", None))


# The score cache every test of this run uses (a file in the run's shared folder; see _share_caches).
_SHARED_SCORE_CACHE = "VLMBENCH_TESTS_SCORE_CACHE"


def _share_caches(config: pytest.Config) -> None:
    """What a user's machine keeps from one run to the next, kept for the test run as a whole; every
    test still gets a vlmbench cache folder (predictions, file hashes) of its own.

    - WordNet: a run in a fresh cache folder would copy the system's WordNet into it first, seconds per
      command-line test. One copy is built per test run and named by NLTK_DATA, where nltk looks first,
      as a user's own nltk data would be. (Building it from the system files is tested in tests/metrics/.)
    - The score cache: metric scores already computed for the same pairs by the same metric identity
      (tests/metrics/test_score_cache.py proves them equal to fresh ones, bit for bit).

    pytest-xdist workers inherit both from the controller."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import tempfile

    from vlmbench.errors import AssetMissingError
    from vlmbench.scoring.assets import find_wordnet

    folder = Path(tempfile.mkdtemp(prefix="vlmbench-tests-"))
    os.environ[_SHARED_SCORE_CACHE] = str(folder / "metric_scores.sqlite")
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    if os.environ.get("NLTK_DATA"):
        return
    try:
        location = find_wordnet(cache=folder, search_nltk=False, download=False)
    except AssetMissingError:
        return  # no system WordNet: the WordNet tests skip, the metrics report it as missing
    os.environ["NLTK_DATA"] = location.data_dir
    config.add_cleanup(lambda: os.environ.pop("NLTK_DATA", None))


@pytest.fixture(scope="session")
def reliability():
    yield _RELIABILITY
    target = os.environ.get("VLMBENCH_RELIABILITY_REPORT")
    if target and _RELIABILITY.rows:
        Path(target).write_text(_RELIABILITY.markdown(), encoding="utf-8")
