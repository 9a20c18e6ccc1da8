"""Fixtures for the OFA tests (built offline, in seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ofa_testing import randomize, tiny_config, write_tiny_bpe

from vlmbench_plugins.models.ofa.modeling import OFAModel


@pytest.fixture
def tiny_model() -> OFAModel:
    return randomize(OFAModel(tiny_config()))


@pytest.fixture(scope="session")
def tiny_bpe_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ofa_bpe")
    write_tiny_bpe(folder)
    return folder
