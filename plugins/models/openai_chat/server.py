"""What ``openai-chat`` asks a server before any model work: where it is, which model it serves, and
whether it returns prompt log-probabilities (what ranking needs).

A server that cannot be reached, refuses the key or lists several models when none was named is a
user error found while the run is planned (one ``Error:`` line, exit status 2), never a thousand
failed requests later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from vlmbench.api import ArgError, VlmbenchError
from vlmbench_plugins.models.openai_chat.connection import Connection, RequestFailed
from vlmbench_plugins.models.openai_chat.payload import prompt_token_logprobs, rank_body

#: What of a ``/v1/models`` entry names the model (vLLM adds ``root``, ``parent`` and ``max_model_len``);
#: ``created``, ``status`` and ``permission`` change with each start of the same server and are left out.
LISTING_KEYS = ("id", "root", "parent", "owned_by", "max_model_len")
_ENDPOINT_SUFFIXES = ("/chat/completions", "/completions")


@dataclass(frozen=True)
class Endpoint:
    """A base URL taken apart: ``url`` is what requests go to (credentials in it included), ``shown``
    what may be recorded and printed, ``params`` its query (sent with every request), ``secrets`` the
    parts of it that must never be shown."""

    url: str
    shown: str
    params: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()


def endpoint(base_url: str) -> Endpoint:
    """``http://user:pw@host:8000/v1/chat/completions?key=K`` -> requests to ``…/v1``, shown as
    ``http://host:8000/v1`` (lm-eval's users give the full endpoint: both forms are accepted)."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ArgError(
            f"model 'openai-chat': base_url must be an http:// or https:// URL such as "
            f"http://localhost:8000/v1, got {_without_credentials(base_url)!r}"
        )
    path = parts.path.rstrip("/")
    for suffix in _ENDPOINT_SUFFIXES:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    secrets = tuple(v for v in (parts.username, parts.password, *params.values()) if v)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    if ":" in parts.hostname:  # an IPv6 address
        host = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
    shown = urlunsplit((parts.scheme, host, path, "", ""))
    return Endpoint(urlunsplit((parts.scheme, parts.netloc, path, "", "")), shown, params, secrets)


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", "")) if parts.netloc else url


def api_key(variable: str, chosen: bool) -> str | None:
    """The key in ``variable``; a variable the user named (``api_key_env``) must be set, the default one
    may be absent (a local server needs no key)."""
    value = (os.environ.get(variable) or "").strip()
    if not value and chosen:
        raise ArgError(
            f"model 'openai-chat': api_key_env={variable}, but the environment variable {variable} is not set"
        )
    return value or None


async def served_model(connection: Connection, requested: str | None, shown: str) -> tuple[str, dict | None]:
    """The model id to send and its ``/v1/models`` entry (None when the server does not list it)."""
    try:
        data = await connection.request("GET", "/models", retries=False)
    except RequestFailed as exc:
        if exc.kind == "unreachable":
            raise VlmbenchError(
                f"cannot reach the OpenAI-compatible server at {shown}: {exc.message}. Start the server "
                "first, or give its address with --model-args base_url=http://HOST:PORT/v1"
            ) from None
        if exc.kind == "rejected" and any(code in exc.message for code in ("HTTP 401", "HTTP 403")):
            raise VlmbenchError(
                f"the server at {shown} refused the request for its model list ({exc.message}); set its API "
                "key in OPENAI_API_KEY, or name the variable that holds it with api_key_env=NAME"
            ) from None
        if exc.kind == "server_error":
            raise VlmbenchError(f"the server at {shown} fails: {exc.message}") from None
        data = {}  # no model list (a 404, an odd body): the model must then be named
    listed = [m for m in data.get("data") or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
    if requested:
        entry = next((m for m in listed if m["id"] == requested), None)
        return requested, _entry(entry)
    if len(listed) == 1:
        return listed[0]["id"], _entry(listed[0])
    names = ", ".join(m["id"] for m in listed[:10]) + (" ..." if len(listed) > 10 else "")
    raise ArgError(
        f"the server at {shown} lists {len(listed)} models{f' ({names})' if names else ''}: name the one to "
        "evaluate with --model-args model=NAME"
    )


def _entry(entry: dict | None) -> dict[str, Any] | None:
    return None if entry is None else {k: entry[k] for k in LISTING_KEYS if entry.get(k) is not None}


async def prompt_logprobs_support(connection: Connection, model: str, shown: str) -> str | None:
    """None when the server returns prompt log-probabilities for a chat request, else why not. One
    short text-only request; the answer is not guessed from the server's name."""
    body = {"model": model, **rank_body([{"role": "user", "content": "Is the sky blue?"}], "Yes")}
    try:
        data = await connection.request("POST", "/chat/completions", body, retries=False)
    except RequestFailed as exc:
        if exc.kind in ("unreachable", "server_error"):
            raise VlmbenchError(f"the server at {shown} fails: {exc.message}") from None
        return f"it refused a request for them ({exc.message})"
    try:
        prompt_token_logprobs(data)
    except ValueError as exc:
        return f"it answered without them ({exc})"
    return None
