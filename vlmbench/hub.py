"""Can anything be downloaded from here? Asked once per host and process, answered in seconds.

Without this, a download attempt on a machine with no network spends minutes in library retries
before it fails; vlmbench instead reports the missing asset at once.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

_TRUE = {"1", "true", "yes", "on"}
OFFLINE_VARIABLES = ("VLMBENCH_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


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
