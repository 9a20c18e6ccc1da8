"""Fault injection: bad inputs, crashes and hostile files never lose work or let anything in.

Every test records what it injected and what happened; see the `reliability` fixture in conftest.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlmbench.errors import SpecError, VlmbenchError
from vlmbench.evaluation.runner import evaluate
from vlmbench.plugin.hookspecs import hookimpl
from vlmbench.plugin.loading import load_plugins
from vlmbench.plugin.metric import SampleMetric
from vlmbench.plugin.model import Model
from vlmbench.tasks.spec import load_spec

from vlmbench_testing import (
    RELIABILITY_FILES,
    REPO,
    cached_answers,
    child_pids,
    colour_rows,
    make_images,
    run_cli,
    start_cli,
    stop,
    survivors,
    wait_until,
    write_task,
)

# -- in-process test plugins ----------------------------------------------------------------------


class Echo(Model):
    """Answers the question's last word; raises out-of-memory for batches larger than `fits`."""

    calls: list[int] = []
    fits = 1000

    def generate(self, batch, generation):
        if len(batch) > Echo.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        Echo.calls.append(len(batch))
        return [r.question.split()[-1].strip("?") for r in batch.requests]


class Exploding(SampleMetric):
    def score(self, predictions, references):
        raise RuntimeError("metric blew up")


class _Plugin:
    @hookimpl
    def register_models(self, register):
        register("echo", f"{__name__}:Echo")

    @hookimpl
    def register_metrics(self, register):
        register("exploding", f"{__name__}:Exploding")


@pytest.fixture
def plugins():
    Echo.calls.clear()
    Echo.fits = 1000
    yield load_plugins(extra=[_Plugin()])
    load_plugins(reload=True)


def _preds(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "predictions.jsonl").read_text().splitlines()]


def _run(task, tmp_path, plugins, **kw):
    kw.setdefault("output_dir", tmp_path / "runs")
    kw.setdefault("progress", False)
    return evaluate(kw.pop("model", "echo"), task, plugins=plugins, **kw)


@pytest.fixture(params=[None, 0], ids=["default-workers", "no-workers"])
def workers(request):
    """DataLoader workers as a user gets them by default (None: one per spare core) and none at all:
    failures that only show when results cross a process boundary must be caught here."""
    return request.param


def _png_with_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims ``width`` x ``height`` (a decompression bomb's signature)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


# -- bad inputs -------------------------------------------------------------------------------------


def test_bad_images_are_skipped_and_counted(tmp_path, plugins, reliability, workers):
    root = tmp_path / "t" / "images"
    images = make_images(root, 18)
    jpeg = (root / images[0][0]).read_bytes()
    faults = {
        "missing_image": lambda p: p.unlink(),
        "empty_image": lambda p: p.write_bytes(b""),
        "corrupt_image": lambda p: p.write_bytes(jpeg[: len(jpeg) // 3]),  # truncated
        "image_too_large": lambda p: p.write_bytes(_png_with_size(40_000, 40_000)),
    }
    expected = {}
    for i, (reason, inject) in enumerate(faults.items()):
        for j in range(3):
            inject(root / images[i * 3 + j][0])
        expected[reason] = 3 * 2  # two questions per image
    (root / images[12][0]).write_bytes(os.urandom(2000))  # random bytes named .jpg
    expected["corrupt_image"] += 2
    task = write_task(tmp_path / "t", colour_rows(images))
    r = _run(task, tmp_path, plugins, num_workers=workers)
    assert r.results["skipped_samples"] == expected
    preds = _preds(r.run_dir)
    assert len(preds) == 36 and sum(p["status"] == "ok" for p in preds) == 36 - sum(expected.values())
    assert all(p["answer"] is not None for p in preds if p["status"] == "ok")
    g = "Bad inputs"
    reliability.record(g, "missing image file", 3, "skipped, counted as missing_image")
    reliability.record(g, "zero-byte image", 3, "skipped, counted as empty_image")
    reliability.record(g, "truncated JPEG", 3, "skipped, counted as corrupt_image")
    reliability.record(g, "random bytes named .jpg", 1, "skipped, counted as corrupt_image")
    reliability.record(
        g, "decompression bomb (40000x40000 header)", 3, "refused before decoding, counted as image_too_large"
    )
    with pytest.raises(Exception, match="missing_image|does not exist|empty|cannot be decoded|pixels"):
        _run(task, tmp_path, plugins, on_bad_sample="stop", cache=False, output_dir=tmp_path / "stop",
             num_workers=workers)  # fmt: skip
    reliability.record(
        g, "bad image with --on-bad-sample stop", 1, "run stops with the sample id, path and reason"
    )


def test_cli_with_default_settings_skips_a_missing_image(tmp_path, reliability):
    """The command a user types, with every default (DataLoader workers included)."""
    images = make_images(tmp_path / "t" / "images", 2)
    (tmp_path / "t" / "images" / images[1][0]).unlink()
    task = write_task(tmp_path / "t", colour_rows(images))
    res = run_cli(["run", "-m", "prior", "-t", str(task), "-o", str(tmp_path / "runs"), "-q"])
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert results["skipped_samples"] == {"missing_image": 2}
    assert results["config"]["num_workers"] >= (1 if (os.cpu_count() or 1) > 1 else 0)
    reliability.record(
        "Bad inputs", "missing image, `vlmbench run` with default workers", 1, "skipped and counted, exit 0"
    )


def test_unusual_image_modes_are_evaluated(tmp_path, plugins, reliability, workers):
    root = tmp_path / "t" / "images"
    root.mkdir(parents=True)
    arrays = {
        "cmyk.jpg": Image.new("CMYK", (16, 16), (0, 255, 255, 0)),
        "grey.png": Image.new("L", (16, 16), 90),
        "alpha.png": Image.new("RGBA", (16, 16), (10, 200, 10, 128)),
        "grey16.png": Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)),
        "palette.png": Image.new("RGB", (16, 16), (200, 0, 0)).convert("P"),
    }
    rows = []
    for name, img in arrays.items():
        img.save(root / name)
        rows.append(
            {"image_id": name, "path": name, "question": "What is it?", "answer": "it", "difficulty": 0}
        )
    r = _run(write_task(tmp_path / "t", rows), tmp_path, plugins, num_workers=workers)
    assert r.results["skipped_samples"] == {} and all(len(p["image_sha256"]) == 64 for p in _preds(r.run_dir))
    reliability.record(
        "Bad inputs", "CMYK, greyscale, alpha, 16-bit and palette images", 5, "converted to RGB and evaluated"
    )


def test_bad_rows_are_skipped_with_file_and_line(tmp_path, plugins, reliability, workers):
    make_images(tmp_path / "t" / "images", 1)
    head = "image_id,path,question,answer,difficulty\n"
    good = "a,00/img000.jpg,What colour is it?,red,0\n"
    body = (
        head
        + good
        + "a,00/img000.jpg,Q\xff?,red,0\n"  # placeholder replaced by a raw byte below
        + "a,00/img000.jpg,What size?,big\n"  # too few fields
        + "a,00/img000.jpg,What brand?,,0\n"  # empty reference
        + "a,00/img000.jpg,What finish?,matte,hard\n"  # difficulty not an integer
        + "a,00/img000.jpg,What kind of table?,coffee table,1\n"  # multi-word reference: kept, noted
        + "a,00/img000.jpg,What style?,modern,4\n"  # difficulty without a weight: kept, noted
    )
    raw = body.encode().replace("\xff".encode(), b"\xff")
    (tmp_path / "t").mkdir(exist_ok=True)
    task = write_task(tmp_path / "t", [])
    (tmp_path / "t" / "data.csv").write_bytes(raw)
    r = _run(task, tmp_path, plugins, num_workers=workers)
    assert r.results["skipped_samples"] == {
        "bad_difficulty": 1,
        "bad_encoding": 1,
        "empty_reference": 1,
        "malformed_row": 1,
    }
    messages = " ".join(r.results["skipped_sample_examples"])
    for line in (3, 4, 5, 6):
        assert f"data.csv:{line}:" in messages
    assert r.results["warnings"] == {"difficulty_without_weight": 1, "multi_word_reference": 1}
    assert r.results["task"]["n_scored"] == 3
    board = run_cli(["leaderboard", str(tmp_path / "runs")])
    assert (
        "4 samples skipped (bad_difficulty 1, bad_encoding 1, empty_reference 1, malformed_row 1)"
        in board.stdout
    )
    g = "Bad inputs"
    reliability.record(g, "non-UTF-8 CSV line", 1, "skipped as bad_encoding; message names file and line")
    reliability.record(
        g, "CSV row with too few fields", 1, "skipped as malformed_row; message names file and line"
    )
    reliability.record(g, "empty reference answer", 1, "skipped as empty_reference")
    reliability.record(g, "difficulty that is not an integer", 1, "skipped as bad_difficulty")
    reliability.record(
        g, "multi-word reference answer", 1, "kept; counted under warnings.multi_word_reference"
    )
    reliability.record(
        g, "difficulty without a weight", 1, "kept (left out of the Average Mark); counted under warnings"
    )
    with pytest.raises(Exception, match=r"data.csv:3: not valid UTF-8"):
        _run(task, tmp_path, plugins, on_bad_sample="stop", cache=False, output_dir=tmp_path / "stop")


def test_bad_jsonl_and_duplicate_ids(tmp_path, plugins, reliability):
    make_images(tmp_path / "t" / "images", 1)
    lines = [
        json.dumps({"id": "q1", "path": "00/img000.jpg", "question": "Colour?", "answer": "red"}),
        '{"id": "q2", "path": "00/img000.jpg", "question": ',  # cut off
        json.dumps(["not", "an", "object"]),
        json.dumps({"id": "q1", "path": "00/img000.jpg", "question": "Again?", "answer": "red"}),
    ]
    (tmp_path / "t").mkdir(exist_ok=True)
    (tmp_path / "t" / "d.jsonl").write_text("\n".join(lines) + "\n")
    spec = {
        "task": "j",
        "version": 1,
        "dataset": {
            "path": "d.jsonl",
            "image_root": "images",
            "columns": {"id": "id", "image_id": None, "difficulty": None},
        },
    }
    import yaml

    (tmp_path / "t" / "j.yaml").write_text(yaml.safe_dump(spec))
    r = _run(tmp_path / "t" / "j.yaml", tmp_path, plugins)
    assert r.results["skipped_samples"] == {"duplicate_id": 1, "malformed_row": 2}
    assert r.results["task"]["n_scored"] == 1
    reliability.record(
        "Bad inputs",
        "malformed JSONL lines (cut off, not an object)",
        2,
        "skipped as malformed_row with file:line",
    )
    reliability.record(
        "Bad inputs", "duplicate sample id", 1, "second occurrence skipped as duplicate_id, naming both lines"
    )


@pytest.mark.slow
def test_invalid_task_files_and_arguments_fail_clearly(tmp_path, reliability):
    cases = {
        "invalid YAML": ("task: [x", "invalid YAML"),
        "unknown key": ("task: t\nversion: 1\ndataset: {path: d.csv}\nmetrix: []\n", "metrix: unknown key"),
        "wrong type": (
            "task: t\nversion: 1\ndataset: {path: d.csv}\nbootstrap_samples: many\n",
            "expected an integer",
        ),
        "unknown prompt field": (
            "task: t\nversion: 1\ndataset: {path: d.csv}\nprompt: {default: '{question} {colour}'}\n",
            "unknown field {colour}",
        ),
        "python object tag": (
            "task: !!python/object/apply:os.system ['echo hacked']\nversion: 1\n",
            "invalid YAML",
        ),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        path.write_text(text)
        with pytest.raises(SpecError) as exc:
            load_spec(path)
        assert expected in str(exc.value) and str(path) in str(exc.value)
        res = run_cli(["run", "-m", "prior", "-t", str(path), "-o", str(tmp_path / "r")])
        assert res.returncode == 2 and "Traceback" not in res.stderr and expected in res.stderr
    reliability.record(
        "Bad inputs",
        "invalid YAML / schema violations / unknown prompt fields",
        len(cases),
        "error naming file and key, exit 2, no traceback",
    )
    res = run_cli(["run", "-m", "prior", "-t", "abo_sample", "-a", "kk=3", "-o", str(tmp_path / "r")])
    assert res.returncode == 2 and "did you mean 'k'" in res.stderr
    reliability.record(
        "Bad inputs", "unknown model argument", 1, "error with a did-you-mean suggestion, exit 2"
    )


# -- crashes and interruptions ------------------------------------------------------------------


def _slow_args(task, tmp_path, workers: int = 0) -> list[str]:
    return ["run", "-m", "slow-echo", "-a", "delay=0.25", "-t", str(task), "-b", "4", "--cache", str(tmp_path / "cache.sqlite"),
            "-o", str(tmp_path / "runs"), "-q", "--num-workers", str(workers)]  # fmt: skip


@pytest.mark.slow
def test_sigint_stops_after_the_batch_and_resumes(plugin_env, tmp_path, reliability):
    task = write_task(tmp_path / "t", colour_rows(make_images(tmp_path / "t" / "images", 16)))
    log, stderr, db = tmp_path / "calls.log", tmp_path / "stderr.txt", tmp_path / "cache.sqlite"
    env = {**plugin_env, "VLMBENCH_TEST_CALL_LOG": str(log)}
    proc = start_cli(_slow_args(task, tmp_path), env, stderr=stderr)
    wait_until(lambda: cached_answers(db) >= 8, proc)
    stop(proc, signal.SIGINT)
    err = stderr.read_text()
    assert proc.returncode == 130, err
    # "now" when the signal came while the loop waited for images: no batch was in flight then
    assert (
        re.search("stopping (after the current batch|now)", err)
        and "run the same command again to resume" in err
    )
    answered = log.read_text().split()
    assert cached_answers(db) == len(answered)  # the batch in flight was finished and stored
    res = run_cli(_slow_args(task, tmp_path), env)
    assert res.returncode == 0
    assert len(log.read_text().split()) == 32  # nothing answered twice
    reliability.record(
        "Crashes and interruptions",
        "Ctrl-C (SIGINT) mid-run",
        1,
        "current batch finished and stored, exit 130; rerun answered only the rest",
    )


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [1, 9, 21])
def test_sigkill_at_any_point_loses_at_most_the_batch_in_flight(
    plugin_env, tmp_path, reliability, kill_after
):
    task = write_task(tmp_path / "t", colour_rows(make_images(tmp_path / "t" / "images", 16)))
    log, db = tmp_path / "calls.log", tmp_path / "cache.sqlite"
    env = {**plugin_env, "VLMBENCH_TEST_CALL_LOG": str(log)}
    proc = start_cli(_slow_args(task, tmp_path), env)
    wait_until(lambda: cached_answers(db) >= kill_after, proc)
    stop(proc, signal.SIGKILL, timeout=30)
    answered = len(log.read_text().split()) if log.exists() else 0
    stored = cached_answers(db)
    lost = answered - stored
    assert 0 <= lost <= 4
    res = run_cli(_slow_args(task, tmp_path), env)
    assert res.returncode == 0, res.stderr
    preds = _preds(next((tmp_path / "runs").rglob("results.json")).parent)
    assert len(preds) == 32 and len({p["sample_id"] for p in preds}) == 32
    assert len(log.read_text().split()) == answered + (32 - stored)
    reliability.record(
        "Crashes and interruptions",
        f"SIGKILL after ≥{kill_after} stored answers",
        1,
        f"resumed; {32 - stored} recomputed, each sample once",
        f"{lost} answers (the batch in flight, at most 4)",
    )


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find worker processes")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_runs_leave_no_worker_behind(plugin_env, tmp_path, reliability, sig):
    task = write_task(tmp_path / "t", colour_rows(make_images(tmp_path / "t" / "images", 16)))
    log, stderr, db = tmp_path / "calls.log", tmp_path / "stderr.txt", tmp_path / "cache.sqlite"
    env = {**plugin_env, "VLMBENCH_TEST_CALL_LOG": str(log)}
    proc = start_cli(_slow_args(task, tmp_path, workers=1), env, stderr=stderr)
    wait_until(lambda: cached_answers(db) >= 4, proc)
    workers = child_pids(proc.pid)
    assert workers, "the run should have a DataLoader worker"
    stop(proc, sig)
    err = stderr.read_text()
    assert survivors(workers, within=10) == [], "a DataLoader worker outlived its run"
    answered = log.read_text().split()
    stored = cached_answers(db)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert re.search("SIGTERM: stopping (after the current batch|now)", err) and "Traceback" not in err
        assert stored == len(answered)  # the batch in flight was finished and stored
    else:
        assert proc.returncode == -signal.SIGKILL and 0 <= len(answered) - stored <= 4
    res = run_cli(_slow_args(task, tmp_path, workers=1), env)
    assert res.returncode == 0, res.stderr
    assert len(log.read_text().split()) == len(answered) + (32 - stored)  # only the rest was answered
    name = signal.Signals(sig).name
    reliability.record(
        "Crashes and interruptions",
        f"{name} to a run with a DataLoader worker",
        1,
        "worker gone within seconds; "
        + ("batch in flight stored, exit 143; " if sig == signal.SIGTERM else "")
        + "rerun answered only the rest",
        "nothing" if sig == signal.SIGTERM else f"{len(answered) - stored} answers (the batch in flight)",
    )


class PoisonedCollate(Model):
    """Collates normally, except in a DataLoader worker where it does what ``mode`` says."""

    main_pid = os.getpid()
    mode = "kill"

    def collate(self, requests):
        if os.getpid() != PoisonedCollate.main_pid:
            if PoisonedCollate.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            return {"lock": __import__("threading").Lock()}  # cannot be handed back to the main process
        return None

    def generate(self, batch, generation):
        return ["x"] * len(batch)


class FlakyModel(Model):
    """Fails on questions that contain 'poison'; fails on everything when ``broken``."""

    broken = False

    def generate(self, batch, generation):
        if FlakyModel.broken or any("poison" in r.question for r in batch.requests):
            raise ValueError("cannot handle this question")
        return [r.question.split()[-1].strip("?") for r in batch.requests]


class _FaultPlugin:
    @hookimpl
    def register_models(self, register):
        register("poisoned-collate", f"{__name__}:PoisonedCollate")
        register("flaky", f"{__name__}:FlakyModel")


@pytest.mark.parametrize("mode", ["kill", "unpicklable"])
def test_a_dead_or_stuck_worker_is_an_error_not_a_hang(tmp_path, tiny_task, reliability, mode):
    PoisonedCollate.mode = mode
    plugins = load_plugins(extra=[_FaultPlugin()])
    try:
        started = time.time()
        with pytest.raises(VlmbenchError, match="a DataLoader worker failed") as exc:
            _run(tiny_task, tmp_path, plugins, model="poisoned-collate", num_workers=1, worker_timeout=3)
        assert time.time() - started < 60
        assert "rerun the same command to resume" in str(exc.value)
    finally:
        load_plugins(reload=True)
    what = "killed" if mode == "kill" else "unable to hand its batch back (unpicklable result)"
    reliability.record(
        "Crashes and interruptions",
        f"DataLoader worker {what}",
        1,
        "clear error within seconds (dead) or after the worker timeout (stuck); stored answers kept",
    )


def test_a_failing_sample_is_skipped_and_the_rest_answered(tmp_path, reliability, workers):
    images = make_images(tmp_path / "t" / "images", 8)
    rows = colour_rows(images)
    rows[3]["question"] = "What poison colour is it?"
    task = write_task(tmp_path / "t", rows)
    plugins = load_plugins(extra=[_FaultPlugin()])
    try:
        FlakyModel.broken = False
        r = _run(task, tmp_path, plugins, model="flaky", batch_size=4, num_workers=workers)
        assert r.results["skipped_samples"] == {"model_error": 1}
        assert "ValueError: cannot handle this question" in r.results["skipped_sample_examples"][0]
        assert r.results["task"]["n_scored"] == 15
        FlakyModel.broken = True
        r = _run(task, tmp_path, plugins, model="flaky", cache=False, output_dir=tmp_path / "broken")
        assert r.status == "skipped" and "failed on each of its 16 requests" in r.results["reason"]
        assert "ValueError: cannot handle this question" in r.results["reason"]
    finally:
        FlakyModel.broken = False
        load_plugins(reload=True)
    reliability.record(
        "Crashes and interruptions",
        "model exception on one sample of a batch",
        1,
        "batch retried one by one; only that sample skipped as model_error (message kept)",
    )
    reliability.record(
        "Crashes and interruptions",
        "model failing on every request",
        1,
        "model stopped after its first requests: one Error line with the error, recorded as skipped; other models still run",
    )


def test_a_prompt_longer_than_the_model_takes_is_skipped(tmp_path, tiny_checkpoint, reliability):
    images = make_images(tmp_path / "t" / "images", 3)
    rows = colour_rows(images)
    rows[2]["question"] = "What colour is it? " * 5000  # 100k characters
    task = write_task(tmp_path / "t", rows)
    r = evaluate("blip", task, model_args={"pretrained": str(tiny_checkpoint("blip"))}, output_dir=tmp_path / "runs",
                 progress=False, batch_size=4)  # fmt: skip
    assert r.results["skipped_samples"] == {"prompt_too_long": 1}
    assert r.results["task"]["n_scored"] == 5
    reliability.record(
        "Bad inputs",
        "100,000-character question (BLIP)",
        1,
        "skipped as prompt_too_long with its token count; the rest of its batch answered",
    )


def test_the_cache_never_answers_for_a_changed_or_deleted_image(tmp_path, plugins, reliability):
    root = tmp_path / "t" / "images"
    images = make_images(root, 6)
    task = write_task(tmp_path / "t", colour_rows(images))
    first = _run(task, tmp_path, plugins)
    assert first.computed == 12
    changed, deleted = root / images[0][0], root / images[1][0]
    old_sha = hashlib.sha256(changed.read_bytes()).hexdigest()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(changed)
    deleted.unlink()
    again = _run(task, tmp_path, plugins)
    assert again.computed == 2 and again.cached == 8  # the changed image's two questions, answered again
    assert again.results["skipped_samples"] == {"missing_image": 2}
    preds = {p["image"]: p for p in _preds(again.run_dir)}
    assert preds[images[0][0]]["image_sha256"] == hashlib.sha256(changed.read_bytes()).hexdigest() != old_sha
    assert preds[images[1][0]]["status"] == "skipped"
    reliability.record(
        "Crashes and interruptions",
        "image replaced or deleted after a run",
        2,
        "rerun answers the replaced image again (its hash is checked) and skips the deleted one",
    )


def test_damaged_cache_is_moved_aside(tmp_path, plugins, tiny_task, reliability, capsys):
    cache = tmp_path / "cache.sqlite"
    _run(tiny_task, tmp_path, plugins, cache=cache)
    damages = [
        ("garbage after its header", lambda b: b[:100] + os.urandom(len(b) - 100)),
        ("truncated", lambda b: b[: len(b) // 2]),
    ]
    for name, damage in damages:
        with sqlite3.connect(cache) as con:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cache.write_bytes(damage(cache.read_bytes()))
        r = _run(tiny_task, tmp_path, plugins, cache=cache)
        assert r.status == "ok" and r.results["task"]["n_scored"] == 24
        assert any("damaged" in n for n in r.results["notices"]) or r.computed == 0
        reliability.record(
            "Crashes and interruptions",
            f"cache file {name}",
            1,
            "detected on open, moved aside as .corrupt-* (said on stderr), run recomputed",
            "nothing (answers recomputed)",
        )
    assert list(tmp_path.glob("cache.sqlite.corrupt-*"))
    assert "warning: the prediction cache was damaged" in capsys.readouterr().err


@pytest.mark.slow
def test_a_file_that_is_not_a_vlmbench_cache_is_refused_untouched(tmp_path, tiny_task, reliability):
    other_db = tmp_path / "other.sqlite"
    with sqlite3.connect(other_db) as con:
        con.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
        con.execute("INSERT INTO customers VALUES (1, 'x')")
    csv_file = tmp_path / "data.csv"
    csv_file.write_text("image_id,path,question,answer\n")
    garbage = tmp_path / "random.bin"
    garbage.write_bytes(os.urandom(4096))
    for path in (other_db, csv_file, garbage):
        before = path.read_bytes()
        res = run_cli(
            ["run", "-m", "prior", "-t", str(tiny_task), "--cache", str(path), "-o", str(tmp_path / "r")]
        )
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert "not a vlmbench prediction cache" in res.stderr
        assert path.read_bytes() == before and not list(tmp_path.glob(f"{path.name}.corrupt-*"))
    reliability.record(
        "Hostile files",
        "--cache naming another program's database, a CSV file or random bytes",
        3,
        "refused with one Error line, exit 2; the file is left untouched",
    )


def test_half_written_predictions_file_is_rewritten(tmp_path, plugins, tiny_task, reliability):
    r = _run(tiny_task, tmp_path, plugins)
    path = r.run_dir / "predictions.jsonl"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # cut mid-line
    r2 = _run(tiny_task, tmp_path, plugins)
    assert r2.computed == 0 and path.read_text() == text
    reliability.record(
        "Crashes and interruptions",
        "predictions.jsonl cut mid-line",
        1,
        "rewritten whole from the cache on the next run",
    )


def test_out_of_memory_halves_the_batch(tmp_path, plugins, tiny_task, reliability):
    Echo.fits = 3
    r = _run(tiny_task, tmp_path, plugins, batch_size=8)
    assert r.results["task"]["n_scored"] == 24 and max(Echo.calls) <= 3
    assert any("out of memory at batch size 8; continuing with 4" in n for n in r.results["notices"])
    Echo.fits = 0
    r = _run(tiny_task, tmp_path, plugins, batch_size=8, cache=False, output_dir=tmp_path / "none")
    assert r.results["skipped_samples"] == {"out_of_memory": 24}
    reliability.record(
        "Crashes and interruptions",
        "GPU out of memory (simulated)",
        2,
        "batch halved 8→4→2 and retried; all answered; at batch 1 the sample is skipped as out_of_memory",
    )


def test_failing_metric_keeps_predictions(tmp_path, plugins, tiny_task, reliability):
    r = _run(tiny_task, tmp_path, plugins, metrics=["exact_match", "exploding"])
    assert (
        "exploding" in r.results["skipped_metrics"]
        and "metric blew up" in r.results["skipped_metrics"]["exploding"]
    )
    assert r.results["metrics"]["exact_match"]["n"] == 24 and len(_preds(r.run_dir)) == 24
    reliability.record(
        "Crashes and interruptions",
        "metric raising an exception",
        1,
        "metric reported as skipped with its reason; predictions and other metrics kept",
    )


# -- hostile files ------------------------------------------------------------------------------


def test_hostile_image_paths(tmp_path, plugins, reliability, workers):
    root = tmp_path / "t" / "images"
    make_images(root, 1)
    (tmp_path / "secret.jpg").write_bytes((root / "00" / "img000.jpg").read_bytes())
    (root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    bad = ["../secret.jpg", str(tmp_path / "secret.jpg"), "00/../../secret.jpg", "link.jpg"]
    rows = [
        {"image_id": str(i), "path": p, "question": "What?", "answer": "x", "difficulty": 0}
        for i, p in enumerate(bad)
    ]
    r = _run(write_task(tmp_path / "t", rows), tmp_path, plugins, num_workers=workers)
    assert r.results["skipped_samples"] == {"image_outside_root": 4} and Echo.calls == []
    reliability.record(
        "Hostile files",
        "image paths with .., absolute paths, symlinks out of the root",
        4,
        "refused as image_outside_root; nothing read",
    )


def _calls(text: str, opening: str) -> list[str]:
    """The argument text of every call starting with ``opening`` (balanced parentheses)."""
    out = []
    for m in re.finditer(re.escape(opening), text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end() : i - 1])
    return out


def test_no_unsafe_loading_in_the_code(reliability):
    sources = [p for d in ("vlmbench", "plugins") for p in (REPO / d).rglob("*.py")]
    offenders = []
    for path in sources:
        text = path.read_text()
        for call in _calls(text, "torch.load("):
            if "weights_only=True" not in call:
                offenders.append(f"{path}: torch.load without weights_only=True")
        if re.search(r"(?<![\w.])(eval|exec)\(", text):
            offenders.append(f"{path}: eval/exec")
        if re.search(r"yaml\.load\(", text) or "yaml.unsafe_load" in text:
            offenders.append(f"{path}: unsafe YAML loading")
        if re.search(r"(?<!restricted_)pickle\.loads?\(", text) and "Unpickler" not in text:
            offenders.append(f"{path}: unrestricted pickle")
        if re.search(r"trust_remote_code\s*=\s*True", text):
            offenders.append(f"{path}: trust_remote_code hard-coded to True")
    assert offenders == []
    reliability.record(
        "Hostile files",
        f"static scan of {len(sources)} modules",
        1,
        "no torch.load without weights_only, no eval/exec, no unsafe YAML or pickle, no hard-coded trust_remote_code",
    )


@pytest.mark.slow
def test_secrets_never_reach_logs_or_artifacts(plugin_env, tmp_path, tiny_task, reliability):
    secret = "sk-test-7f3a9c"
    env = {**os.environ, **plugin_env}
    res = subprocess.run(
        [sys.executable, "-m", "vlmbench", "run", "-m", "slow-echo", "-a", f"token={secret}", "-t", str(tiny_task), "-o", str(tmp_path / "runs"), "-q"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    bad = run_cli(
        [
            "run",
            "-m",
            "slow-echo",
            "-a",
            f"token={secret},delay=x",
            "-t",
            str(tiny_task),
            "-o",
            str(tmp_path / "runs"),
        ],
        env=plugin_env,
    )
    assert bad.returncode == 2
    texts = [res.stdout, res.stderr, bad.stdout, bad.stderr] + [
        p.read_text() for p in (tmp_path / "runs").rglob("*") if p.is_file()
    ]
    assert texts and not any(secret in t for t in texts)
    results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert results["model"]["args"]["token"] == "***" and "***" in results["provenance"]["command"]
    reliability.record(
        "Hostile files",
        "secret model argument on the command line",
        2,
        "redacted (***) in results, provenance, labels, errors and logs",
    )


def test_hostile_archives_and_pickles_are_refused(tmp_path, reliability):
    import pickle
    import tarfile

    from vlmbench_plugins.datasets.abo.download import DownloadError, safe_extract
    from vlmbench_plugins.models.vilbert.inference import read_answer_pickle

    def tar_with(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Path:
        path = tmp_path / f"evil-{len(list(tmp_path.glob('evil-*')))}.tar"
        with tarfile.open(path, "w") as tar:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            data = b"pwned"
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        return path

    evil = [tar_with("../escape.txt"), tar_with("/tmp/abs.txt"), tar_with("link", tarfile.SYMTYPE, "/etc/passwd"),
            tar_with("hard", tarfile.LNKTYPE, "../x"), tar_with("dev", tarfile.CHRTYPE)]  # fmt: skip
    for archive in evil:
        with pytest.raises(DownloadError, match="unsafe|not a regular"):
            safe_extract(archive, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert not (tmp_path / "escape.txt").exists()
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    reliability.record(
        "Hostile files",
        "tar entries with .., absolute paths, symlinks, hard links, devices",
        len(evil),
        "extraction refused before writing the entry",
    )

    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for blob in (pickle.dumps(Payload()), pickle.dumps([Payload()]), pickle.dumps({"a": Payload()})):
        with pytest.raises(pickle.UnpicklingError, match="refusing"):
            read_answer_pickle(blob)
    assert not marker.exists()
    assert read_answer_pickle(pickle.dumps(["red", "blue"])) == ["red", "blue"]
    reliability.record(
        "Hostile files",
        "pickled answer lists that would run a command",
        3,
        "refused by the restricted unpickler; nothing executed",
    )


def test_remote_code_is_off_unless_asked(reliability):
    from vlmbench.plugin.registry import load_target

    plugins = load_plugins()
    hf_models = []
    for entry in plugins.models:
        cls = load_target(entry.target)
        if "trust_remote_code" in cls.args:
            hf_models.append(entry.name)
            given = (
                {"adapter": "some-adapter"} if "adapter" in cls.args and entry.name.startswith("lora") else {}
            )
            model = cls.create(entry, given, device="cpu")
            assert model.arg_values["trust_remote_code"] is False
    assert len(hf_models) >= 4
    reliability.record(
        "Hostile files",
        "trust_remote_code default of every Hugging Face plugin",
        len(hf_models),
        "off; only --model-args trust_remote_code=true turns it on",
    )


# -- concurrency --------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_share_an_output_folder_and_cache(plugin_env, tmp_path, reliability):
    task = write_task(tmp_path / "t", colour_rows(make_images(tmp_path / "t" / "images", 16)))
    env = {**os.environ, **plugin_env}
    cmd = [sys.executable, "-m", "vlmbench", "run", "-m", "slow-echo", "-a", "delay=0.05", "-t", str(task), "-b", "2",
           "--cache", str(tmp_path / "cache.sqlite"), "-o", str(tmp_path / "runs"), "-q", "--num-workers", "0"]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert cached_answers(tmp_path / "cache.sqlite") == 32
    run_dir = next((tmp_path / "runs").rglob("results.json")).parent
    results = json.loads((run_dir / "results.json").read_text())
    assert results["task"]["n_scored"] == 32 and len(_preds(run_dir)) == 32
    assert not list(run_dir.glob(".*.tmp"))
    reliability.record(
        "Concurrency",
        "two runs writing the same output folder and cache at once",
        1,
        "both succeed; cache holds each answer once; artifacts complete (atomic replace)",
    )


# The other test files whose faults docs/reliability.md reports (see the `reliability` fixture).


def test_the_reliability_report_lists_every_fault_the_suite_injects():
    """docs/reliability.md is produced by this suite; a fault added here must appear there."""
    report = (REPO / "docs" / "reliability.md").read_text()
    files = [REPO / "tests" / f for f in RELIABILITY_FILES]
    source = "".join(path.read_text() for path in files)
    faults = re.findall(r'reliability\.record\(\s*[^,]+,\s*f?"([^"{]+)', source)
    assert len(faults) >= 40
    missing = [f for f in faults if f.strip() not in report]
    assert missing == [], f"regenerate docs/reliability.md (see its first lines): {missing}"
