"""Where vlmbench keeps what it computes once: the prediction cache, file hashes, a WordNet built from a
system copy."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """vlmbench's cache folder: ``$VLMBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/vlmbench`` (``~/.cache/vlmbench``)."""
    base = os.environ.get("VLMBENCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "vlmbench"
    )
    return Path(base)
