"""Fixtures of the metric tests: WordNet provisioned offline once per test run, offline switches.

WordNet is laid out from the system's WordNet 3.0 files (Debian/Ubuntu ``wordnet-base``) or taken from
nltk's data; without either, the WordNet tests are skipped.
"""

from __future__ import annotations

import pytest
from metric_helpers import SYSTEM_WORDNET

from vlmbench.errors import AssetMissingError


@pytest.fixture(scope="session")
def wordnet_cache(tmp_path_factory):
    """A vlmbench cache folder holding WordNet, provisioned offline once per test run.

    The system WordNet is preferred (it exercises the copy + lexnames + index.sense build); nltk's own
    data is the fallback. Without either, WordNet tests are skipped.
    """
    from vlmbench.scoring.assets import find_wordnet

    cache = tmp_path_factory.mktemp("vlmbench-cache")
    try:
        if SYSTEM_WORDNET.is_dir():
            location = find_wordnet(
                cache=cache, system_dirs=(str(SYSTEM_WORDNET),), search_nltk=False, download=False
            )
        else:
            location = find_wordnet(cache=cache, system_dirs=(), download=False)
    except AssetMissingError as exc:
        pytest.skip(f"WordNet is not available offline ({exc}); install the wordnet-base package")
    return cache, location


@pytest.fixture
def offline_env(monkeypatch, tmp_path):
    """No downloads, and a private vlmbench cache."""
    monkeypatch.setenv("VLMBENCH_OFFLINE", "1")
    monkeypatch.setenv("VLMBENCH_CACHE_DIR", str(tmp_path / "vlmbench-cache"))


@pytest.fixture
def wordnet_env(monkeypatch, wordnet_cache, tmp_path):
    """Offline, with the run's WordNet cache as vlmbench's cache, but a score cache of the test's own
    (stored scores would otherwise pass from one test to the next)."""
    cache, location = wordnet_cache
    monkeypatch.setenv("VLMBENCH_OFFLINE", "1")
    monkeypatch.setenv("VLMBENCH_CACHE_DIR", str(cache))
    monkeypatch.setenv("VLMBENCH_SCORE_CACHE", str(tmp_path / "metric_scores.sqlite"))
    return location


@pytest.fixture(scope="session")
def wordnet_reader(wordnet_cache):
    """The nltk WordNet reader the metrics use."""
    from vlmbench.scoring.assets import load_wordnet

    return load_wordnet(wordnet_cache[1])
