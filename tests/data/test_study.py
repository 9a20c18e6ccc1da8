"""`vlmbench study` end to end on tiny checkpoints and a small prepared abo_single_word, under the study
protocol: the paper's Table 1 and Table 2, per difficulty, the study's five LoRA configurations, both
8-bit pairs and the figures, with every number in report.md checked against the results.json of the run
it came from."""

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
from vlmbench_plugins.study.paper import COLUMNS, PAPER_ROWS, TABLE1

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


def change_cell(value: float | None, base: float | None) -> str:
    """The LoRA table's cell: value, then its absolute and relative change against the base model."""
    if value is None:
        return "–"
    relative = f", {(value - base) / base:+.1%}" if base else ""
    return f"{value:.4f} ({value - base:+.4f}{relative})"


@pytest.mark.slow(seconds=60)
def test_study_reproduces_every_table_from_the_runs(study_setup, tmp_path):
    """The whole recipe under the study protocol, as a user runs it: the paper's table shape (rows,
    names, columns, order) with every cell read back from the run that produced it, the paper's values
    beside them, Table 2, the LoRA table with its changes, both 8-bit pairs, the figures, nothing but
    the report on a quiet run, and a rerun that trains nothing."""
    run_file, blip = study_setup
    out = tmp_path / "study"
    argv = ["study", "-c", str(run_file), "-o", str(out), "--metrics", "exact_match,average_mark,wups", "-q",
            "--with-paper", "--lora-set", f"pretrained={blip}", "--lora-set", "max_steps=2",
            "--lora-set", "batch_size=4"]  # fmt: skip
    res = run_cli(argv, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # --quiet: no step lines, no library warnings
    report = (out / "report.md").read_text()
    assert res.stdout.strip() == report.strip()
    study = json.loads((out / "study.json").read_text())
    protocol = study["protocol"]
    assert protocol["name"] == "study" and f"settings {protocol['hash'][:8]}" in report
    by_name = {row["name"]: row for row in study["rows"]}

    # Table 1: the paper's rows, names, columns and order; every cell the run's own value or "–".
    rows = tables(report, "Table 1: Models")
    assert [r["Model"] for r in rows] == [name for name, _ in PAPER_ROWS] + ["prior"]
    header = ["Model", "Parameters", "Parameters (paper)"]
    for title, _ in COLUMNS:
        header += [title, f"{title} (paper)"]
    assert list(rows[0]) == [*header, "Notes"]
    notes = report.split("## Table 2")[0].split("Notes:")[1]
    for row in rows:
        name, run_dir = row["Model"], by_name[row["Model"]]["run_dir"]
        reported = TABLE1.get(name)
        assert row["Parameters (paper)"] == (reported[0] if reported else "–")
        data = results(tmp_path / run_dir) if run_dir else {}
        for i, (title, column) in enumerate(COLUMNS):
            assert row[f"{title} (paper)"] == (f"{reported[1][i]:.5f}" if reported else "–")
            value = ((data.get("metrics") or {}).get(column) or {}).get("value")
            assert row[title] == ("–" if value is None else f"{value:.4f}"), (name, title)
        if data.get("status") == "ok":
            assert data["protocol"]["hash"] == protocol["hash"] and data["config"]["filters"] == []
            assert data["metric_details"]["wups"]["options"] == {"mode": "lowercase", "weight": 0.7}
            assert data["metric_details"]["exact_match"]["options"] == {"normalize": False, "lowercase": True}
    assert [by_name[n]["run_dir"] is None for n in ("OFA", "BLIP-2", "Qwen2.5-VL", "SmolVLM")] == [True] * 4
    assert "not in the run file" in notes and "ViLBERT" in notes and "skipped" in notes
    assert "not scored in this study: Precision, Recall" in notes
    assert "yes, no, cannot determine and each sample's reference" in notes  # how CLIP answered

    # Table 2: ranked by Average Mark, with Exact Match per difficulty level.
    ranking = tables(report, "Table 2: Average Mark ranking")
    ranked = [r for r in ranking if r["Rank"] != "–"]
    assert [r["Model"] for r in ranked] == sorted(
        (r["Model"] for r in ranked), key=lambda n: -results(tmp_path / by_name[n]["run_dir"])["metrics"]["average_mark"]["value"]
    )  # fmt: skip
    for r in ranked:
        data = results(tmp_path / by_name[r["Model"]]["run_dir"])
        assert r["Average_Mark"] == f"{data['metrics']['average_mark']['value']:.4f}"
        for level, entry in data["by_difficulty"].items():
            em = entry["metrics"]["exact_match"]["value"]
            assert r[f"Exact Match, difficulty {level}"] == f"{em:.4f} (n={entry['n']})"
    assert {r["Model"]: r["Average_Mark (paper, Table 2)"] for r in ranking}["BLIP"] == "0.09371"

    # Per difficulty: the runs under Table 1's names.
    levels = tables(report, "By difficulty")
    assert {r["model"] for r in levels} == {"CLIP", "BLIP", "prior"}

    # The LoRA table: the base model, then the study's five configurations, each cell with its change.
    lora = tables(report, "Table 3: LoRA configurations")
    assert [r["Run"] for r in lora] == ["base model", *(r["name"] for r in STUDY_RUNS)]
    assert [(r["Rank"], r["Target_Modules"]) for r in lora[1:]] == [
        (str(r["rank"]), r["targets"]) for r in STUDY_RUNS
    ]
    base = study["lora"]["base"]
    for row, run in zip(lora[1:], study["lora"]["runs"], strict=True):
        data = results(run["run_dir"])
        assert data["model"]["name"] == "lora-blip" and data["model"]["adapter"] == run["adapter"]
        assert data["protocol"]["hash"] == protocol["hash"]
        for title, column in COLUMNS:
            value = (data["metrics"].get(column) or {}).get("value")
            assert row[title] == change_cell(value, base.get(column)), (run["name"], title)
        assert (row["alpha"], row["dropout"], row["steps"]) == (
            "16",
            "0.01",
            "2",
        )  # the study's LoRA settings
        config = json.loads((out / "lora" / run["name"] / "finetune_config.json").read_text())
        assert (config["prompt"], config["learning_rate"], config["max_answer_tokens"]) == (
            "Question:{question}",
            3e-5,
            5,
        )
    assert "+7.8% relative Average Mark" in report

    # 8-bit: the study's scope on the base BLIP, then vlmbench's on the best adapter, each beside its
    # full-precision run, with memory saved and samples/s.
    quant = tables(report, "8-bit quantisation")
    pairs = study["quantization"]["pairs"]
    assert [p["kind"] for p in pairs] == ["protocol study", "vlmbench"]
    assert [r["Weights"] for r in quant] == ["full precision", "8-bit", "8-bit − full"] * 2
    for pair, lines in zip(pairs, (quant[:3], quant[3:]), strict=True):
        full, eight = results(pair["full_precision"]), results(pair["quantized"])
        assert full["model"]["quantization"] is None and eight["model"]["quantization"] == "8bit"
        memory = [full["model"]["memory_footprint_mb"], eight["model"]["memory_footprint_mb"]]
        assert lines[0]["Memory MB"] == f"{memory[0]:.2f}" and lines[1]["Memory MB"] == f"{memory[1]:.2f}"
        assert lines[1]["Memory saved"] == f"{(1 - memory[1] / memory[0]) * 100:.1f}%"
        if pair["kind"] == "vlmbench":  # the tiny BLIP has no Linear layer over 256 outputs: only this saves
            assert memory[1] < memory[0]
        assert float(lines[0]["Samples/s"]) > 0 and float(lines[1]["Samples/s"]) > 0
        for title, column in COLUMNS:
            values = [(d["metrics"].get(column) or {}).get("value") for d in (full, eight)]
            assert lines[1][title] == ("–" if values[1] is None else f"{values[1]:.4f}")
            assert lines[2][title] == ("–" if None in values else f"{values[1] - values[0]:+.4f}")
    study_scope, tool = (results(p["quantized"])["model"] for p in pairs)
    assert study_scope["name"] == "blip" and study_scope["identity"]["int8_scope"] == {
        "linear_out_features_above": 256
    }
    assert tool["adapter"] and "int8_scope" not in tool["identity"]
    assert "about 60% less memory" in report

    # Figures: Figure 3, memory against score and the model table's, linked; every SVG is valid XML.
    assert [Path(p).name for p in study["study_figures"]] == ["figure3_lora_vs_baselines.png",
                                                              "quantization_memory_vs_score.png"]  # fmt: skip
    for png in study["figures"] + study["study_figures"]:
        path = tmp_path / png
        assert path.is_file() and f"]({path.relative_to(out).as_posix()})" in report
        ET.parse(path.with_suffix(".svg"))

    # Run again: everything is cached or finished, nothing is trained again, the tables are the same.
    adapters = {r["name"]: _mtimes(out / "lora" / r["name"] / "best") for r in STUDY_RUNS}
    again = run_cli(argv, cwd=tmp_path, timeout=600)
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert {r["name"]: _mtimes(out / "lora" / r["name"] / "best") for r in STUDY_RUNS} == adapters
    rerun = (out / "report.md").read_text()
    for heading in ("Table 1: Models", "Table 2: Average Mark ranking", "By difficulty",
                    "Table 3: LoRA configurations", "8-bit quantisation"):  # fmt: skip
        assert tables(rerun, heading) == tables(report, heading), heading


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


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
        (["--protocol", "studdy"], "did you mean 'study'"),
        (["--metrics", "exact_match", "--metric-args", "wups:weight=0.5"], "not among the metrics scored"),
        (["--metric-args", "wups:weight=2"], "weight must be between 0 and 1"),
        (["-a", f"vilbert:pretrained={tmp_path}"], "file(s) missing for pretrained="),
    ]
    for extra, message in cases:  # in-process: the same command group `vlmbench` runs
        res = CliRunner().invoke(cli, ["study", "-c", str(run_file), "-o", str(out), *extra])
        assert res.exit_code == 2, (extra, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], (extra, lines)
        assert not (out / "models").exists() or not any((out / "models").iterdir())
