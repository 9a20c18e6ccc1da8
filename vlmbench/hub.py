"""Is the Hugging Face Hub usable from here? Asked once per process, answered in seconds.

Without this, a download attempt on a machine with no network spends minutes in retries before it
fails; vlmbench instead reports the missing asset at once.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse

_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """Whether the user asked for no network access (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return any(
        os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """A TCP connection to the Hub's endpoint (``HF_ENDPOINT``, default huggingface.co) succeeds."""
    if hub_offline():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def download_blocker() -> str | None:
    """Why a download cannot work right now, or None when it may."""
    if hub_offline():
        return "downloads are disabled (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set)"
    if not hub_reachable():
        return "the Hugging Face Hub cannot be reached from this machine"
    return None
