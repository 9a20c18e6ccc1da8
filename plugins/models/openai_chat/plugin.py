"""The ``openai-chat`` model plugin: each request becomes a call of ``/v1/chat/completions``.

What it sends is what the in-process chat models see (the system prompt and the prompt template of
:class:`vlmbench.api.ChatVLM`, the task's template for ``family``), with the image file's own bytes.
Answers go through the run's prediction cache like any model's; a request that failed is never an
answer: it is skipped with the server's message (a 4xx, a body that is not a completion) and counted,
or — when the server is gone or fails ``max_failures_in_a_row`` requests in a row — the model stops
with what was stored kept, so the same command resumes.

Identity: the server's address (without credentials), the model id it serves and its ``/v1/models``
entry are part of the fingerprint, so two servers never share cached answers; results.json adds what
the responses said (``model``, ``system_fingerprint``), token usage and latency percentiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from vlmbench.api import (
    Arg,
    Batch,
    ChatVLM,
    GenerationSpec,
    Model,
    ModelFailed,
    Request,
    SampleError,
    SecretMask,
    UnsupportedTask,
)
from vlmbench_plugins.models.openai_chat import payload, server
from vlmbench_plugins.models.openai_chat.connection import Connection, Policy, RequestFailed

_SECRET_FRAGMENT = 6  # shortest run of a key's characters that is masked wherever it shows up
_REASONS = {"rejected": "request_rejected", "bad_response": "bad_response", "server_error": "server_error"}


class OpenAIChat(Model):
    args = {
        "base_url": Arg(str, "http://localhost:8000/v1", "the server's OpenAI-compatible API root (…/v1)"),
        "model": Arg(str, None, "model name sent with each request (default: the one model the server lists)"),
        "system_prompt": Arg(
            str, ChatVLM.args["system_prompt"].default, "system message (empty: none), as for in-process chat models"
        ),
        "family": Arg(
            str, None, "use the task's prompt template for this model family (e.g. qwen2.5-vl); default: its own"
        ),
        "image_detail": Arg(str, None, "OpenAI's image detail (sent only when given)", choices=("auto", "low", "high")),
        "max_tokens_field": Arg(
            str, "max_tokens", "the field the answer length is sent in (OpenAI's newer models take "
            "max_completion_tokens)", choices=("max_tokens", "max_completion_tokens"),
        ),
        "rank_normalize": Arg(
            str, "sum", "candidate score: 'sum' of token log-probabilities, or their 'mean'", choices=("sum", "mean")
        ),
        "num_concurrent": Arg(int, 4, "requests in flight at once", affects_output=False, min=1, max=1024),
        "timeout": Arg(float, 120.0, "seconds one attempt of a request may take", affects_output=False, min=0.001),
        "max_retries": Arg(
            int, 5, "retries of a request after a connection error, timeout, 429 or 5xx", affects_output=False, min=0
        ),
        "backoff": Arg(float, 0.5, "first wait before a retry, in seconds (doubled each time, with jitter)",
                       affects_output=False, min=0),
        "backoff_max": Arg(float, 30.0, "longest wait between retries, in seconds", affects_output=False, min=0),
        "requests_per_minute": Arg(
            float, None, "start requests no faster than this (default: no limit)", affects_output=False, min=0.001
        ),
        "max_failures_in_a_row": Arg(
            int, 32, "failed requests in a row after which the server counts as broken and the model stops",
            affects_output=False, min=1,
        ),
        "api_key_env": Arg(
            str, "OPENAI_API_KEY", "environment variable holding the API key (the key itself is never an option)",
            affects_output=False,
        ),
    }  # fmt: skip
    default_prompt: ClassVar[str | None] = ChatVLM.default_prompt
    wants_image_bytes = True
    checkpoint_args: ClassVar[tuple[str, ...]] = ("model", "base_url")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        values = self.arg_values
        self.endpoint = server.endpoint(values["base_url"])
        chosen = values["api_key_env"] != self.args["api_key_env"].default
        key = server.api_key(values["api_key_env"], chosen)
        self._mask = SecretMask([key or "", *self.endpoint.secrets], fragment=_SECRET_FRAGMENT)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._policy = Policy(
            concurrency=values["num_concurrent"],
            timeout=values["timeout"],
            max_retries=values["max_retries"],
            backoff=values["backoff"],
            backoff_max=values["backoff_max"],
            requests_per_minute=values["requests_per_minute"],
        )
        self._connection: Connection | None = None
        self._served: tuple[str, dict | None] | None = None
        self._failures_in_a_row = 0
        self._last_failure = ""
        self._stopped: str | None = None

    # -- the server --------------------------------------------------------------------------------
    @property
    def connection(self) -> Connection:
        if self._connection is None:
            self._connection = Connection(
                self.endpoint.url, self._headers, self._policy, self._mask, self.endpoint.params
            )
        return self._connection

    def served(self) -> tuple[str, dict | None]:
        """The model id requests name and its ``/v1/models`` entry, asked of the server once."""
        if self._served is None:
            requested = self.arg_values["model"]
            self._served = self.connection.run(
                server.served_model(self.connection, requested, self.endpoint.shown)
            )
        return self._served

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started with "spawn" get a copy: they build messages, never connect.
        return {**self.__dict__, "_connection": None}

    # -- planning ----------------------------------------------------------------------------------
    def prompt_family(self) -> str:
        return self.arg_values["family"] or super().prompt_family()

    def check_request_type(self, kind: str) -> None:
        model = self.served()[0]
        if kind != "rank":
            return
        why = self.connection.run(server.prompt_logprobs_support(self.connection, model, self.endpoint.shown))
        if why is not None:
            raise UnsupportedTask(
                f"ranking needs the log-probabilities of prompt tokens (vLLM's prompt_logprobs) and the server "
                f"at {self.endpoint.shown} does not return them: {why}"
            )

    def preferred_batch_size(self) -> int:
        # Several times the concurrency: the requests of a batch keep every slot busy until its tail.
        return 4 * self.arg_values["num_concurrent"]

    # -- identity ----------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        model, entry = self.served()
        ident = super().identity()
        del ident["dtype"]  # the server's to choose, and not known here
        for name in self.checkpoint_args:
            ident["args"].pop(name, None)
        ident["server"] = {"base_url": self.endpoint.shown, "model": model, "listed": entry}
        return ident

    def checkpoint_tag(self) -> str | None:
        return self.served()[0].rstrip("/").rsplit("/", 1)[-1] or None

    def describe(self) -> dict[str, Any]:
        info = {**super().describe(), "device": None, "dtype": None}
        model, entry = self.served()
        stats = self._connection.stats if self._connection is not None else None
        info["server"] = {
            "base_url": self.endpoint.shown,
            "model": model,
            "listed": entry,
            "response_models": sorted(stats.response_models) if stats and stats.response_models else None,
            "system_fingerprints": sorted(stats.system_fingerprints)
            if stats and stats.system_fingerprints
            else None,
        }
        info["usage"] = dict(stats.usage) if stats and stats.usage else None
        return info

    def timings(self) -> dict[str, Any]:
        stats = self._connection.stats if self._connection is not None else None
        if stats is None or not stats.latencies:
            return {}
        seconds = np.asarray(stats.latencies)
        return {
            "request_latency_seconds": {
                "count": int(seconds.size),
                "mean": float(seconds.mean()),
                **{f"p{q}": float(np.percentile(seconds, q)) for q in (50, 90, 95, 99)},
                "max": float(seconds.max()),
            },
            "request_retries": dict(stats.retries),
            "requests_failed": dict(stats.failed),
        }

    # -- answering ---------------------------------------------------------------------------------
    def collate(self, requests: list[Request]) -> list[list[dict]]:
        """The conversations of a batch, images inline (in a DataLoader worker when there are any)."""
        return [
            payload.messages(r, self.arg_values["system_prompt"], self.arg_values["image_detail"])
            for r in requests
        ]

    def _conversations(self, batch: Batch) -> list[list[dict]]:
        return batch.inputs if batch.inputs is not None else self.collate(batch.requests)

    def generate(self, batch: Batch, generation: GenerationSpec) -> list[str | SampleError | ModelFailed]:
        if generation.num_beams > 1:
            raise ModelFailed(
                f"model {self.name!r}: beam search (num_beams={generation.num_beams}) is not part of the "
                "chat-completions API; use --gen-kwargs num_beams=1"
            )
        model = self.served()[0]
        fields = payload.sampling(generation, self.seed, self.arg_values["max_tokens_field"])
        bodies = [{"model": model, "messages": m, **fields} for m in self._conversations(batch)]
        return self._answer(bodies, payload.answer_text)

    def rank(self, batch: Batch) -> list[list[float] | SampleError | ModelFailed]:
        model = self.served()[0]
        normalize = self.arg_values["rank_normalize"]
        bodies, parsers, owners = [], [], []
        for i, (request, conversation) in enumerate(
            zip(batch.requests, self._conversations(batch), strict=True)
        ):
            for candidate in request.candidates:
                bodies.append({"model": model, **payload.rank_body(conversation, candidate)})
                parsers.append(_scorer(candidate, normalize))
                owners.append(i)
        results = self._answer(bodies, parsers)
        out: list[Any] = [[] for _ in batch.requests]
        for owner, result in zip(owners, results, strict=True):
            if isinstance(out[owner], list):
                out[owner] = result if isinstance(result, Exception) else [*out[owner], result]
        return out

    def _answer(self, bodies: list[dict], parse: Any) -> list[Any]:
        """Send every body (``num_concurrent`` at a time); each one's parsed answer, else a SampleError,
        or a ModelFailed for those left when the server went away or kept failing."""
        parsers = parse if isinstance(parse, list) else [parse] * len(bodies)
        jobs = [self._job(body, p) for body, p in zip(bodies, parsers, strict=True)]
        return self.connection.run(self.connection.each(jobs))

    def _job(self, body: dict, parse: Callable[[dict], Any]) -> Callable[[], Any]:
        async def job() -> Any:
            if self._stopped is not None:
                return ModelFailed(self._stopped)
            try:
                data = await self.connection.request("POST", "/chat/completions", body)
                try:
                    value = parse(data)
                except (ValueError, TypeError, AttributeError) as exc:
                    raise RequestFailed("bad_response", self._mask.mask(str(exc))) from None
            except RequestFailed as exc:
                return self._failed(exc)
            self._failures_in_a_row = 0
            return value

        return job

    def _failed(self, exc: RequestFailed) -> SampleError | ModelFailed:
        self._failures_in_a_row += 1
        self._last_failure = exc.message
        limit = self.arg_values["max_failures_in_a_row"]
        if self._stopped is None and (exc.kind == "unreachable" or self._failures_in_a_row >= limit):
            what = (
                "stopped answering"
                if exc.kind == "unreachable"
                else f"failed {self._failures_in_a_row} requests in a row"
            )
            self._stopped = (
                f"the server at {self.endpoint.shown} {what} (the last: {exc.message}); the answers received "
                "before are stored: run the same command again to resume"
            )
        if self._stopped is not None:
            return ModelFailed(self._stopped)
        return SampleError(_REASONS[exc.kind], exc.message)


def _scorer(candidate: str, normalize: str) -> Callable[[dict], float]:
    def score(data: dict) -> float:
        return payload.candidate_score(payload.prompt_token_logprobs(data), candidate, normalize)

    return score
