"""``gemini``: the study's curation approach through the ``google-genai`` SDK.

For each listing the image and the description go to Gemini (``gemini-2.0-flash`` by default) with
the study's prompt; the reply is constrained to a JSON schema (an array of
``{question, answer, difficulty}``) unless ``structured=false``, in which case the study's delimited line
format is asked for. ``prompt=study`` sends the paper's prompt instead, which asks for CSV rows
``question,difficulty,answer`` (never schema-constrained). Replies are parsed tolerantly whatever was
asked for (JSON, ``q # a # d %`` lines, CSV in either column order).

- **Key**: read from the environment only (``GEMINI_API_KEY``, else ``GOOGLE_API_KEY``; the
  ``api_key_env`` option names other variables). It is never an option, never logged, and any text
  that could reach a log, an error, the report or the stored replies has it masked.
- **Throughput**: ``concurrency`` requests in flight, started no faster than ``rpm`` per minute.
- **Retries**: HTTP 408/429/5xx and network errors are retried up to ``max_retries`` times, waiting
  ``backoff * 2**attempt`` seconds (at most ``max_backoff``; longer if the server's RetryInfo asks for it).
  Other errors fail the listing; a failed listing is not stored and is tried again on the next run.
- **Cost**: prompt and output token counts from each reply's usage metadata, priced at
  ``input_price``/``output_price`` US dollars per million tokens (defaults: Gemini 2.0 Flash paid tier).
- ``base_url`` points the SDK at another endpoint that speaks the ``generateContent`` REST shape.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from vlmbench.api import (
    Arg,
    AssetMissingError,
    GenerationResult,
    Generator,
    Job,
    Pacer,
    SecretMask,
    VlmbenchError,
    items_from_reply,
)
from vlmbench_plugins.generators.prompting import (
    COLUMNS,
    PROMPT_ARGS,
    prompt_identity,
    reply_format,
    template_for,
)

DEFAULT_KEY_VARIABLES = "GEMINI_API_KEY,GOOGLE_API_KEY"
RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
RESPONSE_SCHEMA = {
    "type": "ARRAY",
    "items": {
        "type": "OBJECT",
        "properties": {
            "question": {"type": "STRING"},
            "answer": {"type": "STRING"},
            "difficulty": {"type": "INTEGER"},
        },
        "required": ["question", "answer", "difficulty"],
    },
}
_RETRY_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


class GeminiGenerator(Generator):
    args = {
        "model": Arg(str, "gemini-2.0-flash", "Gemini model id"),
        "questions": Arg(int, 5, "questions asked for per listing"),
        **PROMPT_ARGS,
        "structured": Arg(
            bool,
            True,
            "constrain the reply to a JSON schema (false: the study's '#'/'%' line format); default prompt only",
        ),
        "temperature": Arg(float, None, "sampling temperature (default: the model's)"),
        "send_image": Arg(bool, True, "send the product image with the prompt"),
        "concurrency": Arg(int, 4, "requests in flight", affects_output=False),
        "rpm": Arg(float, 15.0, "at most this many requests per minute (0: no limit)", affects_output=False),
        "max_retries": Arg(
            int, 5, "retries of a request after 408/429/5xx or a network error", affects_output=False
        ),
        "backoff": Arg(
            float, 2.0, "first retry delay in seconds, doubled on each retry", affects_output=False
        ),
        "max_backoff": Arg(float, 60.0, "longest retry delay in seconds", affects_output=False),
        "timeout": Arg(float, 120.0, "seconds to wait for one reply", affects_output=False),
        "base_url": Arg(str, "", "API endpoint (default: Google's)", affects_output=False),
        "api_key_env": Arg(
            str,
            DEFAULT_KEY_VARIABLES,
            "environment variables to read the API key from, in order",
            affects_output=False,
        ),
        "input_price": Arg(float, 0.10, "US dollars per million prompt tokens", affects_output=False),
        "output_price": Arg(float, 0.40, "US dollars per million output tokens", affects_output=False),
    }
    version = "1"

    def __init__(self, entry, args):
        super().__init__(entry, args)
        self.template = template_for(args)
        self._key: str | None = None
        self._mask = SecretMask([])
        self._client = None
        self._lock = threading.Lock()
        self._totals: dict[str, float] = {
            "requests": 0, "retries": 0, "failed_listings": 0, "prompt_tokens": 0, "output_tokens": 0,
        }  # fmt: skip
        if args["questions"] < 1 or args["concurrency"] < 1 or args["max_retries"] < 0:
            raise VlmbenchError(
                "generator 'gemini': questions and concurrency must be at least 1, max_retries at least 0"
            )

    def identity(self) -> dict[str, Any]:
        return prompt_identity(super().identity(), self.arg_values, self.template, "structured")

    def _reply_format(self) -> str:
        return reply_format(self.arg_values, "json" if self.arg_values["structured"] else "delimited")

    # -- setup -----------------------------------------------------------------------------------
    def _key_variables(self) -> list[str]:
        return [n.strip() for n in self.arg_values["api_key_env"].split(",") if n.strip()]

    def _key_from_environment(self) -> str | None:
        # Stray whitespace (a line read from a .env file) is no part of a key.
        return next(
            (os.environ[n].strip() for n in self._key_variables() if os.environ.get(n, "").strip()), None
        )

    def secrets(self) -> list[str]:
        key = self._key_from_environment()
        return [key] if key else []

    def setup(self) -> None:
        names = self._key_variables()
        key = self._key_from_environment()
        if not key:
            raise AssetMissingError(
                "a Gemini API key",
                f"set {' or '.join(names)} in the environment (the key is never read from options or files)",
            )
        try:
            from google import genai
            from google.genai import types
        except ImportError:
            raise AssetMissingError(
                "the google-genai package", "install it with `pip install 'vlmbench[gemini]'`"
            ) from None
        self._key = key
        self._mask = SecretMask([key])
        options = types.HttpOptions(
            timeout=int(self.arg_values["timeout"] * 1000), base_url=self.arg_values["base_url"] or None
        )
        self._client = genai.Client(api_key=key, vertexai=False, http_options=options)
        self._types = types
        self._limiter = Pacer(self.arg_values["rpm"])
        self._rng = random.Random()

    def redact(self, text: str) -> str:
        """``text`` with the API key and any piece of it masked, in any case (for anything shown or stored)."""
        return self._mask.mask(text)

    # -- generation ------------------------------------------------------------------------------
    def generate_many(self, jobs: Iterable[Job]) -> Iterator[GenerationResult]:
        limit = self.arg_values["concurrency"]
        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="gemini") as pool:
            in_flight: set = set()
            for job in jobs:
                in_flight.add(pool.submit(self.generate, job))
                if len(in_flight) >= 2 * limit:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            while in_flight:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()

    def generate(self, job: Job) -> GenerationResult:
        try:
            # A reply that echoes the key or any 8-character piece of it (in any case) loses those items,
            # counted as contains_secret; its raw text and errors are masked (see SecretMask).
            return self._mask.screen(self._generate(job))
        except Exception as exc:  # never let one listing stop the others; never leak the key
            self._count(failed_listings=1)
            return GenerationResult(
                key=job.listing.key, error=f"error: {type(exc).__name__}: {self.redact(str(exc))}"
            )

    def _generate(self, job: Job) -> GenerationResult:
        from google.genai import errors

        types = self._types
        a = self.arg_values
        mode = self._reply_format()
        prompt = self.template.render(job.listing, a["questions"], mode)
        contents: list[Any] = [prompt]
        if a["send_image"]:
            contents.append(types.Part.from_bytes(data=job.image(), mime_type=job.image_mime))
        settings: dict[str, Any] = {"temperature": a["temperature"]}
        if mode == "json":
            settings.update(response_mime_type="application/json", response_schema=RESPONSE_SCHEMA)
        config = types.GenerateContentConfig(**settings)
        attempt = 0
        while True:
            self._limiter.wait()
            self._count(requests=1)
            try:
                response = self._client.models.generate_content(
                    model=a["model"], contents=contents, config=config
                )
                break
            except errors.APIError as exc:
                code = int(getattr(exc, "code", 0) or 0)
                reason, retryable, hint = f"http_{code}", code in RETRYABLE, _retry_hint(exc)
                detail = getattr(exc, "message", None) or str(exc)
            except Exception as exc:
                if not _is_transport_error(exc):
                    raise
                reason, retryable, hint, detail = "network", True, None, f"{type(exc).__name__}: {exc}"
            if not retryable or attempt >= a["max_retries"]:
                self._count(failed_listings=1)
                tries = f" after {attempt + 1} attempts" if attempt else ""
                return GenerationResult(
                    key=job.listing.key, error=f"{reason}: {self.redact(str(detail))}{tries}"
                )
            delay = min(a["max_backoff"], a["backoff"] * 2**attempt) * (1 + 0.1 * self._rng.random())
            if hint is not None:
                delay = max(delay, min(hint, a["max_backoff"]))
            attempt += 1
            self._count(retries=1)
            time.sleep(delay)
        return self._result(job, response, attempt)

    def _result(self, job: Job, response, attempt: int) -> GenerationResult:
        a = self.arg_values
        usage = getattr(response, "usage_metadata", None)
        prompt_tokens = int(getattr(usage, "prompt_token_count", 0) or 0)
        output_tokens = int(getattr(usage, "candidates_token_count", 0) or 0)
        cost = (prompt_tokens * a["input_price"] + output_tokens * a["output_price"]) / 1e6
        self._count(prompt_tokens=prompt_tokens, output_tokens=output_tokens)
        try:
            text = response.text or ""
        except (ValueError, AttributeError):
            text = ""
        items, rejected = items_from_reply(
            text, self.name, source=a["model"], columns=COLUMNS[self._reply_format()]
        )
        if not text:
            rejected = {"empty_reply": 1}
        return GenerationResult(
            key=job.listing.key,
            items=items,
            rejected=rejected,
            usage={
                "requests": attempt + 1,
                "prompt_tokens": prompt_tokens,
                "output_tokens": output_tokens,
                "cost_usd": round(cost, 8),
            },
            # kept (masked whole, then cut) when any of it could not be read, for the report's examples
            raw=self.redact(text)[:2000] if text and (not items or rejected) else None,
        )

    def _count(self, **amounts: float) -> None:
        with self._lock:
            for k, v in amounts.items():
                self._totals[k] += v

    def usage(self) -> dict[str, Any]:
        with self._lock:
            totals = dict(self._totals)
        cost = (totals["prompt_tokens"] * self.arg_values["input_price"]
                + totals["output_tokens"] * self.arg_values["output_price"]) / 1e6  # fmt: skip
        return {**{k: int(v) for k, v in totals.items()}, "cost_usd": round(cost, 6)}


def _retry_hint(exc: Exception) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail ("retryDelay": "30s"), if the error carries one."""
    details = getattr(exc, "details", None)
    error = details.get("error", details) if isinstance(details, dict) else None
    for entry in (error or {}).get("details", []) if isinstance(error, dict) else []:
        if isinstance(entry, dict) and "retryDelay" in entry:
            m = _RETRY_DELAY.match(str(entry["retryDelay"]))
            if m:
                return float(m.group(1))
    return None


def _is_transport_error(exc: Exception) -> bool:
    """Timeouts, refused or dropped connections (httpx's transport errors, or OS-level ones)."""
    module = type(exc).__module__ or ""
    return isinstance(exc, (ConnectionError, TimeoutError)) or module.split(".")[0] in (
        "httpx",
        "httpx2",
        "httpcore",
    )
