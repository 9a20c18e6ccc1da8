"""An OpenAI-compatible chat-completions server in the test process, whose faults the tests script.

``FakeServer`` serves ``GET /v1/models`` and ``POST /v1/chat/completions`` on a free localhost port from a
thread (``http.server``: one connection per request, so a closed server refuses the next one). Each
completion request is logged with the sample it is about; ``server.reply`` decides the answer — by
default a word derived from the prompt and image, so every sample has its own known answer — and a
test replaces it to inject a fault: an HTTP status, a body that is not JSON, a hang, a closed server.
Ranking requests (``prompt_logprobs``) get per-character prompt log-probabilities, vLLM's format, when
``server.logprobs`` is true.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the server does with one request: answer ``body`` with ``status`` and ``headers``, send
    ``raw`` bytes as the body instead, or first wait ``delay`` seconds (a hang, past a client's timeout)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    delay: float = 0.0


@dataclass
class Call:
    """One logged completion request: the sample it was about (prompt + image bytes), the body sent."""

    key: str
    prompt: str
    image: bytes | None
    body: dict
    headers: dict[str, str]


def sample_key(prompt: str, image: bytes | None) -> str:
    return hashlib.sha256(prompt.encode() + b"\0" + (image or b"")).hexdigest()[:12]


def answer_for(key: str) -> str:
    return f"word{int(key[:6], 16) % 997}"


class FakeServer:
    def __init__(self, model: str = "fake-vlm", port: int = 0):
        self.model = model
        self.calls: list[Call] = []
        self.logprobs = False
        self.preferred: str | None = None  # the candidate ranking favours
        self.reply: Callable[[Call, int], Reply] = self.answer
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        """Stop listening: the next connection is refused."""
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the server answers -----------------------------------------------------------------------
    def completion(self, content: Any) -> dict:
        return {
            "id": "cmpl-test",
            "object": "chat.completion",
            "model": self.model,
            "system_fingerprint": "fp_test",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22},
        }

    def answer(self, call: Call, count: int) -> Reply:
        """The default: the sample's own word, or ranking scores when asked and supported."""
        if "prompt_logprobs" in call.body:
            if not self.logprobs:
                return Reply(400, {"error": {"message": "Unrecognized request argument: prompt_logprobs"}})
            return Reply(200, {**self.completion("x"), "prompt_logprobs": self._prompt_logprobs(call)})
        return Reply(200, self.completion(f"  {answer_for(call.key)}\n"))

    def _prompt_logprobs(self, call: Call) -> list:
        candidate = call.body["messages"][-1]["content"]
        cost = 0.1 if candidate == self.preferred else 1.0
        entries: list = [None, {"7": {"logprob": -0.5, "rank": 1, "decoded_token": "\n"}}]
        for i, char in enumerate(candidate):  # one token per character
            entries.append({str(100 + i): {"logprob": -cost, "rank": 1, "decoded_token": char}})
        return entries

    def answered(self) -> list[str]:
        """The sample keys of the completion requests, in the order they arrived."""
        return [c.key for c in self.calls]

    def _log(self, body: dict, headers: dict[str, str]) -> Call:
        messages = body.get("messages") or []
        user = next((m for m in messages if m.get("role") == "user"), {})
        content = user.get("content")
        prompt, image = (content, None) if isinstance(content, str) else ("", None)
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "text":
                prompt = part["text"]
            elif part.get("type") == "image_url":
                image = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
        call = Call(sample_key(prompt, image), prompt, image, body, headers)
        with self._lock:
            self.calls.append(call)
        return call


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, reply: Reply) -> None:
            data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            # The client may have given up (a timeout): then there is nobody to answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/v1/models"):
                listed = {
                    "id": server.model,
                    "object": "model",
                    "owned_by": "tests",
                    "created": int(time.time()),
                }
                self._send(Reply(200, {"object": "list", "data": [listed]}))
            else:
                self._send(Reply(404, {"error": {"message": "not found"}}))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            call = server._log(body, dict(self.headers))
            with server._lock:
                server.in_flight += 1
                server.most_in_flight = max(server.most_in_flight, server.in_flight)
                count = len(server.calls)
            try:
                reply = server.reply(call, count)
                if reply.delay:
                    time.sleep(reply.delay)
                self._send(reply)
            finally:
                with server._lock:
                    server.in_flight -= 1

    return Handler
