"""Contract tests of the `gemini` generator: the real google-genai SDK against a local server that
speaks the generateContent REST shape."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from vlmbench.cli import cli
from vlmbench.errors import AssetMissingError
from vlmbench.plugin.generator import Job
from vlmbench_plugins.datasets.abo import reader
from vlmbench_plugins.datasets.abo.prepare import PrepareOptions, create_generator, prepare

from .abo_testkit import api_error, prompt_text, real_records, reply
from vlmbench_testing import run_cli

pytest.importorskip("google.genai")

FAKE_KEY = "AIzaFAKE-test-key-0123456789abcdefghij"
IMAGE = b"\xff\xd8\xff\xe0 tiny jpeg bytes"
GOOD = [
    {"question": "What color is the filament?", "answer": "Yellow", "difficulty": 0},
    {"question": "What diameter is the filament in millimetres?", "answer": "1.75", "difficulty": 0},
    {"question": "What plastic is the filament made of?", "answer": "PETG", "difficulty": 2},
]


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    return FAKE_KEY


def listing() -> reader.Listing:
    return reader.parse_listing(next(r for r in real_records() if r["item_id"] == "B07H9GMYXS"))


def generator(server, **args):
    options = {"base_url": server.url, "backoff": 0.001, "max_backoff": 0.05, "rpm": 0, **args}
    gen = create_generator("gemini", options)
    gen.setup()
    return gen


def run_one(gen, item: reader.Listing | None = None):
    return next(iter(gen.generate_many([Job(item or listing(), image=lambda: IMAGE)])))


def test_request_shape_structured_output_and_usage(key, gemini_server):
    server = gemini_server(lambda i, body: reply(json.dumps(GOOD)))
    gen = generator(server)
    result = run_one(gen)
    assert result.error is None
    assert [(i.question, i.answer, i.difficulty) for i in result.items] == [
        (g["question"], g["answer"], g["difficulty"]) for g in GOOD
    ]
    assert all(i.generator == "gemini" and i.source == "gemini-2.0-flash" for i in result.items)
    (request,) = server.requests
    assert request["path"].endswith("/models/gemini-2.0-flash:generateContent")
    assert request["headers"]["x-goog-api-key"] == FAKE_KEY  # sent to the API, and only there
    body = request["body"]
    parts = body["contents"][0]["parts"]
    images = [p["inlineData"] for p in parts if "inlineData" in p]
    assert len(images) == 1 and base64.urlsafe_b64decode(images[0]["data"]) == IMAGE
    assert images[0].get("mimeType", images[0].get("mime_type")) == "image/jpeg"
    text = prompt_text(body)
    assert "exactly 5 different factual questions" in text
    assert "Description: 3D printer filament with 1.75mm diameter" in text
    assert "JSON array" in text
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"]["items"]["required"] == ["question", "answer", "difficulty"]
    assert result.usage == {"requests": 1, "prompt_tokens": 300, "output_tokens": 40, "cost_usd": 4.6e-05}
    assert gen.usage()["requests"] == 1 and gen.usage()["cost_usd"] == pytest.approx(4.6e-05)


def test_delimited_mode_is_the_studys_format(key, gemini_server):
    text = "What color is the filament? # Yellow # 0 % What is the spool weight in kilograms? # 1 # 1"
    server = gemini_server(lambda i, body: reply(text))
    result = run_one(generator(server, structured=False, questions=2, temperature=0.0))
    assert [(i.answer, i.difficulty) for i in result.items] == [("Yellow", 0), ("1", 1)]
    body = server.requests[0]["body"]
    assert "responseSchema" not in body["generationConfig"]
    assert body["generationConfig"]["temperature"] == 0.0
    assert "<question> # <answer> # <difficulty>" in prompt_text(body)


STUDY_REPLY = (
    "Here are five questions about the product:\n"
    "question,difficulty,answer\n"
    "What color is the filament?,0,Yellow\n"
    '"What diameter, in millimetres, is the filament?",0,1.75\n'
    "What plastic is the filament made of?,2,PETG\n"
    "How many spools are in the box?,1,1\n"
    "What printing process is the filament made for?,3,FDM\n"
)


def test_the_study_prompt_asks_for_csv_rows_and_every_pair_is_kept(key, gemini_server):
    server = gemini_server(lambda i, body: reply(STUDY_REPLY))
    result = run_one(generator(server, prompt="study"))
    assert [(i.question, i.answer, i.difficulty) for i in result.items] == [
        ("What color is the filament?", "Yellow", 0),
        ("What diameter, in millimetres, is the filament?", "1.75", 0),
        ("What plastic is the filament made of?", "PETG", 2),
        ("How many spools are in the box?", "1", 1),
        ("What printing process is the filament made for?", "FDM", 3),
    ]
    assert result.rejected == {} and result.raw is None
    body = server.requests[0]["body"]
    assert "responseSchema" not in body.get("generationConfig", {})
    assert "responseMimeType" not in body.get("generationConfig", {})
    text = prompt_text(body)
    assert "Description: 3D printer filament with 1.75mm diameter" in text  # the description is sent
    assert "question,difficulty,answer" in text and "Level 4 is not used" in text and "JSON array" not in text
    # A named prompt is part of the identity; the default prompt's identity is what it was before.
    default, study = create_generator("gemini"), create_generator("gemini", {"prompt": "study"})
    assert "prompt" not in default.identity()["args"] and study.identity()["args"]["prompt"] == "study"
    assert study.fingerprint() != default.fingerprint()
    # The study's prompt fixes the reply format: `structured` does not apply to it.
    assert (
        create_generator("gemini", {"prompt": "study", "structured": False}).fingerprint()
        == study.fingerprint()
    )


def test_study_prompt_through_the_pipeline_keeps_every_pair(
    key, gemini_server, abo_tree: Path, tmp_path: Path
):
    server = gemini_server(lambda i, body: reply(STUDY_REPLY))
    options = gemini_options(server, prompt="study")
    result = prepare("abo_single_word", abo_tree, tmp_path / "data", options)
    assert result.report["accepted"] == 5 * 9 and result.report["rejected"]["total"] == 0
    assert result.report["per_difficulty"] == {"0": 18, "1": 9, "2": 9, "3": 9}


def test_429_is_retried_with_backoff(key, gemini_server):
    def respond(i, body):
        return api_error(429, "RESOURCE_EXHAUSTED", "quota") if i < 2 else reply(json.dumps(GOOD))

    server = gemini_server(respond)
    gen = generator(server)
    result = run_one(gen)
    assert result.error is None and len(result.items) == 3
    assert len(server.requests) == 3
    assert result.usage["requests"] == 3
    assert gen.usage()["retries"] == 2


def test_retry_info_delay_is_honoured(key, gemini_server):
    hint = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.3s"}]
    server = gemini_server(
        lambda i, body: (
            api_error(429, "RESOURCE_EXHAUSTED", details=hint) if i == 0 else reply(json.dumps(GOOD))
        )
    )
    gen = generator(server, max_backoff=1.0)
    start = time.monotonic()
    assert run_one(gen).error is None
    assert time.monotonic() - start >= 0.3


def test_server_errors_exhaust_the_retries(key, gemini_server):
    server = gemini_server(lambda i, body: api_error(503, "UNAVAILABLE", "overloaded"))
    result = run_one(generator(server, max_retries=2))
    assert result.error.startswith("http_503:") and "after 3 attempts" in result.error
    assert result.items == [] and len(server.requests) == 3


def test_client_errors_are_not_retried(key, gemini_server):
    server = gemini_server(lambda i, body: api_error(400, "INVALID_ARGUMENT", "bad image"))
    result = run_one(generator(server))
    assert result.error.startswith("http_400:") and "bad image" in result.error
    assert len(server.requests) == 1


def test_network_errors_are_retried_then_reported(key, gemini_server):
    server = gemini_server(lambda i, body: reply("[]"))
    gen = generator(server, max_retries=1, timeout=5)
    server.close()  # nothing listens any more
    result = run_one(gen)
    assert result.error.startswith("network:")
    assert gen.usage()["retries"] == 1


def test_malformed_reply(key, gemini_server):
    server = gemini_server(lambda i, body: reply("Sorry, I can only describe the image in general terms."))
    result = run_one(generator(server))
    assert result.error is None and result.items == []
    assert result.rejected == {"malformed_reply": 1}
    assert result.raw.startswith("Sorry")
    broken = gemini_server(lambda i, body: (200, b"{not json"))
    assert run_one(generator(broken)).error.startswith("error:")


def test_partially_valid_json_keeps_the_good_items(key, gemini_server):
    items = [
        *GOOD[:1],
        {"question": "Missing its answer"},
        {"question": "Level?", "answer": "Red", "difficulty": "Level 1"},
    ]
    server = gemini_server(lambda i, body: reply(json.dumps(items)))
    result = run_one(generator(server))
    assert [(i.answer, i.difficulty) for i in result.items] == [("Yellow", 0), ("Red", 1)]
    assert result.rejected == {"unparsed_fragment": 1}


def test_concurrency_and_rate_limit(key, gemini_server):
    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    def respond(i, body):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        return reply(json.dumps(GOOD))

    server = gemini_server(respond)
    gen = generator(server, concurrency=4)
    jobs = [Job(listing(), image=lambda: IMAGE) for _ in range(8)]
    assert len([r for r in gen.generate_many(jobs) if r.error is None]) == 8
    assert state["max"] >= 2  # requests overlap
    limited = generator(server, concurrency=4, rpm=600)  # one request start per 0.1 s
    start = time.monotonic()
    list(limited.generate_many([Job(listing(), image=lambda: IMAGE) for _ in range(4)]))
    assert time.monotonic() - start >= 0.3


def test_api_key_comes_from_the_environment_only(gemini_server, monkeypatch: pytest.MonkeyPatch):
    server = gemini_server(lambda i, body: reply(json.dumps(GOOD)))
    gen = create_generator("gemini", {"base_url": server.url})
    with pytest.raises(AssetMissingError, match="GEMINI_API_KEY or GOOGLE_API_KEY"):
        gen.setup()
    assert "api_key" not in gen.args
    monkeypatch.setenv("GOOGLE_API_KEY", FAKE_KEY)
    gen.setup()
    assert run_one(gen).error is None
    assert server.requests[0]["headers"]["x-goog-api-key"] == FAKE_KEY
    monkeypatch.setenv("MY_KEY", "other-key")
    custom = create_generator("gemini", {"base_url": server.url, "api_key_env": "MY_KEY"})
    custom.setup()
    run_one(custom)
    assert server.requests[1]["headers"]["x-goog-api-key"] == "other-key"


def test_prompt_file_changes_the_fingerprint(key, tmp_path: Path):
    custom = tmp_path / "prompt.txt"
    custom.write_text("Ask {questions} questions. {description} {output_format}")
    default = create_generator("gemini")
    edited = create_generator("gemini", {"prompt_file": str(custom)})
    assert default.fingerprint() != edited.fingerprint()
    assert create_generator("gemini", {"rpm": 100, "concurrency": 9}).fingerprint() == default.fingerprint()


# -- through the pipeline ----------------------------------------------------------------------------


def gemini_options(server, **extra) -> PrepareOptions:
    args = {
        "base_url": server.url,
        "backoff": 0.001,
        "max_backoff": 0.01,
        "rpm": 0,
        "concurrency": 2,
        **extra,
    }
    return PrepareOptions(generators=["gemini"], generator_args={"gemini": args}, limit=9, progress=False)


def per_listing_reply(i, body):
    """A reply that differs per listing (questions must not collide across images)."""
    return reply(json.dumps([
        {"question": "What colour is the product?", "answer": "Grey", "difficulty": 0},
        {"question": "What is the product made of?", "answer": "Wood", "difficulty": 2},
        {"question": "Is it a chair?", "answer": "Yes", "difficulty": 0},
    ]))  # fmt: skip


def test_cli_exit_status_when_listings_failed_after_retries(
    key, gemini_server, abo_tree: Path, tmp_path: Path
):
    """Listings still failing after the retries make `data prepare` exit 5, with what the others gave
    written; --allow-failed-listings makes that a warning (exit 0); a healthy service then completes it."""
    failing = {"on": True}

    def unavailable_for_some(i, body):
        if failing["on"] and "blueberry" in prompt_text(body):  # the copies of one real record
            return api_error(503, "UNAVAILABLE", "overloaded")
        return per_listing_reply(i, body)

    server = gemini_server(unavailable_for_some)
    data = tmp_path / "data"
    args = f"base_url={server.url},backoff=0.001,max_backoff=0.01,rpm=0,max_retries=1"
    base = ["data", "prepare", "abo_single_word", "-g", "gemini", "-a", args, "--abo-root", str(abo_tree),
            "--data-dir", str(data), "--limit", "9", "-q"]  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(cli, base)
    assert first.exit_code == 5, first.output
    assert "listings failed to generate after retries" in first.stderr and "Traceback" not in first.output
    report = json.loads((data / "abo_single_word" / "report.json").read_text())
    failed = report["generation"]["gemini"]["failed"]
    assert failed > 0 and report["accepted"] == 2 * (9 - failed)
    assert (data / "abo_single_word" / "qa_all.csv").is_file()
    assert not json.loads((data / "abo_single_word" / "state.json").read_text())["complete"]

    accepted = runner.invoke(cli, [*base, "--allow-failed-listings"])
    assert accepted.exit_code == 0 and "listings failed to generate" in accepted.stderr

    failing["on"] = False
    healthy = runner.invoke(cli, base)
    assert healthy.exit_code == 0, healthy.output
    assert json.loads((data / "abo_single_word" / "report.json").read_text())["accepted"] == 2 * 9
    assert "Exit status" in runner.invoke(cli, ["data", "prepare", "abo_single_word", "--help"]).output


def test_report_quotes_unreadable_replies(key, gemini_server, abo_tree: Path, tmp_path: Path):
    def respond(i, body):
        if "blueberry" in prompt_text(body):
            return reply("I am sorry, I can only describe this product in general terms.")
        return reply("What colour is the product?,0,Grey\nthe weight # \nWhat is it made of?,2,Wood")

    server = gemini_server(respond)
    result = prepare("abo_single_word", abo_tree, tmp_path / "data", gemini_options(server, prompt="study"))
    examples = result.report["rejected"]["examples"]
    assert examples["malformed_reply"][0]["reply"].startswith("I am sorry")
    assert "the weight #" in examples["unparsed_fragment"][0]["reply"]
    text = (tmp_path / "data" / "abo_single_word" / "report.md").read_text()
    assert "### malformed_reply" in text and "I am sorry, I can only describe" in text
    assert "## Sample for a manual check" in text


def test_resume_after_failures_then_no_op(key, gemini_server, abo_tree: Path, tmp_path: Path):
    calls = {"n": 0}
    lock = threading.Lock()

    def flaky(i, body):
        with lock:
            calls["n"] += 1
            n = calls["n"]
        return api_error(400, "INVALID_ARGUMENT", "try later") if n % 3 == 0 else per_listing_reply(i, body)

    server = gemini_server(flaky)
    data = tmp_path / "data"
    first = prepare("abo_single_word", abo_tree, data, gemini_options(server))
    assert not first.complete
    failed = first.report["generation"]["gemini"]["failed"]
    assert failed == 3 and first.report["generation"]["gemini"]["failures"] == {"http_400": 3}
    assert first.report["accepted"] == 2 * 6  # yes/no rejected; 6 listings succeeded
    assert first.report["rejected"]["by_generator"]["gemini"] == {"yes_no": 6}
    assert len(server.requests) == 9

    server2 = gemini_server(per_listing_reply)
    second = prepare("abo_single_word", abo_tree, data, gemini_options(server2))
    assert second.complete and not second.skipped
    assert len(server2.requests) == failed  # only the failed listings are asked again
    facts = second.report["generation"]["gemini"]
    assert facts["from_store"] == 6 and facts["generated_now"] == 3
    assert facts["usage_stored"] == {"cost_usd": pytest.approx(9 * 4.6e-05), "output_tokens": 360,
                                     "prompt_tokens": 2700, "requests": 9}  # fmt: skip
    assert second.report["accepted"] == 2 * 9

    server3 = gemini_server(per_listing_reply)
    third = prepare("abo_single_word", abo_tree, data, gemini_options(server3))
    assert third.skipped and server3.requests == []
    # A different prompt is a different generator configuration: a fresh store, asked again.
    options = gemini_options(server3, questions=3)
    fourth = prepare("abo_single_word", abo_tree, data, options)
    assert not fourth.skipped and len(server3.requests) == 9


def test_the_key_never_reaches_files_or_logs(
    key, gemini_server, abo_tree: Path, tmp_path: Path, caplog, capfd, reliability
):
    def leaky(i, body):
        if i % 3 == 0:  # an error message that quotes the key
            return api_error(400, "INVALID_ARGUMENT", f"API key {FAKE_KEY} not valid")
        if i % 3 == 1:  # a reply that repeats it (stored as the raw reply: nothing parseable)
            return reply(f"My key is {FAKE_KEY}")
        return per_listing_reply(i, body)

    server = gemini_server(leaky)
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "data"
    result = prepare("abo_single_word", abo_tree, data, gemini_options(server, concurrency=1), log=print)
    assert not result.complete
    written = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in written) and any(p.name == "report.json" for p in written)
    for path in written:
        assert FAKE_KEY.encode() not in path.read_bytes(), path
    stored = (data / "abo_single_word" / "work").glob("*.jsonl")
    text = "".join(p.read_text() for p in stored)
    assert "***" in text and "not valid" in text  # the messages are kept, masked
    out, err = capfd.readouterr()
    assert FAKE_KEY not in out + err
    assert FAKE_KEY not in caplog.text
    reliability.record(
        "Hostile files",
        "API key echoed back by the QA service (in errors and replies)",
        len(written),
        "masked (***) in every file written, in stdout/stderr and in logs",
    )


def test_an_echoed_key_is_rejected_and_masked_everywhere(gemini_server, abo_tree: Path, tmp_path: Path,
                                                         reliability):  # fmt: skip
    """Through `vlmbench data prepare`: a service that writes the key into questions and answers, in
    any case, and a key read with trailing whitespace. Rows holding it are rejected and counted; no
    file written, no line printed holds it in any case."""
    echoes = [
        {"question": f"Which key is {FAKE_KEY}?", "answer": "Grey", "difficulty": 0},
        {"question": "What is the access code?", "answer": FAKE_KEY.lower(), "difficulty": 1},
        {"question": f"Is {FAKE_KEY.upper()} the code of the product?", "answer": "Wood", "difficulty": 2},
        {"question": "What colour is the product?", "answer": "Grey", "difficulty": 0},
        {"question": "What is the product made of?", "answer": "Wood", "difficulty": 2},
    ]

    def leaky(i, body):
        if i % 3 == 0:
            return reply(json.dumps(echoes))
        if i % 3 == 1:  # prose that repeats it, upper-cased, past the length at which raw replies are cut
            return reply("x" * 1990 + f" the key is {FAKE_KEY.upper()}")
        return api_error(400, "INVALID_ARGUMENT", f"API key {FAKE_KEY.lower()} not valid")

    server = gemini_server(leaky)
    data = tmp_path / "data"
    args = f"base_url={server.url},backoff=0.001,max_backoff=0.01,rpm=0,concurrency=1"
    # A store written before rows were screened holds the key too: it is cleaned on the next run.
    fingerprint = create_generator("gemini", args).fingerprint()
    legacy = data / "abo_single_word" / "work" / f"gemini-{fingerprint}.jsonl"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"key": "B0TEST9999", "items": [{**echoes[1], "generator": "gemini"}],
                                  "raw": FAKE_KEY}) + "\n", encoding="utf-8")  # fmt: skip
    res = run_cli(
        ["data", "prepare", "abo_single_word", "-g", "gemini", "-a", args, "--abo-root", str(abo_tree),
         "--data-dir", str(data), "--limit", "9", "-q"],
        env={"GEMINI_API_KEY": FAKE_KEY + "  \n", "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")},
        timeout=300,
    )  # fmt: skip
    assert res.returncode == 5, res.stderr  # the listings answered with HTTP 400 failed
    assert "Traceback" not in res.stderr
    secret = FAKE_KEY.lower().encode()
    written = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".arrow" for p in written) and any(p.name == "qa_all.csv" for p in written)
    for path in written:
        assert secret not in path.read_bytes().lower(), path
    assert secret not in (res.stdout + res.stderr).lower().encode()
    report = json.loads((data / "abo_single_word" / "report.json").read_text())
    assert report["rejected"]["by_generator"]["gemini"]["contains_secret"] == 3 * 3
    assert report["accepted"] == 2 * 3  # the two clean rows of each listing that answered with rows
    assert "***" in legacy.read_text()
    reliability.record(
        "Hostile files",
        "API key echoed in generated questions and answers (any case; key read with trailing whitespace)",
        len(written),
        "rows holding it rejected and counted (contains_secret); masked in every file, store and message",
    )
