"""`vlmbench leaderboard`: notes as numbered footnotes, the registered size of a model whose run recorded
none, the study's column set and the per-difficulty table, in Markdown and CSV."""

from __future__ import annotations

import csv
import io
import json

from click.testing import CliRunner
from study_runs import MODELS, STUDY_METRICS, write_study_runs

from vlmbench.analysis import leaderboard
from vlmbench.cli import cli

LONG_REASON = (
    "checkpoint org/some-model is not available offline: (the hub cannot be reached and no copy is cached); "
    "pass --model-args pretrained=PATH with a local folder"
)


def _write(folder, name, **extra):
    data = {
        "status": "ok",
        "task": {"name": "t", "n_scored": 10},
        "model": {"name": name, "label": name, "parameters": 1_000_000},
        "metrics": {"exact_match": {"value": 0.5, "ci95": [0.4, 0.6], "higher_is_better": True}},
        **extra,
    }
    (folder / name).mkdir(parents=True)
    (folder / name / "results.json").write_text(json.dumps(data), encoding="utf-8")


def _invoke(*args):
    result = CliRunner().invoke(cli, ["leaderboard", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def test_notes_are_numbered_footnotes_written_once(tmp_path):
    for name in ("skipped-a", "skipped-b", "skipped-c"):
        _write(tmp_path, name, status="skipped", reason=LONG_REASON, metrics={})
    _write(tmp_path, "limited", notes=["limited to 5 of 24 samples (--limit 5)"])
    _write(tmp_path, "ranker", notes=["answers by ranking candidates (train answers), as it cannot generate",
                                     "limited to 5 of 24 samples (--limit 5)"])  # fmt: skip
    _write(tmp_path, "cached", model={"name": "cached", "label": "cached", "parameters_registered": "385M"},
           timing={"cached_rerun": True})  # fmt: skip
    code, out, _ = _invoke(tmp_path, "--no-write")
    assert code == 0
    assert out.count(LONG_REASON) == 1  # one footnote for the three rows that share it
    rows = {line.split(" | ")[1]: line for line in out.splitlines() if line.startswith("| t |")}
    number = {
        line.split(". ", 1)[1]: line.split(". ", 1)[0] for line in out.splitlines() if line[:1].isdigit()
    }
    assert number[f"skipped: {LONG_REASON}"] and len(number) == 3
    for name in ("skipped-a", "skipped-b", "skipped-c"):
        assert rows[name].endswith(f"| [{number[f'skipped: {LONG_REASON}']}] |")
    limit, rank = number["limited to 5 of 24 samples (--limit 5)"], number[
        "answers by ranking candidates (train answers), as it cannot generate"]  # fmt: skip
    assert rows["ranker"].endswith(f"| [{rank}] [{limit}] |") and rows["limited"].endswith(f"| [{limit}] |")
    assert "| 385M (registered) |" in rows["cached"] and "| ? |" not in rows["cached"]
    assert rows["limited"].split(" | ")[2] == "1.0M"

    code, out, _ = _invoke(tmp_path, "--no-write", "--format", "csv")
    table = {r["model"]: r for r in csv.DictReader(io.StringIO(out))}
    assert table["skipped-b"]["notes"] == f"skipped: {LONG_REASON}"  # a CSV row stands alone
    assert table["skipped-b"]["footnotes"] == number[f"skipped: {LONG_REASON}"]
    assert table["ranker"]["footnotes"] == f"{rank} {limit}"
    assert table["cached"]["parameters"] == "" and table["cached"]["parameters_registered"] == "385M"
    assert list(table["cached"])[:8] == ["task", "model", "checkpoint", "parameters", "n", "status",
                                         "exact_match", "exact_match_ci_low"]  # fmt: skip


def test_study_columns_in_the_study_order(tmp_path):
    write_study_runs(tmp_path)
    code, out, _ = _invoke(tmp_path, "--columns", "study", "--no-write")
    assert code == 0
    header = out.splitlines()[0].strip("| ").split(" | ")
    assert header == ["task", "model", "parameters", "n", *STUDY_METRICS, "notes"]
    assert "| 182M (registered) |" in out
    # a study column no run has is shown empty, as in the study's table
    _write(tmp_path / "more", "em-only")
    code, out, _ = _invoke(tmp_path / "more", "--columns", "study", "--format", "csv", "--no-write")
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["exact_match"] == "0.5" and row["bertscore_precision"] == "" and "sbert_ci_high" in row
    code, out, _ = _invoke(tmp_path, "--columns", "average_mark,exact_match", "--no-write")
    assert out.splitlines()[0] == "| task | model | parameters | n | average_mark | exact_match | notes |"
    res = CliRunner().invoke(cli, ["leaderboard", str(tmp_path), "--columns", "exact_mach"])
    assert res.exit_code == 2 and res.output.startswith("Error: ") and len(res.output.splitlines()) == 1
    assert "did you mean 'exact_match'" in res.output


def test_by_difficulty_per_model_and_level_with_n(tmp_path):
    write_study_runs(tmp_path)
    _write(tmp_path / "studylike", "skipped", status="skipped", reason="no weights", metrics={},
           task={"name": "studylike"})  # fmt: skip
    code, out, err = _invoke(tmp_path, "--by-difficulty", "--columns", "study")
    assert code == 0 and "leaderboard_by_difficulty.md" in err
    lines = [line for line in out.splitlines() if line.startswith("| studylike |")]
    assert len(lines) == len(MODELS) * 5  # nine models, five levels each
    header = out.splitlines()[0].strip("| ").split(" | ")
    assert header == ["task", "model", "difficulty", "n", *STUDY_METRICS]
    first = [line.split(" | ") for line in lines[:5]]
    assert [cells[2] for cells in first] == ["0", "1", "2", "3", "5"] and {cells[3] for cells in first} == {
        "12"
    }
    assert len({cells[1] for cells in first}) == 1  # grouped by model, in leaderboard order
    assert "Not shown: skipped (skipped)." in out
    written = (tmp_path / "leaderboard_by_difficulty.md").read_text(encoding="utf-8")
    assert written == out and not (tmp_path / "leaderboard.md").exists()

    rows = list(csv.DictReader(io.StringIO((tmp_path / "leaderboard_by_difficulty.csv").read_text())))
    assert len(rows) == len(MODELS) * 5
    data = json.loads(next((tmp_path / "studylike").glob("model3-*/results.json")).read_text())
    mine = {
        r["difficulty"]: r
        for r in rows
        if r["run_dir"].endswith(next((tmp_path / "studylike").glob("model3-*")).name)
    }
    for level, entry in data["by_difficulty"].items():
        assert int(mine[level]["n"]) == entry["n"]
        average_mark = entry["metrics"]["average_mark"]
        assert float(mine[level]["average_mark"]) == average_mark["value"]
        assert float(mine[level]["average_mark_ci_low"]) == average_mark["ci95"][0]


def test_a_hand_edited_notes_field_is_read_as_one_note(tmp_path):
    assert leaderboard.row_from_results({"status": "ok", "notes": "one note"}, tmp_path).notes == ["one note"]
    assert leaderboard.row_from_results({"status": "ok", "notes": {"a": 1}}, tmp_path).notes == []
