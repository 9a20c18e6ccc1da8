"""The HTTP side of ``openai-chat``: one async client, bounded concurrency, timeouts, retries, a rate limit.

Retried, with exponential backoff and jitter: connection errors, timeouts, HTTP 429 (after the wait its
``Retry-After`` or ``retry-after-ms`` header asks for, when longer) and 5xx. Anything else is final at
once: another 4xx is the request's own fault (``rejected``), a 200 whose body is not a usable
completion is ``bad_response``. Every message that leaves this module has the API key masked.

The client runs on an event loop of its own, driven from the calling thread batch by batch
(:meth:`Connection.run`), so that one connection pool serves the whole run.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

from vlmbench.api import Pacer, SecretMask

#: Longest wait a server's Retry-After is honoured for; a longer one is the server's outage, not a pause.
MAX_RETRY_AFTER = 600.0
_MAX_MESSAGE = 300


class RequestFailed(Exception):
    """A request that did not give a usable answer. ``kind``: ``rejected`` (a 4xx other than 429),
    ``bad_response`` (a 200 that is not a completion), ``server_error`` (5xx, 429 or timeouts after the
    retries) or ``unreachable`` (no connection after the retries)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message

    def __reduce__(self):  # pickled with both arguments (it crosses process boundaries as every error may)
        return type(self), (self.kind, self.message), self.__dict__


@dataclass(frozen=True)
class Policy:
    """How requests are sent: ``concurrency`` at a time, each attempt given ``timeout`` seconds, at most
    ``max_retries`` retries waiting ``backoff * 2**n`` seconds (at most ``backoff_max``, with jitter),
    started no faster than ``requests_per_minute`` (None: no limit)."""

    concurrency: int = 4
    timeout: float = 120.0
    max_retries: int = 5
    backoff: float = 0.5
    backoff_max: float = 30.0
    requests_per_minute: float | None = None


@dataclass
class Stats:
    """What the requests of this process cost: token usage, latencies, retries, and what the server
    said about itself in its responses."""

    latencies: list[float] = field(default_factory=list)
    usage: Counter = field(default_factory=Counter)
    retries: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    response_models: set[str] = field(default_factory=set)
    system_fingerprints: set[str] = field(default_factory=set)

    def record(self, data: dict[str, Any], seconds: float) -> None:
        self.latencies.append(seconds)
        self.usage["requests"] += 1
        usage = data.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
                value = usage.get(name)
                self.usage[name] += value if isinstance(value, int) else 0
        else:
            self.usage["requests_without_usage"] += 1
        for value, seen in (
            (data.get("model"), self.response_models),
            (data.get("system_fingerprint"), self.system_fingerprints),
        ):
            if isinstance(value, str) and value and len(seen) < 20:
                seen.add(value)


class Connection:
    """An async HTTP client on a private event loop, with the retry policy and the statistics."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        policy: Policy,
        mask: SecretMask,
        params: dict[str, str] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.params = params or {}
        self.policy = policy
        self.mask = mask
        self.stats = Stats()
        self._loop = asyncio.new_event_loop()
        self._client: httpx2.AsyncClient | None = None
        self._pacer = Pacer(self.policy.requests_per_minute)  # evenly spaced starts

    def run(self, work: Awaitable[Any]) -> Any:
        """Run a coroutine on the connection's loop (from the thread that owns the connection)."""
        return self._loop.run_until_complete(work)

    def _http(self) -> httpx2.AsyncClient:
        if self._client is None:
            limits = httpx2.Limits(
                max_connections=self.policy.concurrency, max_keepalive_connections=self.policy.concurrency
            )
            self._client = httpx2.AsyncClient(
                headers=self.headers,
                params=self.params,
                timeout=self.policy.timeout,
                limits=limits,
                follow_redirects=False,
            )
        return self._client

    # -- one request ---------------------------------------------------------------------------------
    async def request(self, method: str, path: str, body: dict | None = None, retries: bool = True) -> dict:
        """The JSON object the server answered ``method path`` with, after the retries the policy
        allows. ``retries=False`` (the questions asked before any model work): a connection error is
        final at once (the server is not there), and the request is not counted in :attr:`stats`."""
        attempt = 0
        started = time.perf_counter()
        while True:
            await self._pacer.wait_async()
            try:
                response = await self._http().request(method, f"{self.base_url}{path}", json=body)
            except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
                timeout = isinstance(exc, httpx2.TimeoutException)
                kind = "server_error" if timeout else "unreachable"
                what = f"no answer within {self.policy.timeout:g} s" if timeout else _network_message(exc)
                if attempt >= self.policy.max_retries or not (retries or timeout):
                    raise RequestFailed(kind, self._say(f"{what} ({self._tries(attempt)})")) from None
                await self._wait(attempt, None, "timeout" if timeout else "connection")
                attempt += 1
                continue
            status = response.status_code
            if status == 429 or status >= 500:
                if attempt >= self.policy.max_retries:
                    raise RequestFailed(
                        "server_error", self._say(f"{_status_message(response)} ({self._tries(attempt)})")
                    )
                await self._wait(attempt, _retry_after(response) if status == 429 else None, str(status))
                attempt += 1
                continue
            if status >= 400 or status < 200:
                raise RequestFailed("rejected", self._say(_status_message(response)))
            try:
                data = response.json()
            except (ValueError, UnicodeDecodeError):
                raise RequestFailed(
                    "bad_response", self._say(f"the response is not JSON: {response.text[:120]!r}")
                ) from None
            if not isinstance(data, dict):
                raise RequestFailed("bad_response", self._say("the response is not a JSON object"))
            if retries:
                self.stats.record(data, time.perf_counter() - started)
            return data

    def _say(self, text: str) -> str:
        return self.mask.mask(" ".join(text.split()))[:_MAX_MESSAGE]

    def _tries(self, retries: int) -> str:
        return f"{retries + 1} attempt{'s' * (retries > 0)}"

    async def _wait(self, attempt: int, asked: float | None, why: str) -> None:
        self.stats.retries[why] += 1  # the questions before model work count here too: a slow start shows
        step = min(self.policy.backoff_max, self.policy.backoff * 2**attempt)
        delay = step / 2 + random.uniform(0, step / 2)  # jitter: concurrent retries do not arrive together
        if asked is not None:
            delay = max(delay, min(asked, MAX_RETRY_AFTER))
        await asyncio.sleep(delay)

    # -- many requests -------------------------------------------------------------------------------
    async def each(self, jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
        """Run ``jobs`` with at most ``concurrency`` in flight; each result, or the exception it raised."""
        limit = asyncio.Semaphore(self.policy.concurrency)

        async def one(job: Callable[[], Awaitable[Any]]) -> Any:
            async with limit:
                try:
                    return await job()
                except RequestFailed as exc:
                    self.stats.failed[exc.kind] += 1
                    return exc

        return await asyncio.gather(*(one(job) for job in jobs))


def _network_message(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"cannot connect: {text}" if isinstance(exc, httpx2.ConnectError) else f"connection lost: {text}"


def _status_message(response: httpx2.Response) -> str:
    """``HTTP 400: <the server's message>``: the error object's message when there is one."""
    detail = ""
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        detail = response.text
    else:
        error = data.get("error", data.get("detail", data.get("message"))) if isinstance(data, dict) else data
        if isinstance(error, dict):
            error = error.get("message", error)
        detail = error if isinstance(error, str) else json.dumps(error)
    detail = " ".join(str(detail).split())[:200]
    return f"HTTP {response.status_code}" + (f": {detail}" if detail else "")


def _retry_after(response: httpx2.Response) -> float | None:
    """The wait a 429 asks for: ``retry-after-ms`` (OpenAI's), else ``Retry-After`` in seconds or as a date."""
    millis = response.headers.get("retry-after-ms")
    try:
        if millis is not None:
            return max(0.0, float(millis) / 1000)
    except ValueError:
        pass
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
