"""Fixtures of the fine-tuning tests: a tiny BLIP checkpoint and the coloured-squares task."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import tiny_models  # noqa: E402

from .squares import SquaresTask, make_squares_task  # noqa: E402


@pytest.fixture(autouse=True)
def _offline_and_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the network or the user's prediction cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLMBENCH_CACHE_DIR", str(tmp_path / "vlmbench-cache"))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models train fastest on one thread (intra-op threads of kernels this small mostly wait)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    root = tmp_path_factory.mktemp("tiny-checkpoints")
    return lambda name: tiny_models.build(name, root)


@pytest.fixture(scope="session")
def tiny_blip(tiny_checkpoint) -> Path:
    return tiny_checkpoint("blip")


@pytest.fixture(scope="session")
def squares(tmp_path_factory: pytest.TempPathFactory) -> SquaresTask:
    return make_squares_task(tmp_path_factory.mktemp("squares"))
