"""Data-parallel evaluation with two CPU processes (gloo) equals a single-process run."""

import json
import os
import subprocess
import sys

import pytest


def _answers(out_dir):
    path = next(out_dir.rglob("predictions.jsonl"))
    return [
        (d["sample_id"], d["raw"], d["answer"], d["scores"], d["image_sha256"])
        for d in map(json.loads, path.read_text().splitlines())
    ]


def _launch(launcher, args, env, timeout=300):
    res = subprocess.run(
        [*launcher, "-m", "vlmbench", *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _env(plugin_env, tmp_path):
    return {**os.environ, **plugin_env, "VLMBENCH_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def _run_args(*extra):
    """`vlmbench run` of the dominant-color test model on the bundled sample, quietly."""
    return ["run", "-m", "dominant-color", "-t", "abo_sample", "-q", *extra]


SINGLE = [sys.executable]  # one process: plain `python -m vlmbench`
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ACCELERATE = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]


@pytest.mark.slow(seconds=30)
@pytest.mark.parametrize("launcher", [TORCHRUN, ACCELERATE], ids=["torchrun", "accelerate"])
def test_two_processes_equal_one(launcher, plugin_env, tmp_path):
    env = _env(plugin_env, tmp_path)
    common = _run_args("-b", "4", "--num-workers", "1", "--metrics", "exact_match,average_mark,wups")
    res = _launch(launcher, [*common, "-o", str(tmp_path / "two")], env)
    assert "(225 computed, 0 cached)" in res.stderr
    assert res.stdout.count("| abo_sample | dominant-color |") == 1  # only rank 0 reports
    _launch(SINGLE, [*common, "-o", str(tmp_path / "one"), "--no-cache"], env)
    assert _answers(tmp_path / "two") == _answers(tmp_path / "one")
    two = json.loads(next((tmp_path / "two").rglob("results.json")).read_text())
    one = json.loads(next((tmp_path / "one").rglob("results.json")).read_text())
    assert two["metrics"] == one["metrics"] and two["by_difficulty"] == one["by_difficulty"]
    # the merged cache serves a single-process rerun completely, and no shard files are left behind
    again = _launch(SINGLE, [*common, "-o", str(tmp_path / "three")], env)
    assert "(0 computed, 225 cached)" in again.stderr
    assert not list((tmp_path / "cache").glob("*.shards"))


@pytest.mark.slow
def test_resume_across_world_sizes(plugin_env, tmp_path):
    """Half the samples computed by one process; two processes finish the rest and compute nothing twice."""
    env = _env(plugin_env, tmp_path)
    common = _run_args("--num-workers", "0", "-o", str(tmp_path / "runs"), "--metrics", "exact_match")
    first = _launch(SINGLE, [*common, "--limit", "100"], env)
    assert "(100 computed, 0 cached)" in first.stderr
    res = _launch(TORCHRUN, common, env)
    assert "(125 computed, 100 cached)" in res.stderr
