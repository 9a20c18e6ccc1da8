"""The WordNet that METEOR and WUPS read, found and loaded the same way for both."""

from __future__ import annotations

from typing import Any


def load_wordnet_reader() -> tuple[Any, dict[str, str]]:
    """The WordNet reader (found offline-first by ``vlmbench.api.find_wordnet``) and where it came
    from: a run's description records the source, folder and version, because scores depend on them."""
    from vlmbench.api import find_wordnet, load_wordnet

    location = find_wordnet()
    reader = load_wordnet(location)
    return reader, {"source": location.source, "path": str(location.root), "version": reader.get_version()}
