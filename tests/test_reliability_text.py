"""Text that cannot be encoded: a lone surrogate (``"\\ud800"`` in JSON, a YAML escape, a file name's
undecodable byte on the command line) wherever text comes from outside. One policy: a data row holding
one is skipped and counted as ``bad_encoding`` before any model work; a file or an option holding one is
one ``Error:`` line and exit status 2. Never a UnicodeEncodeError, never after the model work.
"""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner

from vlmbench.cli import cli

from vlmbench_testing import make_images

GROUP = "Text that cannot be encoded"
BAD = "caf\ud800e"  # what json.loads makes of "caf\\ud800e"


def _invoke(args: list[str]):
    res = CliRunner().invoke(cli, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    return res


def _one_error(res, detail: str) -> None:
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert res.exit_code == 2 and len(errors) == 1 and detail in errors[0], res.stderr


def test_task_rows_with_a_lone_surrogate_are_counted_skips(tmp_path, reliability):
    images = tmp_path / "images"
    paths = [p for p, _ in make_images(images, 4)]
    rows = [{"id": f"s{i}", "image_id": f"i{i}", "path": p, "question": "What colour is it?", "answer": "red",
             "difficulty": 0} for i, p in enumerate(paths)]  # fmt: skip
    rows += [
        {**rows[0], "id": "q", "question": f"What is {BAD}?"},
        {**rows[1], "id": "a", "answer": BAD},
        {**rows[2], "id": BAD},
    ]
    # json.dumps writes the surrogate as the \ud800 escape a hostile or broken tool would write
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    spec = {"task": "text", "version": 1, "metrics": ["exact_match"],
            "dataset": {"path": "d.jsonl", "image_root": "images", "columns": {"id": "id"}}}  # fmt: skip
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    res = _invoke(["run", "-m", "prior", "-t", str(tmp_path / "t.yaml"), "-o", str(tmp_path / "r"), "-q",
                   "--cache", str(tmp_path / "c.sqlite")])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    (path,) = (tmp_path / "r").rglob("results.json")
    results = json.loads(path.read_text(encoding="utf-8"))
    assert results["skipped_samples"] == {"bad_encoding": 3}
    assert results["task"]["n_scored"] == 4
    assert any("d.jsonl:5" in e and "\\ud800" in e for e in results["skipped_sample_examples"])
    reliability.record_each(
        GROUP,
        ["lone surrogate in a JSONL question", "lone surrogate in a JSONL answer", "lone surrogate in a JSONL id"],
        "skipped and counted as bad_encoding with file:line, before any model work; the rest evaluated, exit 0",
    )  # fmt: skip


def test_external_predictions_with_a_lone_surrogate_are_counted_skips(tmp_path, reliability):
    rows = [{"prediction": "red", "answer": "red"}, {"prediction": BAD, "answer": "red"},
            {"prediction": "blue", "answer": BAD}]  # fmt: skip
    ext = tmp_path / "ext.jsonl"
    ext.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    res = _invoke(["score", str(ext), "--metrics", "exact_match", "-o", str(tmp_path / "out"), "-q"])
    assert res.exit_code == 0, res.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert results["skipped_samples"] == {"bad_encoding": 2} and results["task"]["n_scored"] == 1
    reliability.record(
        GROUP, "lone surrogate in an external predictions file (prediction, reference)", 2,
        "skipped and counted as bad_encoding with file:line; the rest scored, exit 0",
    )  # fmt: skip


def test_files_and_options_with_a_lone_surrogate_are_one_error_line(tiny_task, tmp_path, reliability):
    run_file = tmp_path / "runs.yaml"
    run_file.write_text(f'models: [{{name: prior, label: "x\\ud800"}}]\ntasks: ["{tiny_task}"]\n')
    _one_error(_invoke(["run", "--config", str(run_file), "--no-cache", "-q"]), "not valid Unicode text")
    task = tmp_path / "task.yaml"
    task.write_text(tiny_task.read_text() + 'description: "\\ud800"\n')
    _one_error(_invoke(["run", "-m", "prior", "-t", str(task), "--no-cache", "-q"]), "not valid Unicode text")
    # A command-line argument with a byte that is not UTF-8 reaches Python as a lone surrogate.
    ext = tmp_path / "ext.csv"
    ext.write_text("prediction,answer\nred,red\n")
    _one_error(_invoke(["score", str(ext), "--name", "label\udcff", "-q"]), "argument 4")
    # A run's predictions.jsonl edited to hold one: the artifact is refused, nothing rewritten.
    assert _invoke(["run", "-m", "prior", "-t", str(tiny_task), "-o", str(tmp_path / "r"), "-q",
                    "--no-cache"]).exit_code == 0  # fmt: skip
    (predictions,) = (tmp_path / "r").rglob("predictions.jsonl")
    lines = predictions.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[0])
    lines[0] = json.dumps({**row, "answer": BAD})
    predictions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = (predictions.parent / "results.json").read_bytes()
    _one_error(
        _invoke(["score", str(predictions.parent), "--metrics", "exact_match", "-q"]), ":1: not valid Unicode"
    )
    assert (predictions.parent / "results.json").read_bytes() == before
    reliability.record_each(
        GROUP,
        ["lone surrogate in a run-file label", "lone surrogate in a task file", "non-UTF-8 byte in a command-line label",
         "lone surrogate in a run's predictions.jsonl (score RUN)"],
        "one Error line naming where, exit 2, before any work; nothing written",
    )  # fmt: skip
