"""``openai-chat`` against a real OpenAI-compatible server: ``transformers serve`` with the tiny Qwen2.5-VL
checkpoint, started once per test session on a free localhost port. Its greedy answers on the bundled
``abo_sample`` task are the in-process ``qwen2.5-vl`` plugin's, in fp32 on both sides."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from vlmbench.api import RunConfig, UnsupportedTask, evaluate, plan_run

SERVE_EXTRA = all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "openai"))
pytestmark = pytest.mark.skipif(
    not SERVE_EXTRA, reason="transformers' serve extra is not installed (pip install 'transformers[serving]')"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture(scope="session")
def serve(tiny_checkpoint, tmp_path_factory):
    """``transformers serve CHECKPOINT`` (pinned to the tiny checkpoint, fp32 on the CPU, offline):
    started, polled until ``/health`` answers, stopped at the end of the session."""
    checkpoint = tiny_checkpoint("qwen2.5-vl")
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(checkpoint), "--device", "cpu",
               "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port), "--log-level", "error"]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"transformers serve exited with {process.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                if _get(f"{base}/health").get("status") == "ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not answer within 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield f"{base}/v1", checkpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _raw(run_dir: Path) -> dict[str, str]:
    lines = (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return {row["sample_id"]: row["raw"] for row in map(json.loads, lines)}


def _comparable(text: str) -> str:
    """An answer as both sides decode it alike: without special tokens and non-ASCII characters (bytes of
    one UTF-8 character that a special token splits decode to U+FFFD on one side and merge on the other)."""
    return re.sub(r"<\|[a-z_]+\|>|[^\x00-\x7f]", "", text).strip()


@pytest.mark.slow(seconds=32)
def test_answers_on_abo_sample_equal_the_in_process_plugin(serve, tmp_path, one_torch_thread):
    """Every sample of abo_sample, with the task's generation settings (greedy, ten tokens): the server's
    answer is the in-process plugin's. The answers of a
    random tiny model are byte tokens and special tokens, which transformers serve decodes and parses
    (with its Qwen response template) otherwise than the plugin's ``skip_special_tokens`` decode: where
    the texts differ, they are equal without special tokens and split bytes, or the server's parser kept
    only the end of the text. A real model writes neither in an answer."""
    base_url, checkpoint = serve
    options = {
        "metrics": ["exact_match"],
        "output_dir": tmp_path / "runs",
        "progress": False,
        "num_workers": 0,
    }
    local = evaluate(
        "qwen2.5-vl", "abo_sample", model_args={"pretrained": str(checkpoint)}, cache=False, **options
    )
    server_args = {"base_url": base_url, "num_concurrent": "2"}
    served = evaluate(
        "openai-chat", "abo_sample", model_args=server_args, cache=tmp_path / "c.sqlite", **options
    )
    assert local.computed == served.computed == 225
    ours, theirs = _raw(local.run_dir), _raw(served.run_dir)
    equal = [k for k in ours if ours[k] == theirs[k]]
    print(f"\nequal answers: {len(equal)} of {len(ours)}")
    assert len(equal) >= 0.75 * len(ours)
    for k in ours:
        mine, served_text = _comparable(ours[k]), _comparable(theirs[k])
        assert mine == served_text or mine.endswith(served_text), (ours[k], theirs[k])

    model = served.results["model"]
    assert model["server"]["model"] == str(checkpoint) and model["server"]["listed"]["owned_by"] == "local"
    assert model["usage"]["requests"] == 225 and model["usage"]["completion_tokens"] > 0
    rerun = evaluate(
        "openai-chat", "abo_sample", model_args=server_args, cache=tmp_path / "c.sqlite", **options
    )
    assert rerun.computed == 0 and rerun.cached == 225


@pytest.mark.slow  # it starts the server when the parity test has not
def test_ranking_is_refused_before_any_request_and_logprobs_are_ignored(serve, tmp_path):
    """transformers serve rejects vLLM's prompt_logprobs (HTTP 422): a ranking task is an UnsupportedTask
    found while planning. It accepts ``logprobs`` and answers without them (the documented difference)."""
    base_url, checkpoint = serve
    with pytest.raises(UnsupportedTask, match="HTTP 422: Unexpected fields in the request"):
        plan_run("openai-chat", "abo_sample_rank", RunConfig(output_dir=tmp_path, cache=False),
                 model_args={"base_url": base_url})  # fmt: skip
    body = {"model": str(checkpoint), "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
            "temperature": 0, "logprobs": True, "top_logprobs": 2}  # fmt: skip
    request = urllib.request.Request(
        f"{base_url}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        choice = json.loads(response.read())["choices"][0]
    assert choice.get("logprobs") is None
