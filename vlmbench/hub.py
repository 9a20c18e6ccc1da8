"""The Hugging Face Hub, offline first: one place that finds checkpoints, files and snapshots.

Everything is looked up in the local cache first; a download is tried only when it may work — not when
the user asked for no downloads, and not when the Hub cannot be reached (asked once per host and
process, answered in seconds, where library retries would take minutes). Whatever cannot be found
becomes one :class:`AssetMissingError` naming the asset and how to provide it.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from vlmbench.errors import AssetMissingError, first_line

T = TypeVar("T")

# ``name`` or ``owner/name``; models always have an owner, datasets and some encoders need not.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

OFFLINE_VARIABLES = ("VLMBENCH_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


# How the Hugging Face libraries read a yes/no environment variable.
_TRUE = {"1", "true", "yes", "on"}


def is_offline() -> bool:
    """Whether the user asked for no downloads (any of ``VLMBENCH_OFFLINE``, ``HF_HUB_OFFLINE``,
    ``TRANSFORMERS_OFFLINE`` set to 1/true/yes/on)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in OFFLINE_VARIABLES)


@functools.lru_cache(maxsize=16)
def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of ``url`` accepts a TCP connection."""
    parsed = urlparse(url)
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def download_blocker() -> str | None:
    """Why a Hugging Face Hub download cannot work right now, or None when it may."""
    if is_offline():
        return f"downloads are disabled ({' / '.join(OFFLINE_VARIABLES)} is set)"
    if not reachable(hub_endpoint()):
        return f"the Hugging Face Hub ({hub_endpoint()}) cannot be reached from this machine"
    return None


def is_hub_id(value: str, *, owner: bool = True, not_suffixes: tuple[str, ...] = ()) -> bool:
    """Whether ``value`` names a Hub repository (``owner/name``; ``name`` alone with ``owner=False``)
    rather than a local path: it has that form, no suffix in ``not_suffixes`` and is not an existing path."""
    match = HUB_ID.match(value)
    if not match or (owner and match.group(1) is None):
        return False
    if not_suffixes and value.lower().endswith(not_suffixes):
        return False
    return not Path(value).expanduser().exists()


def cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit a Hub revision points to in the local cache, without any network access."""
    if revision and _COMMIT.match(revision):
        return revision
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    folder = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    try:
        commit = (folder / "refs" / (revision or "main")).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return commit if _COMMIT.match(commit) else None


def offline_first(
    fetch: Callable[[bool], T],
    *,
    asset: str,
    how: str,
    local_files_only: bool = False,
    download: bool = True,
) -> T:
    """``fetch(local_files_only)``: first from local files only, then — when allowed and possible —
    with downloads. ``download=False`` means "not now" (e.g. in a DataLoader worker)."""
    try:
        return fetch(True)
    except Exception:  # "not cached" comes as several error types from the hub client and transformers
        pass
    blocker = (
        "local_files_only is set"
        if local_files_only
        else "it was not downloaded yet"
        if not download
        else download_blocker()
    )
    if blocker:
        raise AssetMissingError(asset, f"it is not in the local Hugging Face cache and {blocker}. {how}")
    try:
        return fetch(False)
    except Exception as exc:
        raise AssetMissingError(
            asset, f"downloading it failed ({type(exc).__name__}: {first_line(exc)}). {how}"
        ) from None


def hub_file(
    repo_id: str,
    filenames: Sequence[str],
    *,
    asset: str,
    how: str,
    revision: str | None = None,
    local_files_only: bool = False,
    download: bool = True,
) -> Path:
    """The first of ``filenames`` in the repository that is cached, else the first that downloads."""
    from huggingface_hub import hf_hub_download

    def fetch(local_only: bool) -> Path:
        failure: Exception | None = None
        for name in filenames:
            try:
                return Path(hf_hub_download(repo_id, name, revision=revision, local_files_only=local_only))
            except Exception as exc:
                failure = exc
        raise failure or FileNotFoundError(repo_id)

    return offline_first(fetch, asset=asset, how=how, local_files_only=local_files_only, download=download)


def cached_snapshot(
    repo_id: str, revision: str | None = None, allow_patterns: Sequence[str] | None = None
) -> Path | None:
    """The repository's snapshot folder in the local cache (never downloads), or None."""
    if not (_hub_cache() / ("models--" + repo_id.replace("/", "--"))).is_dir():
        return None  # known without importing huggingface_hub's download code (half a second)
    try:
        path = _snapshot_download(repo_id, revision, local_only=True, allow_patterns=allow_patterns)
    except Exception:  # not cached (or not a valid id)
        return None
    return path if path.is_dir() and any(path.iterdir()) else None


def _hub_cache() -> Path:
    """The Hugging Face Hub cache folder, as huggingface_hub's constants define it."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        return Path(constants.HF_HUB_CACHE)
    home = os.path.expandvars(os.path.expanduser(os.getenv(
        "HF_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")),
                                "huggingface"))))  # fmt: skip
    legacy = os.getenv("HUGGINGFACE_HUB_CACHE", os.path.join(home, "hub"))
    return Path(os.path.expandvars(os.path.expanduser(os.getenv("HF_HUB_CACHE", legacy))))


def _snapshot_download(
    repo_id: str,
    revision: str | None,
    *,
    local_only: bool,
    allow_patterns: Sequence[str] | None = None,
    ignore_patterns: Sequence[str] | None = None,
) -> Path:
    """``snapshot_download`` as a Path; empty pattern lists mean no filter, as None does."""
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            repo_id,
            revision=revision,
            local_files_only=local_only,
            allow_patterns=list(allow_patterns) if allow_patterns else None,
            ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
        )
    )


def hub_snapshot(
    repo_id: str,
    *,
    asset: str,
    how: str,
    revision: str | None = None,
    allow_patterns: Sequence[str] | None = None,
    ignore_patterns: Sequence[str] | None = None,
    complete: Callable[[Path], bool] = lambda folder: True,
    local_files_only: bool = False,
) -> Path:
    """A repository's snapshot folder: the local cache, else (when allowed) a download. ``complete``
    says whether a snapshot has the files needed; an incomplete one counts as missing."""

    def fetch(local_only: bool) -> Path:
        folder = _snapshot_download(
            repo_id,
            revision,
            local_only=local_only,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
        )
        if not complete(folder):
            raise FileNotFoundError(f"the snapshot of {repo_id} lacks files this model needs")
        return folder

    return offline_first(fetch, asset=asset, how=how, local_files_only=local_files_only)
