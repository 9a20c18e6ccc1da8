"""``vlmbench score``: external prediction files and stored runs, scored like a run."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest
import yaml
from click.testing import CliRunner
from metric_helpers import SHARED
from PIL import Image

from vlmbench.artifacts import run_files
from vlmbench.cli import cli
from vlmbench.errors import DataError
from vlmbench.plugin.hookspecs import hookimpl
from vlmbench.plugin.loading import load_plugins
from vlmbench.plugin.metric import SampleMetric
from vlmbench.scoring.rescore import DEFAULT_FILTERS, Columns, rescore
from vlmbench.tasks.filters import apply_filters
from vlmbench.tasks.normalize import vqa_normalize
from vlmbench.tasks.spec import MetricSpec

ROWS = [
    # question, answer, generated_answer, difficulty
    ("What color is the sofa?", "Red", "red", 0),
    ("What color is the lamp?", "white", "Answer: White.", 0),
    ("What is it made of?", "wood", "wooden", 1),
    ("What is it?", "couch", "sofa", 1),
    ("What color is the rug?", "red", "pink", 3),
    ("How many legs?", "four", "4", 3),
    ("What shape?", "round", "", 5),
    ("What brand?", "", "acme", 5),  # no reference: skipped and counted
]


def write_csv(path, rows=ROWS):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["question", "answer", "generated_answer", "difficulty"])
        writer.writerows(rows)
    return path


def invoke(args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result


def test_score_an_external_csv(wordnet_env, tmp_path):
    source = write_csv(tmp_path / "preds.csv")
    out = tmp_path / "scored"
    result = invoke([
        "score", str(source), "--prediction-column", "generated_answer", "--reference-column", "answer",
        "--difficulty-column", "difficulty", "--metrics", "exact_match,average_mark,wups,meteor,bartscore",
        "--metric-args", "wups:mode=reference", "--metric-args", f"bartscore:model={tmp_path / 'no-bart'}",
        "--name", "toy", "-o", str(out), "--bootstrap-samples", "200",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| external | toy |" in result.stdout
    assert "bartscore skipped" in result.stdout  # a missing asset is a note, not a failure

    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == run_files.RESULTS_SCHEMA and results["status"] == "ok"
    model = results["model"]
    assert model["kind"] == "external" and model["label"] == "toy"
    assert model["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert results["task"]["n_samples"] == 8 and results["task"]["n_scored"] == 7
    assert results["task"]["columns"]["prediction"] == "generated_answer"
    assert results["skipped_samples"] == {"empty_reference": 1}
    assert "no-bart" in results["skipped_metrics"]["bartscore"]
    assert results["metric_details"]["wups"]["mode"] == "reference"

    # Exact match after the standard filters and VQA normalisation: red, White., 4 -> 3 of 7.
    scored = [r for r in ROWS if r[1]]
    answers = [apply_filters(r[2], DEFAULT_FILTERS) for r in scored]
    em = [float(vqa_normalize(a) == vqa_normalize(r[1])) for a, r in zip(answers, scored, strict=True)]
    assert em == [1, 1, 0, 0, 0, 1, 0]
    assert results["metrics"]["exact_match"]["value"] == pytest.approx(3 / 7)
    weights = {0: 1, 1: 2, 3: 8, 5: 20}
    total = sum(weights[r[3]] for r in scored)
    expected_am = sum(c * weights[r[3]] for c, r in zip(em, scored, strict=True)) / total
    assert results["metrics"]["average_mark"]["value"] == pytest.approx(expected_am)
    assert results["by_difficulty"]["3"]["n"] == 2
    assert results["by_difficulty"]["0"]["metrics"]["exact_match"]["value"] == 1.0
    # every sample-level output has a mean, an interval and a count
    for col in ("exact_match", "wups_0.0", "wups_0.9", "wups_weighted", "meteor"):
        entry = results["metrics"][col]
        assert entry["n"] == 7 and entry["ci95"][0] <= entry["value"] <= entry["ci95"][1]
    assert results["metrics"]["wups_0.9"]["value"] <= results["metrics"]["wups_0.0"]["value"]

    records = list(run_files.read_jsonl(out / "predictions.jsonl"))
    assert len(records) == 8
    assert records[1]["raw"] == "Answer: White." and records[1]["answer"] == "White"
    assert records[1]["scores"]["exact_match"] == 1.0 and records[1]["difficulty"] == 0
    assert records[7]["status"] == "skipped" and records[7]["scores"] == {}
    assert records[4]["scores"]["wups_0.9"] == pytest.approx(0.0875)

    # the leaderboard reads it like any run
    board = invoke(["leaderboard", str(tmp_path), "--no-write"])
    assert "| external | toy |" in board.stdout


def test_rescore_a_stored_run_keeps_the_model_and_the_outputs(wordnet_env, tmp_path):
    from vlmbench.evaluation.runner import evaluate

    images = tmp_path / "task" / "images"
    rows = []
    for i, (colour, rgb) in enumerate([("red", (220, 30, 30)), ("blue", (40, 80, 210))] * 3):
        rel = f"{i:02x}/img{i}.jpg"
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), rgb).save(images / rel)
        rows.append({"image_id": f"img{i}", "path": rel, "question": "What colour is it?", "answer": colour,
                     "difficulty": i % 2})  # fmt: skip
    with open(tmp_path / "task" / "data.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    spec = {"task": "colours", "version": 1, "dataset": {"path": "data.csv", "image_root": "images"},
            "metrics": ["exact_match"]}  # fmt: skip
    (tmp_path / "task" / "colours.yaml").write_text(yaml.safe_dump(spec))
    run = evaluate("prior", tmp_path / "task" / "colours.yaml", output_dir=tmp_path / "runs", cache=False,
                   num_workers=0, progress=False)  # fmt: skip
    before = list(run_files.read_jsonl(run.run_dir / "predictions.jsonl"))
    assert set(run.results["metrics"]) == {"exact_match"}

    result = rescore(run.run_dir, metrics=["exact_match", "wups", "average_mark"], bootstrap_samples=50)
    assert result.kind == "run" and result.run_dir == run.run_dir
    after = json.loads((run.run_dir / "results.json").read_text())
    assert after["model"] == run.results["model"] and after["task"]["name"] == "colours"
    assert {"exact_match", "wups_0.0", "wups_0.9", "wups_weighted", "average_mark"} <= set(after["metrics"])
    assert after["metrics"]["exact_match"] == {**run.results["metrics"]["exact_match"],
                                               "ci95": after["metrics"]["exact_match"]["ci95"]}  # fmt: skip
    assert after["rescored"]["run_provenance"] == run.results["provenance"]
    assert after["config"]["seed"] == 0 and after["config"]["bootstrap_samples"] == 50
    records = list(run_files.read_jsonl(run.run_dir / "predictions.jsonl"))
    assert [r["raw"] for r in records] == [r["raw"] for r in before]
    assert all("wups_0.9" in r["scores"] for r in records)

    # the same through the command line, into another folder, leaving the run untouched
    out = tmp_path / "elsewhere"
    res = invoke(
        [
            "score",
            str(run.run_dir / "predictions.jsonl"),
            "--metrics",
            "exact_match",
            "-o",
            str(out),
            "--only",
        ]
    )
    assert res.exit_code == 0, res.output
    assert "| colours | prior |" in res.stdout
    assert set(json.loads((out / "results.json").read_text())["metrics"]) == {"exact_match"}
    assert "wups_0.0" in json.loads((run.run_dir / "results.json").read_text())["metrics"]


def test_rescoring_adds_metrics_and_keeps_the_others(wordnet_env, tmp_path):
    """`score RUN --metrics X` adds or updates X; what the run had stays, per sample too."""
    from vlmbench.evaluation.runner import evaluate

    run = evaluate("prior", "abo_sample", output_dir=tmp_path / "runs", cache=False, limit=20, progress=False,
                   metrics=["exact_match", "wups"])  # fmt: skip
    before = json.loads((run.run_dir / "results.json").read_text())
    res = invoke(["score", str(run.run_dir), "--metrics", "meteor,average_mark"])
    assert res.exit_code == 0, res.output
    after = json.loads((run.run_dir / "results.json").read_text())
    assert set(after["metrics"]) == set(before["metrics"]) | {"meteor", "average_mark"}
    assert after["metrics"]["wups_0.9"] == before["metrics"]["wups_0.9"]
    assert set(after["metric_details"]) >= {"exact_match", "wups", "meteor", "average_mark"}
    records = list(run_files.read_jsonl(run.run_dir / "predictions.jsonl"))
    assert all({"wups_0.9", "meteor"} <= set(r["scores"]) for r in records if r["status"] == "ok")
    # a metric that cannot be computed now keeps its stored value, and says why
    plugins = load_plugins(extra=[_OncePlugin()])
    try:
        rescore(run.run_dir, metrics=["works-once"], plugins=plugins)
        stored = json.loads((run.run_dir / "results.json").read_text())["metrics"]["works-once"]
        rescore(run.run_dir, metrics=["works-once"], plugins=plugins)
        again = json.loads((run.run_dir / "results.json").read_text())
        assert again["metrics"]["works-once"] == stored and "works-once" not in again["skipped_metrics"]
        assert "second call" in again["metric_details"]["works-once"]["kept_from_earlier_scoring"]
    finally:
        load_plugins(reload=True)
    res = invoke(["score", str(run.run_dir), "--metrics", "exact_match", "--only"])
    assert res.exit_code == 0 and set(json.loads((run.run_dir / "results.json").read_text())["metrics"]) == {
        "exact_match"
    }


def test_columns_are_guessed_or_must_be_named(tmp_path, offline_env):
    source = write_csv(tmp_path / "preds.csv")
    result = rescore(source, metrics=["exact_match"], output_dir=tmp_path / "a", bootstrap_samples=0)
    assert result.results["task"]["columns"]["prediction"] == "generated_answer"
    assert result.results["task"]["columns"]["difficulty"] == "difficulty"
    odd = tmp_path / "odd.csv"
    odd.write_text("x,y\nred,red\n")
    with pytest.raises(DataError, match="--prediction-column"):
        rescore(odd, metrics=["exact_match"], output_dir=tmp_path / "b")
    result = rescore(odd, metrics=["exact_match"], columns=Columns(prediction="x", reference="y"),
                     output_dir=tmp_path / "b", bootstrap_samples=0)  # fmt: skip
    assert result.results["metrics"]["exact_match"]["value"] == 1.0
    with pytest.raises(DataError, match="no column 'z'"):
        rescore(odd, metrics=["exact_match"], columns=Columns(prediction="z", reference="y"))


def test_jsonl_with_several_references_and_no_filters(tmp_path, offline_env):
    source = tmp_path / "preds.jsonl"
    lines = [
        {"id": "a", "reference": "sofa|couch", "prediction": "Couch."},
        {"id": "b", "reference": ["red", "crimson"], "prediction": "crimson"},
        {"id": "c", "reference": "blue", "prediction": "blue sky"},
    ]
    source.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = rescore(source, metrics=["exact_match"], reference_separator="|", filters=[],
                     output_dir=tmp_path / "out", bootstrap_samples=0)  # fmt: skip
    records = list(run_files.read_jsonl(tmp_path / "out" / "predictions.jsonl"))
    assert [r["sample_id"] for r in records] == ["a", "b", "c"]
    assert records[0]["references"] == ["sofa", "couch"] and records[2]["answer"] == "blue sky"
    assert [r["scores"]["exact_match"] for r in records] == [1.0, 1.0, 0.0]
    assert result.results["config"]["filters"] == []


def test_unknown_metric_and_stray_metric_args_fail_before_scoring(tmp_path):
    source = write_csv(tmp_path / "preds.csv")
    res = CliRunner().invoke(cli, ["score", str(source), "--metrics", "exact_matc"])
    assert res.exit_code == 2 and "did you mean 'exact_match'" in res.output
    res = CliRunner().invoke(
        cli, ["score", str(source), "--metrics", "exact_match", "--metric-args", "wups:mode=reference"]
    )
    assert res.exit_code == 2 and "not among the metrics" in res.output


PEER = SHARED / "data" / "peers" / "mohit065+VR_Project2_MohitNaik_IMT2022076" / "preds_blip.csv"


@pytest.mark.skipif(not PEER.is_file(), reason="the shared peer prediction files are not here")
def test_a_real_peer_prediction_file(tmp_path, offline_env):
    result = rescore(PEER, metrics=["exact_match"], output_dir=tmp_path / "blip", bootstrap_samples=100)
    with open(PEER, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    expected = sum(
        vqa_normalize(apply_filters(r["generated_answer"], DEFAULT_FILTERS))
        == vqa_normalize(r["answer"].strip())
        for r in rows
        if r["answer"].strip()
    ) / sum(1 for r in rows if r["answer"].strip())
    assert result.results["metrics"]["exact_match"]["value"] == pytest.approx(expected)
    assert result.results["task"]["n_scored"] == sum(1 for r in rows if r["answer"].strip())


def test_malformed_rows_are_skipped_and_counted(tmp_path, offline_env):
    source = tmp_path / "broken.csv"
    source.write_text('answer,prediction\nred,red\nblue,blue,extra\n\ngreen,"grey"\n', encoding="utf-8")
    result = rescore(source, metrics=["exact_match"], output_dir=tmp_path / "out", bootstrap_samples=0)
    assert result.results["skipped_samples"] == {"malformed_row": 1}
    assert "broken.csv:3" in result.results["skipped_sample_examples"][0]
    assert (
        result.results["task"]["n_scored"] == 2 and result.results["metrics"]["exact_match"]["value"] == 0.5
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"reference": "red", "prediction": "red"}\n{not json\n[1, 2]\n', encoding="utf-8")
    result = rescore(bad, metrics=["exact_match"], output_dir=tmp_path / "out2", bootstrap_samples=0)
    assert result.results["skipped_samples"] == {"malformed_row": 2}
    other = tmp_path / "preds.tsv"
    other.write_bytes(source.read_bytes())
    with pytest.raises(DataError, match=r"reads \.csv or \.jsonl"):
        rescore(other, metrics=["exact_match"])


def test_samples_left_out_of_average_mark_are_counted_and_noted(tmp_path, offline_env):
    rows = [("q", "red", "red", 0), ("q", "red", "red", 4), ("q", "blue", "red", 4), ("q", "red", "blue", 3)]
    source = write_csv(tmp_path / "preds.csv", rows)
    with pytest.warns(UserWarning, match="average_mark: 2 of 4 samples left out"):
        result = rescore(source, metrics=["exact_match", "average_mark"], output_dir=tmp_path / "out",
                         bootstrap_samples=0)  # fmt: skip
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    entry = results["metrics"]["average_mark"]
    assert entry["value"] == pytest.approx(1 / 9)  # level 0 right (weight 1), level 3 wrong (weight 8)
    assert (entry["n"], entry["n_left_out"], entry["left_out_by_level"]) == (2, 2, {"4": 2})
    assert results["warnings"] == {"left_out_of_average_mark": 2} == result.results["warnings"]
    board = invoke(["leaderboard", str(tmp_path), "--no-write"])
    assert "2 left out of average mark" in board.stdout


def test_without_filters_predictions_lose_surrounding_whitespace_as_references_do(tmp_path, offline_env):
    # Reference cells are stripped when read; predictions must be too, or whitespace-sensitive metrics
    # score " red" against "red". Exact string equality shows it.
    source = tmp_path / "preds.jsonl"
    lines = [
        {"reference": " red ", "prediction": "  red\n"},
        {"reference": "blue", "prediction": "\tblue sky "},
    ]
    source.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    exact = [MetricSpec("exact_match", {"normalize": False})]
    rescore(source, metrics=exact, filters=[], output_dir=tmp_path / "out", bootstrap_samples=0)
    records = list(run_files.read_jsonl(tmp_path / "out" / "predictions.jsonl"))
    assert [(r["raw"], r["answer"], r["references"]) for r in records] == [
        ("  red\n", "red", ["red"]), ("\tblue sky ", "blue sky", ["blue"])
    ]  # fmt: skip
    assert [r["scores"]["exact_match"] for r in records] == [1.0, 0.0]

    # A stored run whose answers are re-derived with no filters: the same.
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"sample_id": "s1", "references": ["red"], "status": "ok", "raw": " red ", "answer": "x"}]
    run_files.write_jsonl(run / "predictions.jsonl", rows)
    result = rescore(run, metrics=exact, filters=[], bootstrap_samples=0)
    assert result.results["metrics"]["exact_match"]["value"] == 1.0
    assert next(run_files.read_jsonl(run / "predictions.jsonl"))["answer"] == "red"


class WorksOnce(SampleMetric):
    calls = 0

    def score(self, predictions, references):
        WorksOnce.calls += 1
        if WorksOnce.calls > 1:
            raise RuntimeError("second call")
        return {self.name: [1.0] * len(predictions)}


class _OncePlugin:
    @hookimpl
    def register_metrics(self, register):
        register("works-once", f"{__name__}:WorksOnce")
