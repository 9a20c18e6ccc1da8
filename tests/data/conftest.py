"""Fixtures of the data-pipeline tests (helpers live in abo_testkit.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest

from .abo_testkit import ArchiveServer, GeminiServer, derived_records, real_records, write_tree


@pytest.fixture
def abo_tree(tmp_path: Path) -> Path:
    """A tiny ABO tree: 24 derived listings, the 6 real records as they are (three without image
    ids), a repeated main image, a listing whose image file is missing, one whose image is not in
    images.csv.gz, and two corrupt lines."""
    records = derived_records(24) + real_records()
    dup = copy.deepcopy(records[0])
    dup["item_id"], dup["domain_name"] = "B0TESTDUP1", "amazon.com"
    missing = copy.deepcopy(records[1])
    missing["item_id"], missing["main_image_id"] = "B0TESTMISS", "9MissingImgL"
    unlisted = copy.deepcopy(records[2])
    unlisted["item_id"], unlisted["main_image_id"] = "B0TESTNOMETA", "8UnlistedImgL"
    records += [dup, missing, unlisted]
    return write_tree(
        tmp_path / "abo",
        records,
        extra_lines=["{not json", "[1, 2]"],
        skip_image_files={"9MissingImgL"},
        unlisted={"8UnlistedImgL"},
    )


@pytest.fixture(scope="session", autouse=True)
def _plugin_commands() -> None:
    """`data download abo` and `data prepare abo_single_word` come from the dataset plugin: add them
    to the CLI the tests invoke, as ``vlmbench.cli.main`` does."""
    from vlmbench.api import load_plugins
    from vlmbench.cli import cli

    load_plugins().call_each("register_commands", cli=cli)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's caches or data, and never see a real API key."""
    monkeypatch.setenv("VLMBENCH_CACHE_DIR", str(tmp_path / "vlmbench-cache"))
    monkeypatch.setenv("VLMBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def archive_server():
    server = ArchiveServer()
    yield server
    server.close()


@pytest.fixture
def gemini_server():
    servers = []

    def start(respond: Callable[[int, dict], tuple[int, dict | bytes]]) -> GeminiServer:
        server = GeminiServer(respond)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()
