"""What a metric's assets are, found without loading them: for the score cache's metric identities.

A stored score may be reused only by a metric that would compute it the same way, so the identity of a
metric names the files it reads, with a digest of their contents. Finding them must cost milliseconds,
not the seconds of loading them:

- **an encoder**: :func:`vlmbench.scoring.assets.resolve_model` is a path lookup; :func:`model_identity`
  adds a digest of the folder's files (large files hashed once, remembered by size and time).
- **WordNet**: which corpus a run reads is decided by ``nltk.data.find``, whose search (its data paths,
  zip files, refusals of folders other accounts can write) cannot be reproduced faithfully without
  importing nltk, which takes seconds. So the search is not reproduced: each time the real search runs
  (:func:`vlmbench.scoring.assets.find_wordnet`), :func:`remember_wordnet` records its answer under a key
  made of everything the search looks at — the nltk version, its data paths, and the state (permissions,
  owner, time, files) of each ``corpora/wordnet`` folder or zip file under those paths and under
  vlmbench's own cache. :func:`wordnet_identity` recomputes that key from the file system (no nltk
  import) and finds the recorded answer; when anything the search looks at has changed, there is none
  and the metric computes as it would without a cache, recording the new answer.
"""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from vlmbench.artifacts.run_files import read_json_object
from vlmbench.cache import cache_dir
from vlmbench.hashing import json_digest, tree_sha256
from vlmbench.scoring.score_cache import default_score_cache_path

_MEMO_NAME = "wordnet_locations.json"
_MEMO_LIMIT = 64  # keys; old entries go first (a changed environment leaves its old key behind)


def model_identity(path: str | Path) -> dict[str, str]:
    """A model folder and a digest of its files."""
    return {"path": str(path), "sha256": tree_sha256(path)}


def nltk_data_paths() -> list[str]:
    """``nltk.data.path``: the live list when nltk is imported, else the one nltk builds when imported
    (its ``nltk/data.py``; ``tests/metrics/test_score_cache.py`` checks the two agree)."""
    data = sys.modules.get("nltk.data")
    if data is not None:
        return [str(p) for p in data.path]
    paths = [os.path.expanduser(d) for d in os.environ.get("NLTK_DATA", "").split(os.pathsep) if d]
    if "APPENGINE_RUNTIME" not in os.environ and os.path.expanduser("~/") != "~/":
        paths.append(os.path.expanduser("~/nltk_data"))
    if sys.platform.startswith("win"):
        return [
            *paths,
            os.path.join(sys.prefix, "nltk_data"),
            os.path.join(sys.prefix, "share", "nltk_data"),
            os.path.join(sys.prefix, "lib", "nltk_data"),
            os.path.join(os.environ.get("APPDATA", "C:\\"), "nltk_data"),
            r"C:\nltk_data",
            r"D:\nltk_data",
            r"E:\nltk_data",
        ]
    return [
        *paths,
        os.path.join(sys.prefix, "nltk_data"),
        os.path.join(sys.prefix, "share", "nltk_data"),
        os.path.join(sys.prefix, "lib", "nltk_data"),
        "/usr/share/nltk_data",
        "/usr/local/share/nltk_data",
        "/usr/lib/nltk_data",
        "/usr/local/lib/nltk_data",
    ]


def _state(path: str) -> list[Any] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns]


def _search_key(through_cache: bool = True) -> str:
    """A digest of everything WordNet's search looks at (see the module docstring). ``through_cache``:
    whether the search went on to vlmbench's own cache folder; it stops at the first of nltk's data paths
    that holds WordNet, so an answer found there does not depend on which cache folder a run uses."""
    try:
        nltk_version = metadata.version("nltk")
    except metadata.PackageNotFoundError:
        nltk_version = None
    roots = [*nltk_data_paths(), *([str(cache_dir() / "nltk_data")] if through_cache else [])]
    facts: list[Any] = [nltk_version, through_cache]
    for root in roots:
        corpus = os.path.join(root, "corpora", "wordnet")
        entry: list[Any] = [root, _state(root), _state(os.path.join(root, "corpora")), _state(corpus)]
        entry.append(_state(corpus + ".zip"))
        if os.path.isdir(corpus):
            entry.append(sorted((name, _state(os.path.join(corpus, name))) for name in os.listdir(corpus)))
        facts.append(entry)
    return json_digest(facts, length=None)


def _memo_path() -> Path:
    # Beside the score cache whose keys it serves: whoever shares a score cache shares what it found.
    return default_score_cache_path().with_name(_MEMO_NAME)


def location_path(root: Any) -> str:
    """The file or folder behind a WordNet location's ``root`` (a folder, a zip file's path, or an nltk
    zip-file pointer)."""
    zipfile = getattr(root, "zipfile", None)
    if zipfile is not None:
        return str(zipfile.filename)
    return str(getattr(root, "path", None) or root)


def remember_wordnet(root: Any, on_nltk_path: bool = False) -> None:
    """Record where the default search (nltk's paths, then vlmbench's cache) found WordNet, under the
    key of what it looked at (``on_nltk_path``: it was found on one of nltk's paths, before the cache)."""
    path = _memo_path()
    memo = read_json_object(path)
    key = _search_key(through_cache=not on_nltk_path)
    found = location_path(root)
    if memo.get(key) == found:
        return
    memo.pop(key, None)
    memo[key] = found
    memo = dict(list(memo.items())[-_MEMO_LIMIT:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, indent=0), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # only a speed-up: the next run searches with nltk again


def wordnet_identity() -> dict[str, str] | None:
    """The WordNet a run would read now (its path and a digest of its files), without importing nltk;
    None when the search has not been seen in this state yet (see the module docstring)."""
    memo = read_json_object(_memo_path())
    for key in (_search_key(through_cache=False), _search_key()):
        found = memo.get(key)
        if isinstance(found, str) and os.path.exists(found):
            return {"path": found, "sha256": tree_sha256(found)}
    return None


def wordnet_identity_of(root: Any) -> dict[str, str]:
    """The identity of a WordNet already found (its location's ``root``)."""
    found = location_path(root)
    return {"path": found, "sha256": tree_sha256(found)}
