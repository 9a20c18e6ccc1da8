"""A result replaced or miscounted: ``score`` writes into an existing run folder under the rule ``run``
follows (the same data and predictions again, or ``--replace``), and a run's predictions.jsonl that
names a sample twice is refused instead of being counted twice."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from vlmbench.cli import cli

GROUP = "Results replaced or miscounted"


def _invoke(*args: str):
    res = CliRunner().invoke(cli, [*args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


def _refused(res, detail: str) -> bool:
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    return res.exit_code == 2 and len(errors) == 1 and detail in errors[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_score_never_replaces_another_result_silently(tiny_task, tmp_path, reliability):
    runs = tmp_path / "runs"
    for k in ("3", "5"):  # two runs of the same task: two folders
        assert _invoke("run", "-m", "prior", "-a", f"k={k}", "-t", str(tiny_task), "-o", str(runs), "-q",
                       "--no-cache").exit_code == 0  # fmt: skip
    run_a, run_b = sorted(p.parent for p in runs.rglob("results.json"))
    a_before, b_before = _snapshot(run_a), _snapshot(run_b)
    ext = tmp_path / "ext.csv"
    ext.write_text("prediction,answer\nred,red\nblue,green\n")
    em = ("--metrics", "exact_match", "-q")

    refused = {
        "score EXTERNAL -o EXISTING_RUN": _invoke("score", str(ext), "-o", str(run_a), *em),
        "score RUN -o ANOTHER_RUN": _invoke("score", str(run_a), "-o", str(run_b), *em),
    }
    for name, res in refused.items():
        assert _refused(res, "pass --replace"), (name, res.stderr)
    assert _snapshot(run_a) == a_before and _snapshot(run_b) == b_before

    # What the rule allows: a run rescored in place, a copy rescored again, the same file scored again.
    assert _invoke("score", str(run_a), *em).exit_code == 0
    copy = tmp_path / "copy"
    for _ in range(2):
        assert _invoke("score", str(run_a), "-o", str(copy), *em).exit_code == 0
    for _ in range(2):
        assert _invoke("score", str(ext), "-o", str(tmp_path / "ext-out"), *em).exit_code == 0
    # and --replace, said explicitly
    assert _invoke("score", str(ext), "-o", str(run_b), "--replace", *em).exit_code == 0
    assert json.loads((run_b / "results.json").read_text())["model"]["kind"] == "external"
    reliability.record_each(
        GROUP, refused, "one Error line (pass --replace), exit 2; both runs' files unchanged byte for byte"
    )


def test_a_sample_id_on_two_lines_is_refused_not_counted_twice(tiny_task, tmp_path, reliability):
    assert _invoke("run", "-m", "prior", "-t", str(tiny_task), "-o", str(tmp_path / "r"), "-q",
                   "--no-cache").exit_code == 0  # fmt: skip
    (predictions,) = (tmp_path / "r").rglob("predictions.jsonl")
    lines = predictions.read_text().splitlines()
    predictions.write_text("\n".join([*lines, lines[3]]) + "\n")  # 24 samples, 25 lines
    before = _snapshot(predictions.parent)
    for command in (["score", str(predictions.parent), "--metrics", "exact_match", "-q"],
                    ["compare", str(predictions.parent), str(predictions.parent)]):  # fmt: skip
        res = _invoke(*command)
        assert _refused(
            res, f"predictions.jsonl:25: sample_id {json.loads(lines[3])['sample_id']!r} is already on line 4"
        ), res.stderr
    assert _snapshot(predictions.parent) == before
    reliability.record(
        GROUP, "a run's predictions.jsonl repeating a sample id (score RUN, compare)", 2,
        "one Error line naming both lines, exit 2; never counted twice, nothing rewritten",
    )  # fmt: skip
