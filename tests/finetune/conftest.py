"""Fixtures of the fine-tuning tests: a tiny BLIP checkpoint and the coloured-squares task."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


from .squares import SquaresTask, make_squares_task  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs tiny models: one torch thread (see the root conftest)."""


@pytest.fixture(scope="session", autouse=True)
def _plugin_commands() -> None:
    """`finetune` and `sweep` come from the BLIP plugin: add them to the CLI the tests invoke, as
    ``vlmbench.cli.main`` does."""
    from vlmbench.api import load_plugins
    from vlmbench.cli import cli

    load_plugins().call_each("register_commands", cli=cli)


@pytest.fixture(scope="session")
def tiny_blip(tiny_checkpoint) -> Path:
    return tiny_checkpoint("blip")


@pytest.fixture(scope="session")
def squares(tmp_path_factory: pytest.TempPathFactory) -> SquaresTask:
    return make_squares_task(tmp_path_factory.mktemp("squares"))
