"""`vlmbench data prepare abo_single_word` end to end on a tiny ABO tree, and the task reading it."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner
from PIL import Image

from vlmbench.cli import cli
from vlmbench.errors import AssetMissingError, UnknownNameError, VlmbenchError
from vlmbench.plugin.loading import load_plugins, resolve_task
from vlmbench_plugins.datasets.abo.curation import ValidationConfig
from vlmbench_plugins.datasets.abo.prepare import PrepareOptions, prepare

from .abo_testkit import ScriptedPlugin

STUDY = ["image_id", "path", "question", "answer", "difficulty"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def quiet(**kw) -> PrepareOptions:
    return PrepareOptions(progress=False, **kw)


def test_prepare_with_attributes_writes_a_valid_split_dataset(abo_tree: Path, tmp_path: Path):
    data = tmp_path / "data"
    result = prepare("abo_single_word", abo_tree, data, quiet())
    out = data / "abo_single_word"
    assert result.out_dir == out and result.complete and not result.skipped

    everything = read_csv(out / "qa_all.csv")
    assert list(everything[0]) == [*STUDY, "generator"]
    parts = {s: read_csv(out / "splits" / f"{s}.csv") for s in ("train", "val", "test")}
    for rows in parts.values():
        assert rows and list(rows[0]) == STUDY
    images = {s: {r["image_id"] for r in rows} for s, rows in parts.items()}
    assert not (
        images["train"] & images["val"] or images["train"] & images["test"] or images["val"] & images["test"]
    )
    split_rows = sorted(tuple(r.values()) for rows in parts.values() for r in rows)
    assert split_rows == sorted(tuple(r[c] for c in STUDY) for r in everything)
    # 24 derived listings + 3 real records with images; the repeated image and the missing file are skipped.
    assert len(set().union(*images.values())) == 27
    for row in everything:
        assert len(row["answer"].split()) == 1 and row["difficulty"] in {"0", "1", "2", "3"}
        assert (abo_tree / "images" / "small" / row["path"]).is_file()
    real = [r for r in everything if r["image_id"] == "81NP7qh2L6L"]  # B07H9GMYXS, a real record
    assert {(r["question"], r["answer"]) for r in real} >= {
        ("What material is this product made of?", "PETG")
    }

    report = json.loads((out / "report.json").read_text())
    assert report["accepted"] == len(everything)
    assert sum(report["per_difficulty"].values()) == len(everything)
    assert report["per_generator"]["attributes"]["accepted"] == len(everything)
    assert report["splits"]["test"]["images"] == len(images["test"])
    assert report["reading"]["image_already_used"] == 1 and report["reading"]["image_file_missing"] == 1
    assert report["reading"]["bad_lines"] == 2
    assert report["rejected"]["by_reason"]["attribute_several_values"] >= 1
    assert report["answers"]["vocabulary_size"] == len({r["answer"].lower() for r in everything})
    assert "# abo_single_word curation report" in (out / "report.md").read_text()

    hf = datasets.load_from_disk(str(out / "hf"))
    assert sorted(hf) == ["test", "train", "val"]
    test = hf["test"]
    assert test.column_names == ["sample_id", "image_id", "path", "image", "question", "answer", "difficulty"]
    assert isinstance(test.features["image"], datasets.Image)
    assert len(test) == len(parts["test"]) and len(set(test["sample_id"])) == len(test)
    row = test.cast_column("image", datasets.Image(decode=False))[0]
    assert Image.open(io.BytesIO(row["image"]["bytes"])).size == (32, 32)
    assert row["path"] == parts["test"][0]["path"]


def test_rerun_is_a_no_op_and_options_redo_only_the_cheap_steps(abo_tree: Path, tmp_path: Path):
    data = tmp_path / "data"
    prepare("abo_single_word", abo_tree, data, quiet())
    out = data / "abo_single_word"
    files = sorted(p for p in out.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    again = prepare("abo_single_word", abo_tree, data, quiet())
    assert again.skipped
    assert {p: p.stat().st_mtime_ns for p in files} == stamps

    def fingerprint() -> str:
        return json.loads((out / "hf" / "test" / "state.json").read_text())["_fingerprint"]

    first = fingerprint()
    reseeded = prepare("abo_single_word", abo_tree, data, quiet(seed=5))
    assert not reseeded.skipped
    facts = reseeded.report["generation"]["attributes"]
    assert facts["from_store"] == 27 and facts["generated_now"] == 0
    assert len(list((out / "work").glob("*.jsonl"))) == 1
    assert fingerprint() != first  # other images in the test split
    forced = prepare("abo_single_word", abo_tree, data, quiet(force=True))
    assert not forced.skipped
    assert fingerprint() == first  # same content, same dataset identity


def test_language_and_limit_options(abo_tree: Path, tmp_path: Path):
    result = prepare("abo_single_word", abo_tree, tmp_path / "d", quiet(limit=5, language="en_US"))
    assert result.report["images"] == 5
    # en_US entries come first now: colours etc. exist only in en_IN, so they fall back to it.
    assert result.report["config"]["language_order"][:2] == ["en_US", "en_GB"]


def test_two_generators_and_the_yes_no_policy(abo_tree: Path, tmp_path: Path):
    load_plugins(extra=[ScriptedPlugin()])
    try:
        options = quiet(
            generators=["attributes", "local"], generator_args={"local": "model=scripted"}, limit=6
        )
        result = prepare("abo_single_word", abo_tree, tmp_path / "d", options)
        per = result.report["per_generator"]
        assert per["local"]["accepted"] == 2 * 6 and per["attributes"]["accepted"] > 0
        assert result.report["rejected"]["by_generator"]["local"] == {"yes_no": 6}
        allowed = prepare("abo_single_word", abo_tree, tmp_path / "d",
                          quiet(generators=["attributes", "local"], generator_args={"local": "model=scripted"},
                                limit=6, validation=ValidationConfig(yes_no="allow")))  # fmt: skip
        assert allowed.report["per_generator"]["local"]["accepted"] == 3 * 6
        assert allowed.report["generation"]["local"]["from_store"] == 6  # nothing regenerated
        assert allowed.report["answers"]["yes_no_share"] > 0
    finally:
        load_plugins(reload=True)


def test_prepare_errors(abo_tree: Path, tmp_path: Path):
    with pytest.raises(AssetMissingError, match="vlmbench data download abo"):
        prepare("abo_single_word", tmp_path / "nothing", tmp_path / "d", quiet())
    with pytest.raises(UnknownNameError, match="did you mean 'attributes'"):
        prepare("abo_single_word", abo_tree, tmp_path / "d", quiet(generators=["atributes"]))
    with pytest.raises(VlmbenchError, match="not among the generators"):
        prepare("abo_single_word", abo_tree, tmp_path / "d", quiet(generator_args={"gemini": "rpm=1"}))
    with pytest.raises(VlmbenchError, match="unknown dataset"):
        prepare("abo_multi_word", abo_tree, tmp_path / "d", quiet())


@pytest.mark.slow
def test_cli_prepare_then_run_reads_the_prepared_data(abo_tree: Path, tmp_path: Path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("VLMBENCH_DATA_DIR", str(data))
    runner = CliRunner()
    prepared = runner.invoke(
        cli,
        [
            "data",
            "prepare",
            "abo_single_word",
            "--abo-root",
            str(abo_tree),
            "-q",
            "-a",
            "fields=color+material+item_shape",
        ],
    )
    assert prepared.exit_code == 0, prepared.output
    assert "questions" in prepared.stdout and str(data / "abo_single_word") in prepared.stdout
    again = runner.invoke(cli, ["data", "prepare", "abo_single_word", "--abo-root", str(abo_tree), "-q",
                                "-a", "fields=color+material+item_shape"])  # fmt: skip
    assert again.exit_code == 0 and "nothing to do" in again.stderr

    task = resolve_task("abo_single_word")
    test_rows = read_csv(data / "abo_single_word" / "splits" / "test.csv")
    assert [s.question for s in task.samples] == [r["question"] for r in test_rows]
    assert len(task.train_samples) == len(read_csv(data / "abo_single_word" / "splits" / "train.csv"))
    assert (
        task.samples[0].image.startswith("hf-row:")
        and task.image_source.read(task.samples[0].image)[:2] == b"\xff\xd8"
    )

    out = tmp_path / "runs"
    run = runner.invoke(
        cli,
        [
            "run",
            "--model",
            "prior",
            "--task",
            "abo_single_word",
            "-o",
            str(out),
            "--no-cache",
            "-q",
            "--num-workers",
            "0",
        ],
    )
    assert run.exit_code == 0, run.output
    (results_path,) = out.rglob("results.json")
    results = json.loads(results_path.read_text())
    assert results["status"] == "ok"
    assert results["metrics"]["exact_match"]["n"] == len(test_rows)
    assert set(results["by_difficulty"]) == {r["difficulty"] for r in test_rows}
    predictions = (results_path.parent / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == len(test_rows)


def test_run_without_prepared_data_says_how_to_prepare(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VLMBENCH_DATA_DIR", str(tmp_path / "empty"))
    result = CliRunner().invoke(
        cli, ["run", "--model", "prior", "--task", "abo_single_word", "--no-cache", "-q"]
    )
    assert result.exit_code == 2
    assert "Prepare it first with `vlmbench data prepare abo_single_word`" in result.stderr


def test_cli_prepare_errors(abo_tree: Path, tmp_path: Path):
    runner = CliRunner()
    base = [
        "data",
        "prepare",
        "abo_single_word",
        "--abo-root",
        str(abo_tree),
        "--data-dir",
        str(tmp_path),
        "-q",
    ]
    two = runner.invoke(cli, [*base, "-g", "attributes", "-g", "gemini", "-a", "rpm=1"])
    assert two.exit_code == 2 and "prefix it with NAME:" in two.stderr
    bad_split = runner.invoke(cli, [*base, "--split", "0.5,0.5"])
    assert bad_split.exit_code == 2 and "split fractions" in bad_split.stderr
    no_key = runner.invoke(cli, [*base, "-g", "gemini"])
    assert no_key.exit_code == 2 and "GEMINI_API_KEY" in no_key.stderr
    # Found before any generator starts, even one named first.
    no_key_second = runner.invoke(cli, [*base, "-g", "attributes", "-g", "gemini"])
    assert no_key_second.exit_code == 2 and "GEMINI_API_KEY" in no_key_second.stderr
    assert not (tmp_path / "abo_single_word" / "work").exists()
    missing = runner.invoke(
        cli, ["data", "prepare", "abo_single_word", "--data-dir", str(tmp_path / "x"), "-q"]
    )
    assert missing.exit_code == 2 and "vlmbench data download abo" in missing.stderr
