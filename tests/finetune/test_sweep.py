"""Sweeps: configurations from YAML, --set and --grid; training, evaluation and one leaderboard."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from vlmbench.cli import cli
from vlmbench.errors import SpecError
from vlmbench_plugins.models.blip.finetune.sweep import STUDY_RUNS, load_sweep, run_name


def test_default_sweep_is_the_studys_five():
    spec = load_sweep(None, task="abo_single_word")
    runs = spec.configurations()
    assert runs == STUDY_RUNS
    # exactly the study's LoRA table, in its order
    assert [(r["rank"], r["targets"]) for r in runs] == [
        (16, "query_value_out"), (8, "query_value_dense"), (8, "query_key_value"),
        (16, "query_value_dense"), (32, "query_value"),
    ]  # fmt: skip
    config = spec.config_for(runs[0], spec_dir := __import__("pathlib").Path("out"))
    assert (
        config.output_dir == spec_dir / "r16-query_value_out" and config.rank == 16 and config.model == "blip"
    )


def test_sweep_table_has_the_studys_layout():
    from vlmbench_plugins.models.blip.finetune.sweep import sweep_table

    test = {"exact_match": 0.5, "wups_0.0": 0.8, "bertscore_f1": 0.7, "sbert": 0.6, "custom": 1.0}
    summary = {
        "name": "r16-query_value_out",
        "rank": 16,
        "alpha": 32.0,
        "targets": "query_value_out",
        "test": test,
    }
    table = sweep_table(
        [summary], base={"exact_match": 0.25, "wups_0.0": 0.7, "bertscore_f1": 0.6, "sbert": 0.5}
    )
    header, _, base_row, run_row = table.splitlines()[:4]
    assert header.startswith(
        "| run | rank | targets | bertscore_f1 | sbert | exact_match | wups_0.0 | custom |"
    )
    assert base_row.startswith("| base model |") and "0.2500" in base_row
    assert run_row.startswith("| r16-query_value_out | 16 | query_value_out | 0.7000 (+0.1000) |")


def test_grid_and_runs_from_yaml(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "task": "abo_single_word",
        "defaults": {"epochs": 3, "learning_rate": 1e-4},
        "runs": [{"name": "mine", "rank": 4, "targets": "query_key_value"}],
        "grid": {"rank": [8, 16], "targets": ["query_value", "query_value_out"]},
        "evaluate": {"batch_size": 4},
    }))  # fmt: skip
    spec = load_sweep(path)
    names = [r["name"] for r in spec.configurations()]
    assert names == ["mine", "r8-query_value", "r8-query_value_out", "r16-query_value", "r16-query_value_out"]
    configs = [spec.config_for(r, tmp_path) for r in spec.configurations()]
    assert {c.epochs for c in configs} == {3} and configs[0].targets == "query_key_value"
    assert run_name({"rank": 8, "targets": "query_value", "dropout": 0.1}) == "r8-query_value-dropout=0.1"


def test_bad_sweep_files_are_errors(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"task": "t", "gird": {"rank": [8]}}))
    with pytest.raises(SpecError, match="did you mean 'grid'"):
        load_sweep(path)
    path.write_text(yaml.safe_dump({"task": "t", "runs": [{"name": "a"}, {"name": "a", "rank": 4}]}))
    with pytest.raises(SpecError, match="unique"):
        load_sweep(path).configurations()
    path.write_text(yaml.safe_dump({"task": "t", "defaults": {"rnak": 4}}))
    spec = load_sweep(path)
    with pytest.raises(SpecError, match="did you mean 'rank'"):
        spec.config_for(spec.configurations()[0], tmp_path)
    with pytest.raises(SpecError, match="needs a task"):
        load_sweep(None)


def test_sweep_trains_evaluates_and_ranks_against_the_base_model(squares, tiny_blip, tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "defaults": {"pretrained": str(tiny_blip), "epochs": 2, "batch_size": 8, "learning_rate": 0.02,
                     "num_workers": 0, "device": "cpu", "val_limit": 4, "log_every": 100},
        "evaluate": {"batch_size": 8, "num_workers": 0, "device": "cpu"},
    }))  # fmt: skip
    out = tmp_path / "sweep"
    argv = ["sweep", "-c", str(config), "-t", str(squares.yaml), "-o", str(out), "--grid", "rank=2,4",
            "--set", "targets=query_value", "--no-cache"]  # fmt: skip
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    for name in ("r2-query_value", "r4-query_value"):
        state = json.loads((out / name / "train_state.json").read_text())
        assert state["status"] == "completed" and state["global_step"] == 8
    board = (out / "leaderboard.md").read_text()
    rows = [line for line in board.splitlines() if line.startswith("| squares |")]
    assert len(rows) == 3
    assert sum("| blip[" in r for r in rows) == 1
    assert {r.split(" | ")[1] for r in rows if "lora-blip" in r} == {
        "lora-blip[r2-query_value]", "lora-blip[r4-query_value]"
    }  # fmt: skip
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["base"]["exact_match"] is not None
    assert [r["name"] for r in summary["runs"]] == ["r2-query_value", "r4-query_value"]
    assert all(r["test"]["exact_match"] is not None and r["trainable_parameters"] for r in summary["runs"])
    assert summary["runs"][1]["trainable_parameters"] == 2 * summary["runs"][0]["trainable_parameters"]
    assert "base model" in result.output and "r4-query_value" in result.output

    # A rerun trains nothing again.
    again = CliRunner().invoke(cli, argv)
    assert again.exit_code == 0, again.output
    assert again.output.count("already trained") == 2
    events = (out / "r2-query_value" / "metrics.jsonl").read_text().splitlines()
    assert sum(json.loads(e)["event"] == "train" for e in events) == 0  # log_every 100: none logged
    assert json.loads((out / "r2-query_value" / "train_state.json").read_text())["global_step"] == 8


def test_options_given_as_text_take_their_types(tmp_path):
    from vlmbench.errors import ArgError
    from vlmbench_plugins.models.blip.finetune.config import FinetuneConfig

    # YAML reads 1e-4 (no dot) as a string, and --set passes text
    path = tmp_path / "sweep.yaml"
    path.write_text("task: t\ndefaults: {learning_rate: 1e-4, gradient_checkpointing: 'true'}\n")
    spec = load_sweep(path)
    config = spec.config_for(spec.configurations()[0], tmp_path)
    assert config.learning_rate == 1e-4 and config.gradient_checkpointing is True
    config = FinetuneConfig(task="t", output_dir=tmp_path, rank="8", epochs=3.0, alpha=16)
    assert (config.rank, config.epochs, config.alpha) == (8, 3, 16.0)
    with pytest.raises(ArgError, match="'rank': expected int"):
        FinetuneConfig(task="t", output_dir=tmp_path, rank="eight")
