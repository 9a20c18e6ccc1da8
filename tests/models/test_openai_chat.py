"""``openai-chat`` against an in-process fake server: what it sends, what it records, and each fault a
server can have — for each, the exit status, the skip counts, a cache holding only right answers and
every answered sample exactly once. The real-server parity test is in test_openai_serve.py."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from vlmbench.api import load_plugins
from vlmbench.cli import cli
from vlmbench.errors import VlmbenchError
from vlmbench.plugin.registry import ModelEntry, Registry
from vlmbench.plugin.secrets import SecretMask

from .fake_openai import Call, FakeServer, Reply, answer_for, sample_key
from vlmbench_testing import cached_answers, run_cli, start_cli, stop, wait_until

# Tiny waits: faults are found in milliseconds, not in the defaults' seconds.
FAST = "timeout=2,backoff=0.01,backoff_max=0.05"


@pytest.fixture
def server():
    with FakeServer() as fake:
        yield fake


def _run(task: Path, tmp_path: Path, base_url: str, *extra: str, args: str = "", name: str = "openai-chat"):
    cache = tmp_path / "cache.sqlite"
    # The test's own settings win over FAST's: a key given twice is an error.
    given = dict(kv.split("=", 1) for kv in f"{FAST},{args}".strip(",").split(","))
    settings = ",".join(f"{k}={v}" for k, v in given.items())
    argv = ["run", "-m", name, "-a", f"base_url={base_url},{settings}",
            "-t", str(task), "-o", str(tmp_path / "runs"), "--cache", str(cache), "--num-workers", "0", "-q", *extra]  # fmt: skip
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    return result, cache


def _results(tmp_path: Path) -> dict:
    (path,) = (tmp_path / "runs").glob("*/*/results.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _predictions(tmp_path: Path) -> list[dict]:
    (path,) = (tmp_path / "runs").glob("*/*/predictions.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _key(task: Path, row: dict) -> str:
    return sample_key(row["prompt"], (task.parent / "images" / row["image"]).read_bytes())


def _check_store(task: Path, tmp_path: Path, cache: Path) -> dict[str, str]:
    """Every cached answer is its own sample's (never another's, never an error text), once; every
    row of predictions.jsonl that is ok is that answer. Returns sample id -> key of the cached ones."""
    with sqlite3.connect(cache) as db:
        rows = db.execute("SELECT sample_id, raw FROM predictions").fetchall()
    assert len(rows) == len({sid for sid, _ in rows})
    by_id = {row["sample_id"]: row for row in _predictions(tmp_path)}
    for sid, raw in rows:
        assert raw == answer_for(_key(task, by_id[sid]))
    ok = {sid for sid, row in by_id.items() if row["status"] == "ok"}
    assert ok == {sid for sid, _ in rows}
    return {sid: _key(task, by_id[sid]) for sid, _ in rows}


def test_answers_identity_usage_and_a_rerun_that_sends_nothing(model_task, tmp_path, server):
    """The alias and lm-eval's full endpoint URL work; the request is what an in-process chat model sees
    (system prompt, prompt, the file's own bytes with their MIME type, max_tokens, temperature 0)."""
    server.reply = lambda call, count: Reply(**{**vars(server.answer(call, count)), "delay": 0.05})
    first, cache = _run(
        model_task.generate, tmp_path, server.base_url + "/chat/completions", args="num_concurrent=3",
        name="local-chat-completions",
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    assert "(12 computed, 0 cached)" in first.output
    assert len(_check_store(model_task.generate, tmp_path, cache)) == 12
    body = server.calls[0].body
    assert body["model"] == "fake-vlm" and body["max_tokens"] == 4 and body["temperature"] == 0.0
    assert body["messages"][0] == {
        "role": "system",
        "content": "You answer questions about product images with exactly one word.",
    }
    assert server.calls[0].prompt.endswith(" Answer with exactly one word.")
    urls = {c.body["messages"][1]["content"][0]["image_url"]["url"].split(";")[0] for c in server.calls}
    assert urls == {"data:image/png", "data:image/jpeg"}  # PNG and JPEG files sent as they are
    files = {p.read_bytes() for p in (model_task.folder / "images").rglob("*.*")}
    assert {c.image for c in server.calls} == files
    assert 1 < server.most_in_flight <= 3

    results = _results(tmp_path)
    model = results["model"]
    assert model["name"] == "openai-chat" and model["label"] == "openai-chat[fake-vlm]"
    assert model["server"]["base_url"] == server.base_url and model["server"]["model"] == "fake-vlm"
    assert model["server"]["response_models"] == ["fake-vlm"]
    assert model["server"]["system_fingerprints"] == ["fp_test"]
    assert model["identity"]["server"] == {
        "base_url": server.base_url, "model": "fake-vlm", "listed": {"id": "fake-vlm", "owned_by": "tests"},
    }  # fmt: skip
    assert model["usage"] == {
        "requests": 12,
        "prompt_tokens": 240,
        "completion_tokens": 24,
        "total_tokens": 264,
    }
    latency = results["timing"]["request_latency_seconds"]
    assert latency["count"] == 12 and 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert results["config"]["batch_size"] == 12  # 4 x num_concurrent

    again, _ = _run(model_task.generate, tmp_path, server.base_url, args="num_concurrent=3")
    assert again.exit_code == 0 and "(0 computed, 12 cached)" in again.output
    assert len(server.calls) == 12  # only the model list was asked for


def test_two_servers_never_share_answers(model_task, tmp_path, server):
    with FakeServer(model="other-vlm") as other:
        a, _ = _run(model_task.generate, tmp_path, server.base_url)
        b, _ = _run(model_task.generate, tmp_path, other.base_url)
        assert a.exit_code == b.exit_code == 0
        assert "(12 computed, 0 cached)" in b.output and len(other.calls) == 12
    folders = sorted(p.name for p in (tmp_path / "runs").glob("*/*"))
    assert len(folders) == 2 and folders[0] != folders[1]


def test_500s_then_success_and_429_with_retry_after(model_task, tmp_path, server):
    seen: dict[str, int] = {}

    def flaky(call: Call, count: int) -> Reply:
        seen[call.key] = seen.get(call.key, 0) + 1
        if count == 1:
            return Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "1"})
        if seen[call.key] <= 2 and count > 1:
            return Reply(500 if seen[call.key] == 1 else 503, {"error": {"message": "busy"}})
        return server.answer(call, count)

    server.reply = flaky
    result, cache = _run(model_task.generate, tmp_path, server.base_url, args="num_concurrent=1")
    assert result.exit_code == 0, result.output
    assert len(_check_store(model_task.generate, tmp_path, cache)) == 12
    results = _results(tmp_path)
    assert results["skipped_samples"] == {}
    retries = results["timing"]["request_retries"]
    assert retries == {"429": 1, "500": 11, "503": 12}  # the first sample: 429, then 503
    # the 429 asked for a second: the first sample's latency shows the wait was honoured
    assert results["timing"]["request_latency_seconds"]["max"] >= 1.0


def _fault_on_one_image(server: FakeServer, fault: Reply, image_suffix: bytes) -> list[str]:
    """The server answers every request, but those whose image ends with ``image_suffix`` get ``fault``."""
    hit: list[str] = []

    def reply(call: Call, count: int) -> Reply:
        if call.image is not None and call.image.endswith(image_suffix):
            hit.append(call.key)
            return fault
        return server.answer(call, count)

    server.reply = reply
    return hit


@pytest.mark.parametrize(
    ("fault", "reason", "tries"),
    [
        (Reply(400, {"error": {"message": "image too large for this model"}}), "request_rejected", 1),
        (Reply(200, raw=b"{not json"), "bad_response", 1),
        (Reply(200, {"id": "x", "choices": []}), "bad_response", 1),
        (Reply(200, {"choices": [{"message": {"role": "assistant"}}]}), "bad_response", 1),
        (Reply(200, {"ok": 1}, delay=1.0), "server_error", 2),  # a hang past the timeout, retried once
    ],
    ids=["400_one_image", "malformed_json", "empty_choices", "no_content", "hang_past_timeout"],
)
def test_a_fault_on_one_image_skips_only_its_samples(model_task, tmp_path, server, fault, reason, tries):
    png = next((model_task.folder / "images").rglob("*.png")).read_bytes()
    hit = _fault_on_one_image(server, fault, png[-16:])
    result, cache = _run(model_task.generate, tmp_path, server.base_url, args="timeout=0.3,max_retries=1")
    assert result.exit_code == 0, result.output
    results = _results(tmp_path)
    assert results["skipped_samples"] == {reason: 2}  # the image's two questions
    assert len(hit) == 2 * tries  # 4xx and bad bodies are never retried
    examples = " ".join(results["skipped_sample_examples"])
    if reason == "request_rejected":
        assert "HTTP 400: image too large for this model" in examples
    stored = _check_store(model_task.generate, tmp_path, cache)
    assert len(stored) == 10 and not set(hit) & set(stored.values())

    server.reply = server.answer  # the server is fixed: the rerun asks for the two skipped samples only
    before = len(server.calls)
    again, _ = _run(model_task.generate, tmp_path, server.base_url)
    assert again.exit_code == 0 and "(2 computed, 10 cached)" in again.output
    assert sorted(server.answered()[before:]) == sorted(set(hit))
    assert len(_check_store(model_task.generate, tmp_path, cache)) == 12


def test_connection_refused_mid_run_stops_and_resumes(model_task, tmp_path):
    fake = FakeServer()
    port = fake.port

    def stop_after_five(call: Call, count: int) -> Reply:
        if count == 6:
            threading.Thread(target=fake.close).start()  # closes the listening socket: the rest is refused
            return Reply(200, raw=b"")  # this one too ends without an answer
        return fake.answer(call, count)

    fake.reply = stop_after_five
    result, cache = _run(model_task.generate, tmp_path, fake.base_url, args="num_concurrent=1,max_retries=2")
    assert result.exit_code == 4, result.output  # nothing evaluated: the model stopped
    assert "stopped answering" in result.output and "run the same command again to resume" in result.output
    assert "Traceback" not in result.output
    results = _results(tmp_path)
    assert results["status"] == "skipped"
    with sqlite3.connect(cache) as db:
        stored = dict(db.execute("SELECT sample_id, raw FROM predictions").fetchall())
    assert len(stored) == 5 and len(fake.calls) == 6

    with FakeServer(port=port) as back:  # the server is back at the same address
        again, _ = _run(model_task.generate, tmp_path, back.base_url)
        assert again.exit_code == 0 and "(7 computed, 5 cached)" in again.output
        assert len(back.calls) == 7 and not set(back.answered()) & set(fake.answered()[:5])
        assert len(_check_store(model_task.generate, tmp_path, cache)) == 12


def test_unreachable_at_start_is_one_error_line(model_task, tmp_path):
    with FakeServer() as gone:
        url = gone.base_url
    result, _cache = _run(model_task.generate, tmp_path, url)
    assert result.exit_code == 2
    assert result.output.startswith("Error: cannot reach the OpenAI-compatible server at http://127.0.0.1:")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("results.json"))


@pytest.mark.parametrize("status", [500, 401])
def test_a_server_that_fails_every_request_is_one_line_not_a_row_each(model_task, tmp_path, server, status):
    server.reply = lambda call, count: Reply(status, {"error": {"message": "broken"}})
    result, cache = _run(
        model_task.generate, tmp_path, server.base_url, args="max_retries=1,max_failures_in_a_row=4"
    )
    assert result.exit_code == 4  # nothing evaluated
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert line.startswith("Error: openai-chat[fake-vlm] on ")
    assert f"failed 4 requests in a row (the last: HTTP {status}: broken" in line
    # At most the requests in flight when the fourth failed (4 at a time) finish; nothing more is sent.
    attempts = 1 if status == 401 else 2  # a 4xx is never retried
    assert 4 * attempts <= len(server.calls) <= (4 + 3) * attempts
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 0


def test_the_api_key_never_reaches_disk_or_output(model_task, tmp_path, server, monkeypatch):
    key = "sk-test-9f8e7d6c5b4a39281706"
    monkeypatch.setenv("MY_KEY", key)

    def echo(call: Call, count: int) -> Reply:
        assert call.headers.get("Authorization") == f"Bearer {key}"
        if count % 3 == 0:  # as hosted APIs do: the key, whole or in part, in an error message
            shown = key if count % 2 else f"{key[:10]}...{key[-6:]}"
            return Reply(400, {"error": {"message": f"Incorrect API key provided: {shown.upper()}"}})
        return server.answer(call, count)

    server.reply = echo
    result, _cache = _run(model_task.generate, tmp_path, server.base_url, args="api_key_env=MY_KEY")
    assert result.exit_code == 0, result.output
    assert _results(tmp_path)["skipped_samples"] == {"request_rejected": 4}
    mask = SecretMask([key], fragment=6)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    for text in [result.output, *(p.read_bytes().decode("utf-8", "replace") for p in written)]:
        assert not mask.found(text)
    assert "Incorrect API key provided: ***" in " ".join(_results(tmp_path)["skipped_sample_examples"])

    missing, _ = _run(model_task.generate, tmp_path, server.base_url, args="api_key_env=NO_SUCH_VARIABLE")
    assert missing.exit_code == 2 and "NO_SUCH_VARIABLE is not set" in missing.output


def test_ranking_with_prompt_logprobs_and_a_clear_refusal_without(model_task, tmp_path, server):
    server.logprobs, server.preferred = True, "yes"
    result, _ = _run(model_task.rank, tmp_path, server.base_url, "--metrics", "exact_match")
    assert result.exit_code == 0, result.output
    rows = _predictions(tmp_path)
    assert {r["raw"] for r in rows} == {"yes"}
    top = rows[0]["top_candidates"]
    assert top[0] == ["yes", pytest.approx(-0.3)]  # three characters at -0.1 each, the newline before not
    assert all(c.body["continue_final_message"] and c.body["prompt_logprobs"] == 0 for c in server.calls)

    server.logprobs = False
    before = len(server.calls)
    refused, _ = _run(model_task.rank, tmp_path / "b", server.base_url)
    assert refused.exit_code == 4
    assert "ranking needs the log-probabilities of prompt tokens" in refused.output
    assert "Unrecognized request argument: prompt_logprobs" in refused.output
    assert len(server.calls) == before + 1  # the one probe, before any request of the task


def test_beam_search_is_refused_before_any_request(model_task, tmp_path, server):
    result, _ = _run(model_task.generate, tmp_path, server.base_url, "--gen-kwargs", "num_beams=3")
    assert (
        result.exit_code == 4
        and "beam search (num_beams=3) is not part of the chat-completions API" in result.output
    )
    assert server.calls == []


def test_requests_per_minute_spaces_requests(model_task, tmp_path, server):
    started: list[float] = []

    def timed(call: Call, count: int) -> Reply:
        import time

        started.append(time.monotonic())
        return server.answer(call, count)

    server.reply = timed
    four_at_once = "requests_per_minute=600,num_concurrent=4"
    result, _ = _run(model_task.generate, tmp_path, server.base_url, "--limit", "4", args=four_at_once)
    assert result.exit_code == 0, result.output
    assert started[-1] - started[0] >= 3 * 0.1 * 0.9


def test_the_alias_resolves_and_names_stay_unique():
    plugins = load_plugins()
    assert plugins.models.get("local-chat-completions").name == "openai-chat"
    assert "local-chat-completions" not in plugins.models.names()
    registry: Registry = Registry("model")
    registry.add(ModelEntry("a", "m:A", aliases=("b",)))
    with pytest.raises(VlmbenchError, match="'b' is taken by 'a'"):
        registry.add(ModelEntry("c", "m:C", aliases=("b",)))
    with pytest.raises(VlmbenchError, match="'a' is taken"):
        registry.add(ModelEntry("d", "m:D", aliases=("a",)))


def test_secret_fragments_are_masked():
    mask = SecretMask(["sk-proj-ABCDEFGH12345678"], fragment=6)
    assert mask.mask("key sk-proj-abcdefgh12345678 used") == "key *** used"
    assert mask.mask("provided: sk-proj-AB****5678, and EFGH1234") == "provided: *******5678, and ***"
    assert mask.mask("nothing secret here") == "nothing secret here"


@pytest.mark.slow(seconds=17)
def test_sigkill_mid_run_then_resume(model_task, tmp_path, server):
    """A real vlmbench process killed with SIGKILL while requests are in flight: the rerun sends only what
    was not stored (at most the batch in flight again) and ends with each sample once."""
    server.reply = lambda call, count: Reply(**{**vars(server.answer(call, count)), "delay": 0.25})
    db = tmp_path / "cache.sqlite"
    args = ["run", "-m", "openai-chat", "-a", f"base_url={server.base_url},num_concurrent=2",
            "-t", str(model_task.generate), "-b", "4", "--cache", str(db), "-o", str(tmp_path / "runs"), "-q",
            "--num-workers", "0"]  # fmt: skip
    proc = start_cli(args)
    wait_until(lambda: cached_answers(db) >= 4, proc)
    assert stop(proc, signal.SIGKILL, timeout=30) == -signal.SIGKILL
    stored, sent = cached_answers(db), len(server.calls)
    assert 4 <= stored < 12 and stored <= sent <= stored + 4  # the batch in flight was lost, nothing else

    res = run_cli(args)
    assert res.returncode == 0, res.stderr
    assert f"({12 - stored} computed, {stored} cached)" in res.stderr
    again = server.answered()[sent:]
    # Only what was missing, each once: with all 12 stored in the end, none of these was stored before.
    assert len(again) == len(set(again)) == 12 - stored
    assert len(_check_store(model_task.generate, tmp_path, db)) == 12


def test_family_template_detail_and_no_system_prompt(model_task, tmp_path, server):
    import yaml

    spec = yaml.safe_load(model_task.generate.read_text(encoding="utf-8"))
    spec["prompt"] = {"default": "{question}", "qwen2.5-vl": "Q: {question} A:"}
    task = model_task.folder / "family_task.yaml"  # beside the data it names
    task.write_text(yaml.safe_dump({**spec, "task": "family_task"}), encoding="utf-8")
    settings = "family=qwen2.5-vl,image_detail=low,system_prompt="
    result, _ = _run(task, tmp_path, server.base_url, "--limit", "2", args=settings)
    assert result.exit_code == 0, result.output
    body = server.calls[0].body
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["messages"][0]["content"][0]["image_url"]["detail"] == "low"
    assert server.calls[0].prompt.startswith("Q: ") and server.calls[0].prompt.endswith(" A:")
