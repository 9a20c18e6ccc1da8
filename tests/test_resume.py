"""A run killed with SIGKILL resumes, recomputes only what was missing, and ends with each sample once."""

import json
import signal

import pytest

from vlmbench_testing import (
    cached_answers,
    colour_rows,
    make_images,
    run_cli,
    start_cli,
    stop,
    wait_until,
    write_task,
)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(plugin_env, tmp_path):
    images = make_images(tmp_path / "t" / "images", 20)
    task = write_task(tmp_path / "t", colour_rows(images))  # 40 samples
    log, db = tmp_path / "calls.log", tmp_path / "cache.sqlite"
    env = {**plugin_env, "VLMBENCH_TEST_CALL_LOG": str(log)}
    args = ["run", "-m", "slow-echo", "-a", "delay=0.3", "-t", str(task), "-b", "4", "--cache", str(db),
            "-o", str(tmp_path / "runs"), "-q", "--num-workers", "0"]  # fmt: skip
    proc = start_cli(args, env)
    wait_until(lambda: cached_answers(db) >= 12, proc)
    assert stop(proc, signal.SIGKILL, timeout=30) == -signal.SIGKILL
    stored = cached_answers(db)
    assert 12 <= stored < 40, stored
    first_calls = log.read_text().split()
    # at most the batch in flight is lost: everything the model answered before the kill is stored,
    # except possibly the last batch
    assert stored >= len(first_calls) - 4

    res = run_cli(args, env)
    assert res.returncode == 0, res.stderr
    all_calls = log.read_text().split()
    second_calls = all_calls[len(first_calls) :]
    assert len(second_calls) == 40 - stored  # only what was missing
    preds = [
        json.loads(x) for x in next((tmp_path / "runs").rglob("predictions.jsonl")).read_text().splitlines()
    ]
    assert len(preds) == 40 and len({p["sample_id"] for p in preds}) == 40
    assert all(p["status"] == "ok" for p in preds)

    # a third run asks the model nothing
    res = run_cli(args, env)
    assert res.returncode == 0 and len(log.read_text().split()) == len(all_calls)
    assert "(0 computed, 40 cached)" in res.stderr
