"""`vlmbench finetune` on the command line, alone and as two data-parallel processes under
`accelerate launch` (gloo on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest
import torch
from click.testing import CliRunner

from vlmbench.cli import cli
from vlmbench_plugins.models.blip.finetune.commands import finetune_command, sweep_command

from .test_finetune import _adapter_weights


def _argv(task, ckpt, out, *extra: str) -> list[str]:
    return ["finetune", "-t", str(task.yaml), "-o", str(out), "--pretrained", str(ckpt), "--device", "cpu",
            "--num-workers", "0", "-b", "8", "--lr", "0.02", "--dropout", "0", *extra]  # fmt: skip


@pytest.mark.parametrize("command", [finetune_command, sweep_command])
def test_every_option_is_explained(command):
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help and len(param.help) > 10, param.name
    assert len(command.help) > 100


@pytest.mark.slow
def test_finetune_then_run_the_adapter(squares, tiny_blip, tmp_path):
    out = tmp_path / "colours"
    result = CliRunner().invoke(cli, _argv(squares, tiny_blip, out, "--epochs", "2", "--val-limit", "8",
                                           "--targets", "query_value_out", "--rank", "4", "--alpha", "4"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "completed at step 8" in result.output and "step 0: val EM" in result.output
    config = json.loads((out / "finetune_config.json").read_text())
    assert config["targets"] == "query_value_out" and config["lora_alpha"] == 4.0
    assert json.loads((out / "best" / "adapter_config.json").read_text())["r"] == 4
    run = CliRunner().invoke(cli, ["run", "-m", "lora-blip", "-t", str(squares.yaml), "-a", f"adapter={out}",
                                   "-o", str(tmp_path / "runs"), "--no-cache", "-q", "--num-workers", "0"])  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "| squares | lora-blip[colours] |" in run.output


def test_option_conflicts_and_resume(squares, tiny_blip, tmp_path):
    out = tmp_path / "run"
    both = CliRunner().invoke(cli, _argv(squares, tiny_blip, out, "--load-in-8bit", "--load-in-4bit"))
    assert both.exit_code == 2 and "exclude each other" in both.output
    bad = CliRunner().invoke(cli, _argv(squares, tiny_blip, out, "--targets", "dense"))
    assert bad.exit_code == 2 and "query_value_dense" in bad.output
    first = CliRunner().invoke(cli, _argv(squares, tiny_blip, out, "--max-steps", "2", "--val-split", ""))
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, _argv(squares, tiny_blip, out, "--val-split", ""))
    assert again.exit_code == 2 and "--resume" in again.output
    checkpoint = out / "checkpoints" / "step-00000002"
    resumed = CliRunner().invoke(cli, _argv(squares, tiny_blip, out, "--epochs", "1", "--val-split", "",
                                            "--resume-from", str(checkpoint)))  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in resumed.output and "completed at step 4" in resumed.output


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_train_like_one(squares, tiny_blip, tmp_path):
    """Two gloo processes with batches of 4 take the steps one process takes with batches of 8."""
    from vlmbench_plugins.models.blip.finetune.config import FinetuneConfig
    from vlmbench_plugins.models.blip.finetune.trainer import finetune

    common = ["--epochs", "1", "--val-limit", "6", "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "vlmbench"]  # fmt: skip
    argv = _argv(squares, tiny_blip, tmp_path / "two", *common)[1:]
    argv[argv.index("-b") + 1] = "4"
    argv.remove("--device")
    argv.remove("cpu")  # auto: no GPU here, so the processes join a gloo group on the CPU
    res = subprocess.run([*launch, "finetune", *argv], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 process(es)" in res.stderr and res.stdout.count("completed at step 4") == 1
    state = json.loads((tmp_path / "two" / "train_state.json").read_text())
    assert state["world_size"] == 2 and state["global_step"] == 4 and state["samples_seen"] == 32
    assert state["validations"][0]["n"] == 6  # both shards of the validation split, counted once

    one = finetune(FinetuneConfig(task=str(squares.yaml), output_dir=tmp_path / "one", pretrained=str(tiny_blip),
                                  epochs=1, batch_size=8, learning_rate=0.02, dropout=0.0, num_workers=0,
                                  device="cpu", val_split=None), log=lambda _t: None)  # fmt: skip
    a, b = _adapter_weights(one.last_adapter), _adapter_weights(tmp_path / "two" / "last")
    # Two processes sum the gradients in another order than one: float32 rounding that Adam's update
    # can lift to ~1e-5 where a gradient is near zero. Wrong averaging across ranks would move most
    # weights by about the learning rate (0.02).
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_bf16_autocast_on_the_cpu(squares, tiny_blip, tmp_path):
    """Mixed precision through accelerate (its own process: accelerate fixes the precision once)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    argv = _argv(squares, tiny_blip, tmp_path / "bf16", "--mixed-precision", "bf16", "--max-steps", "3",
                 "--val-limit", "4", "--log-every", "1")  # fmt: skip
    res = subprocess.run([sys.executable, "-m", "vlmbench", *argv], capture_output=True, text=True, env=env,
                         timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    events = [json.loads(x) for x in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "train"]
    assert len(losses) == 3 and all(loss == loss and loss > 0 for loss in losses)  # finite, not NaN
    assert json.loads((tmp_path / "bf16" / "finetune_config.json").read_text())["mixed_precision"] == "bf16"
