"""A run killed with SIGKILL resumes, recomputes only what was missing, and ends with each sample once."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from vlmbench_testing import colour_rows, make_images, write_task


def _rows_in_cache(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(plugin_env, tmp_path):
    images = make_images(tmp_path / "t" / "images", 20)
    task = write_task(tmp_path / "t", colour_rows(images))  # 40 samples
    log, db = tmp_path / "calls.log", tmp_path / "cache.sqlite"
    env = {**os.environ, **plugin_env, "VLMBENCH_TEST_CALL_LOG": str(log)}
    cmd = [sys.executable, "-m", "vlmbench", "run", "-m", "slow-echo", "-a", "delay=0.3", "-t", str(task),
           "-b", "4", "--cache", str(db), "-o", str(tmp_path / "runs"), "-q", "--num-workers", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _rows_in_cache(db) < 12 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    stored = _rows_in_cache(db)
    assert 12 <= stored < 40, stored
    first_calls = log.read_text().split()
    # at most the batch in flight is lost: everything the model answered before the kill is stored,
    # except possibly the last batch
    assert stored >= len(first_calls) - 4

    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
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
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and len(log.read_text().split()) == len(all_calls)
    assert "(0 computed, 40 cached)" in res.stderr
