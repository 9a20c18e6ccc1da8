"""`vlmbench study` end to end on tiny checkpoints and a small prepared abo_single_word: the model
table, per difficulty, the study's five LoRA configurations, the 8-bit row and the figures, with every
number in report.md checked against the results.json of the run it came from."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from vlmbench.cli import cli
from vlmbench_plugins.datasets.abo.prepare import PrepareOptions, prepare
from vlmbench_plugins.models.blip.finetune.sweep import STUDY_RUNS

from .abo_testkit import derived_records, real_records, write_tree
from vlmbench_testing import run_cli


def tables(markdown: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table under ``## heading``, as header -> cell."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]
    ]


def value_of(cell: str) -> str:
    """``0.2609 [0.087, 0.478]`` or ``0.0000 (+0.0000)`` -> ``0.2609``."""
    return cell.split(" ")[0]


def results(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


@pytest.fixture
def study_setup(tmp_path: Path, tiny_checkpoint) -> tuple[Path, Path]:
    tree = write_tree(tmp_path / "abo", derived_records(40) + real_records())
    prepare("abo_single_word", tree, tmp_path / "data", PrepareOptions(progress=False))  # VLMBENCH_DATA_DIR
    blip = tiny_checkpoint("blip")
    run_file = tmp_path / "study.yaml"
    run_file.write_text(yaml.safe_dump({
        "models": ["prior", {"name": "blip", "args": {"pretrained": str(blip)}},
                   {"name": "clip", "args": {"pretrained": str(tiny_checkpoint("clip"))}},
                   "vilbert"],  # no ViLBERT checkpoint here: reported as skipped, the rest go on
        "tasks": ["abo_single_word"],
        "options": {"batch_size": 4},
    }))  # fmt: skip
    return run_file, blip


@pytest.mark.slow(seconds=60)
def test_study_reproduces_every_table_from_the_runs(study_setup, tmp_path):
    run_file, blip = study_setup
    out = tmp_path / "study"
    argv = ["study", "-c", str(run_file), "-o", str(out), "--metrics", "exact_match,average_mark,wups", "-q",
            "--lora-set", f"pretrained={blip}", "--lora-set", "max_steps=2", "--lora-set", "batch_size=4"]  # fmt: skip
    res = run_cli(argv, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    report = (out / "report.md").read_text()
    assert res.stdout.strip() == report.strip()
    study = json.loads((out / "study.json").read_text())
    assert [m["label"] for m in study["models"]] == ["prior", "blip[blip]", "clip[clip]", "vilbert"]

    # The model table: one row per model of the run file, every cell the run's own value.
    rows = {r["model"]: r for r in tables(report, "Models")}
    assert set(rows) == {"prior", "blip[blip]", "clip[clip]", "vilbert"}
    metrics = [c for c in next(iter(rows.values())) if c not in ("task", "model", "parameters", "n", "notes")]
    assert metrics[:2] == ["exact_match", "average_mark"]  # the study's column order
    for model in study["models"]:
        data, row = results(tmp_path / model["run_dir"]), rows[model["label"]]
        if model["label"] == "vilbert":
            assert data["status"] == "skipped" and row["n"] == "–"
            assert "ViLBERT" in report.split("## By difficulty")[0].split("Notes:")[1]
            continue
        assert row["n"] == str(data["task"]["n_scored"])
        for metric in metrics:
            assert value_of(row[metric]) == f"{data['metrics'][metric]['value']:.4f}", (model, metric)
    assert "ranking candidates" in report  # CLIP answered the generate task by ranking

    # Per difficulty: every level of every evaluated model, with n and its values.
    levels = tables(report, "By difficulty")
    for model in study["models"][:3]:
        by_level = results(tmp_path / model["run_dir"])["by_difficulty"]
        mine = {r["difficulty"]: r for r in levels if r["model"] == model["label"]}
        assert set(mine) == set(by_level)
        for level, entry in by_level.items():
            assert mine[level]["n"] == str(entry["n"])
            expected = entry["metrics"]["exact_match"]["value"]
            assert value_of(mine[level]["exact_match"]) == f"{expected:.4f}"

    # The LoRA table: the base model, then the study's five configurations in its order.
    lora = tables(report, "LoRA configurations")
    assert [r["run"] for r in lora] == ["base model", *(r["name"] for r in STUDY_RUNS)]
    assert [(r["rank"], r["targets"]) for r in lora[1:]] == [
        (str(r["rank"]), r["targets"]) for r in STUDY_RUNS
    ]
    sweep = study["lora"]["runs"]
    for row, run in zip(lora[1:], sweep, strict=True):
        data = results(run["run_dir"])
        assert data["model"]["name"] == "lora-blip" and data["model"]["adapter"] == run["adapter"]
        for metric in ("exact_match", "average_mark"):
            assert value_of(row[metric]) == f"{data['metrics'][metric]['value']:.4f}"
        assert run["steps"] == 2 and run["status"] == "max_steps"

    # The 8-bit row: the chosen adapter again with 8-bit base weights, beside its full-precision run.
    quant = {r["weights"]: r for r in tables(report, "8-bit quantisation")}
    info = study["quantization"]
    full, eight = results(info["full_precision"]), results(info["quantized"])
    assert eight["model"]["quantization"] == "8bit" and full["model"]["quantization"] is None
    assert eight["model"]["adapter"] == full["model"]["adapter"]
    assert eight["model"]["memory_footprint_mb"] < full["model"]["memory_footprint_mb"]
    for name, data in (("full precision", full), ("8-bit", eight)):
        assert quant[name]["memory MB"] == f"{data['model']['memory_footprint_mb']:.2f}"
        for metric in ("exact_match", "average_mark"):
            assert quant[name][metric] == f"{data['metrics'][metric]['value']:.4f}"

    # Figures of the model table, linked from the report; every SVG is valid XML.
    assert study["figures"]
    for png in study["figures"]:
        path = tmp_path / png
        assert path.is_file() and f"]({path.relative_to(out).as_posix()})" in report
        ET.parse(path.with_suffix(".svg"))

    # Run again: everything is cached or finished, nothing is trained again, the tables are the same.
    again = run_cli(argv, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already trained") == 5
    assert all(json.loads((out / "lora" / r["name"] / "train_state.json").read_text())["global_step"] == 2
               for r in STUDY_RUNS)  # fmt: skip
    rerun = (out / "report.md").read_text()
    for heading in ("Models", "By difficulty", "LoRA configurations", "8-bit quantisation"):
        assert tables(rerun, heading) == tables(report, heading), heading


def test_study_mistakes_are_one_line_before_any_model_work(study_setup, tmp_path):
    run_file, _ = study_setup
    out = tmp_path / "study"
    cases = [
        (["--lora-set", "nope=1"], "unknown fine-tuning option 'nope'"),
        (["--lora-set", "epochs"], "--lora-set expects KEY=VALUE"),
        (["-a", "blipp:pretrained=x"], "did you mean 'blip'"),
        (["-a", "pretrained=x"], "name the model it is for"),
        (["--limit", "-3"], "--limit must be positive"),
        (["--batch-size", "many"], "--batch-size must be a positive number"),
        (["--task", "abo_singel_word"], "did you mean 'abo_single_word'"),
        (["-c", "nothere"], "unknown run configuration 'nothere'"),
    ]
    for extra, message in cases:  # in-process: the same command group `vlmbench` runs
        res = CliRunner().invoke(cli, ["study", "-c", str(run_file), "-o", str(out), *extra])
        assert res.exit_code == 2, (extra, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], (extra, lines)
        assert not (out / "models").exists() or not any((out / "models").iterdir())
