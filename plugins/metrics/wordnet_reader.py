"""The WordNet that METEOR and WUPS read, found and loaded the same way for both."""

from __future__ import annotations

from typing import Any


def load_wordnet_reader() -> tuple[Any, dict[str, str], dict[str, str]]:
    """The WordNet reader (found offline-first by ``vlmbench.api.find_wordnet``), where it came from (a
    run's description records the source, folder and version, because scores depend on them) and its
    identity for the score cache (its files' path and digest)."""
    from vlmbench.api import find_wordnet, load_wordnet, wordnet_identity_of

    location = find_wordnet()
    reader = load_wordnet(location)
    source = {"source": location.source, "path": str(location.root), "version": reader.get_version()}
    return reader, source, wordnet_identity_of(location.root)


def wordnet_cache_identity(metric: Any, loaded: dict[str, str] | None, *code: Any) -> dict[str, Any] | None:
    """The score-cache identity of a WordNet metric: the WordNet it has loaded (``loaded``), else the one
    it would load, known without importing nltk (None when that is not known yet); nltk's version."""
    from vlmbench.api import library_versions, wordnet_identity

    wordnet = loaded or wordnet_identity()
    if wordnet is None:
        return None
    return {**metric.base_identity(*code), "wordnet": wordnet, "libraries": library_versions("nltk", "numpy")}
