"""Fault injection into run artifacts: the analysis commands (leaderboard, plot, compare, score) never
show a traceback. A bad results.json or predictions.jsonl under a folder is skipped with one warning
naming it while the good runs are still analysed; a bad file given directly is one ``Error:`` line
naming it (exit 2); bad rows of an external predictions file are skipped and counted.

Every fault class is recorded with the `reliability` fixture (see conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from vlmbench_testing import colour_rows, invoke_cli, make_images, run_cli, write_task

GROUP = "Bad artifacts"
DEEP = "[" * 100_000 + "]" * 100_000  # more nesting than the JSON parser's recursion limit


def _edit(change: Callable[[dict], None]) -> Callable[[Path, bytes], None]:
    """A fault that writes the good results.json back after ``change`` (still valid JSON)."""

    def inject(path: Path, good: bytes) -> None:
        data = json.loads(good)
        change(data)
        path.write_text(json.dumps(data), encoding="utf-8")

    return inject


def _write(data: bytes | str) -> Callable[[Path, bytes], None]:
    def inject(path: Path, good: bytes) -> None:
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return inject


def _replace_with_folder(path: Path, good: bytes) -> None:
    path.mkdir()


def _dangling_link(path: Path, good: bytes) -> None:
    path.symlink_to(path.parent / "no-such-file.json")


def _fifo(path: Path, good: bytes) -> None:
    os.mkfifo(path)  # opening it would wait for a writer forever


def _oversized(path: Path, good: bytes) -> None:
    with open(path, "wb") as fh:  # sparse: large on paper, nothing written
        fh.truncate(64 * 2**20)


def _set(*keys: str, value) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


# name -> (fault injected into a results.json, what the warning or error says)
RESULTS_FAULTS: dict[str, tuple[Callable[[Path, bytes], None], str]] = {
    "truncated": (lambda p, good: p.write_bytes(good[: len(good) // 2]), "not valid JSON"),
    "empty": (_write(b""), "empty"),
    "whitespace only": (_write(b" \n\t\n"), "empty"),
    "not UTF-8": (lambda p, good: p.write_bytes(good.replace(b'"ok"', b'"\xff\xfe"')), "not UTF-8"),
    "binary garbage": (_write(bytes(range(256)) * 4), "not UTF-8"),
    "not JSON": (_write("status: ok\nmetrics: none\n"), "not valid JSON"),
    "a JSON list": (_write("[1, 2, 3]"), "holds a list"),
    "a JSON number": (_write("42"), "holds 42"),
    "an object of another program": (_write('{"name": "x", "version": 3}'), "no 'status'"),
    "unknown schema version": (_edit(_set("schema", value="vlmbench.results/9")), "vlmbench.results/9"),
    "NaN metric value": (
        lambda p, good: p.write_text(good.decode().replace('"value": 0.', '"value": NaN, "was": 0.', 1)),
        "NaN",
    ),
    "Infinity in an interval": (
        lambda p, good: p.write_text(good.decode().replace('"ci95": [', '"ci95": [Infinity, ', 1)),
        "Infinity",
    ),
    "metrics as a list": (_edit(_set("metrics", value=[1, 2])), "metrics must be an object"),
    "metric value as text": (
        _edit(_set("metrics", "exact_match", "value", value="high")),
        "exact_match.value",
    ),
    "interval of one number": (_edit(_set("metrics", "exact_match", "ci95", value=[0.1])), "ci95"),
    "parameter count as text": (_edit(_set("model", "parameters", value="3B")), "model.parameters"),
    "task as text": (_edit(_set("task", value="abo")), "task must be an object"),
    "unknown status": (_edit(_set("status", value="done")), "status"),
    "null skipped-sample count": (_edit(_set("skipped_samples", value={"missing_image": None})), "null"),
    "difficulty weight key not a number": (
        _edit(_set("config", "difficulty_weights", value={"hard": 2.0})),
        "difficulty_weights.hard",
    ),
    "per-difficulty metrics as text": (
        _edit(_set("by_difficulty", value={"0": {"n": 2, "metrics": "good"}})),
        "by_difficulty.0.metrics",
    ),
    "deeply nested": (_write('{"status": "ok", "task": ' + DEEP + "}"), "nested too deeply"),
    "a folder named results.json": (_replace_with_folder, "a folder"),
    "a dangling symlink": (_dangling_link, "missing"),
    "a FIFO named results.json": (_fifo, "not a regular file"),
    "64 MiB file": (_oversized, "too large"),
}


def _good_line(good: bytes) -> dict:
    return json.loads(good.splitlines()[0])


def _line_fault(change: Callable[[dict], object]) -> Callable[[Path, bytes], None]:
    """A fault that replaces the first record of predictions.jsonl with ``change(record)``'s JSON."""

    def inject(path: Path, good: bytes) -> None:
        lines = good.splitlines(keepends=True)
        lines[0] = (json.dumps(change(_good_line(good))) + "\n").encode()
        path.write_bytes(b"".join(lines))

    return inject


def _write_before(line: bytes) -> Callable[[Path, bytes], None]:
    """A fault that puts ``line`` before the good records."""
    return lambda path, good: path.write_bytes(line + b"\n" + good)


def _without(key: str) -> Callable[[dict], dict]:
    return lambda row: {k: v for k, v in row.items() if k != key}


def _with(key: str, value) -> Callable[[dict], dict]:
    return lambda row: {**row, key: value}


# name -> (fault injected into a predictions.jsonl, what the error says)
PREDICTION_FAULTS: dict[str, tuple[Callable[[Path, bytes], None], str]] = {
    "cut mid-line": (lambda p, good: p.write_bytes(good[: good.index(b"\n", 200) - 20]), "not valid JSON"),
    "non-UTF-8 line": (_write_before(b'{"sample_id": "\xff"}'), ":1: not UTF-8"),
    "a line that is a list": (_write_before(b"[1, 2]"), "holds a list"),
    "record without references": (_line_fault(_without("references")), "no 'references'"),
    "references as text": (_line_fault(_with("references", "red")), "references must be a list"),
    "NaN score": (
        _write_before(
            b'{"sample_id": "x", "status": "ok", "references": [], "scores": {"exact_match": NaN}}'
        ),
        "NaN",
    ),
    "score as text": (_line_fault(_with("scores", {"exact_match": "yes"})), "scores.exact_match"),
    "difficulty as text": (_line_fault(_with("difficulty", "hard")), "difficulty must be"),
    "sample id true": (_line_fault(_with("sample_id", True)), "sample_id"),
    "deeply nested line": (_write_before(DEEP.encode()), "nested too deeply"),
    "17 MiB line": (_write_before(b'{"sample_id": "' + b"x" * (17 * 2**20) + b'"}'), "longer than"),
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A finished run of the `prior` baseline, made by the CLI (its artifacts are the reference)."""
    root = tmp_path_factory.mktemp("good")
    task = write_task(root / "task", colour_rows(make_images(root / "task" / "images", 8)))
    env = {"VLMBENCH_CACHE_DIR": str(root / "cache"), "VLMBENCH_OFFLINE": "1"}
    res = run_cli(["run", "-m", "prior", "-t", str(task), "-o", str(root / "runs"), "-q", "--no-cache",
                   "--metrics", "exact_match,average_mark"], env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    (results,) = (root / "runs").rglob("results.json")
    return results.parent


def _copy_run(good_run: Path, folder: Path, label: str) -> Path:
    """The good run under another folder and model label (a second run of the same task)."""
    shutil.copytree(good_run, folder)
    data = json.loads((folder / "results.json").read_text())
    data["model"]["label"] = label
    (folder / "results.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def _faulty_runs(root: Path, good_run: Path, faults: dict, artifact: str) -> dict[str, Path]:
    """One run folder per fault, with ``artifact`` (results.json or predictions.jsonl) replaced."""
    paths = {}
    good = (good_run / artifact).read_bytes()
    for i, (name, (inject, _)) in enumerate(faults.items()):
        folder = _copy_run(good_run, root / f"bad{i:02d}", f"bad{i:02d}")
        (folder / artifact).unlink()
        inject(folder / artifact, good)
        paths[name] = folder / artifact
    return paths


def _assert_clean(res, code: int) -> None:
    assert res.returncode == code, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout


def _files(root: Path) -> dict[Path, tuple[int, int, int]]:
    """Each entry under ``root`` with its inode, size and modification time (a replaced file differs)."""
    return {p: (p.lstat().st_ino, p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def _error_line(res) -> str:
    lines = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


# -- folders of runs: leaderboard and plot ---------------------------------------------------------


def test_leaderboard_and_plot_skip_bad_results_and_keep_the_good_runs(tmp_path, good_run, reliability):
    root = tmp_path / "runs"
    root.mkdir()
    _copy_run(good_run, root / "good-a", "good-a")
    _copy_run(good_run, root / "good-b", "good-b")
    bad = _faulty_runs(root, good_run, RESULTS_FAULTS, "results.json")

    res = run_cli(["leaderboard", str(root), "--no-write"], timeout=60)
    _assert_clean(res, 0)
    assert "good-a" in res.stdout and "good-b" in res.stdout and "bad0" not in res.stdout
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == len(RESULTS_FAULTS), res.stderr
    for name, path in bad.items():
        (line,) = [w for w in warnings if f"{path}:" in w]
        assert RESULTS_FAULTS[name][1] in line, (name, line)

    res = run_cli(["plot", str(root), "-o", str(tmp_path / "plots")], timeout=120)
    _assert_clean(res, 0)
    assert (tmp_path / "plots" / "report.html").is_file()
    assert sum(line.startswith("warning: skipped") for line in res.stderr.splitlines()) == len(bad)
    html = (tmp_path / "plots" / "report.html").read_text()
    assert "good-a" in html and "good-b" in html

    reliability.record_each(
        GROUP,
        RESULTS_FAULTS,
        "leaderboard and plot skip it with one warning naming it; the good runs are shown",
        prefix="results.json under a runs folder: ",
    )


def test_no_readable_run_is_one_error(tmp_path, good_run, reliability):
    root = tmp_path / "runs"
    root.mkdir()
    faults = {k: v for k, v in RESULTS_FAULTS.items() if k in ("truncated", "a JSON list", "deeply nested")}
    _faulty_runs(root, good_run, faults, "results.json")
    for command in (["leaderboard", str(root)], ["plot", str(root)]):
        res = run_cli(command, timeout=60)
        _assert_clean(res, 2)
        assert "none of the 3 results.json files" in _error_line(res)
    assert not (root / "leaderboard.md").exists() and not (root / "plots").exists()
    reliability.record(
        GROUP, "a runs folder in which no results.json can be read", 2, "one Error: line, exit 2"
    )


def test_plot_skips_a_run_whose_predictions_are_bad(tmp_path, good_run, reliability):
    root = tmp_path / "runs"
    root.mkdir()
    _copy_run(good_run, root / "good", "good")
    faults = {k: PREDICTION_FAULTS[k] for k in ("cut mid-line", "NaN score", "deeply nested line")}
    bad = _faulty_runs(root, good_run, faults, "predictions.jsonl")
    res = run_cli(["plot", str(root), "-o", str(tmp_path / "plots")], timeout=120)
    _assert_clean(res, 0)
    for path in bad.values():
        assert sum(str(path) in line for line in res.stderr.splitlines() if line.startswith("warning:")) == 1
    assert (tmp_path / "plots" / "confusions.png").is_file()
    reliability.record(
        GROUP,
        "predictions.jsonl of one run in a plotted folder",
        len(bad),
        "that run is skipped with a warning",
    )


# -- a bad file given directly: compare and score --------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("artifact", ["results.json", "predictions.jsonl"])
def test_compare_and_score_name_a_bad_file(tmp_path, good_run, artifact, reliability):
    faults = RESULTS_FAULTS if artifact == "results.json" else PREDICTION_FAULTS
    bad = _faulty_runs(tmp_path, good_run, faults, artifact)
    before = _files(tmp_path)
    commands = {}
    for name, path in bad.items():
        commands[name, "compare"] = ["compare", str(good_run), str(path.parent), "--bootstrap-samples", "0"]
        commands[name, "score"] = ["score", str(path.parent), "--metrics", "exact_match"]
    # In this process: the subject is each command's checks (the same group and exit codes as the
    # console script), and a hundred process starts would cost a minute of the suite.
    results = {key: invoke_cli(args) for key, args in commands.items()}
    for (name, command), res in results.items():
        _assert_clean(res, 2)
        line = _error_line(res)
        assert str(bad[name]) in line and faults[name][1] in line, (name, command, line)
    assert _files(tmp_path) == before  # nothing replaced or added
    reliability.record_each(
        GROUP,
        faults,
        "one Error: line naming the file and the problem, exit 2; nothing written",
        prefix=f"{artifact} given to compare and score: ",
        tries=2,
    )


@pytest.mark.slow
def test_score_counts_bad_rows_of_an_external_file(tmp_path, reliability):
    jsonl = tmp_path / "preds.jsonl"
    huge = "y" * (5 * 2**20)
    jsonl.write_text(
        "\n".join([
            json.dumps({"prediction": "red", "reference": "red"}),
            DEEP,  # nested deeper than the parser goes
            json.dumps({"prediction": huge, "reference": "blue"}),  # a huge but well-formed line
            '{"prediction": "blue", "reference": "blue", "difficulty": NaN}',
            '{"prediction": "blue", "reference": ' + "[" * 900 + "]" * 900 + "}",  # deep, within the limit
            '{"prediction": "green", "reference": "green"',  # cut short
        ]) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    res = run_cli(["score", str(jsonl), "--metrics", "exact_match", "--bootstrap-samples", "0",
                   "-o", str(tmp_path / "out-jsonl")], timeout=60)  # fmt: skip
    _assert_clean(res, 0)
    results = json.loads((tmp_path / "out-jsonl" / "results.json").read_text())
    assert results["skipped_samples"] == {"bad_difficulty": 1, "malformed_row": 2}
    assert results["task"]["n_scored"] == 3
    assert any(":2: JSON nested too deeply" in e for e in results["skipped_sample_examples"])

    csv_file = tmp_path / "preds.csv"
    csv_file.write_text(
        "prediction,reference\nred,red\n" + "x" * 200_000 + ",blue\ngreen,green\nblue,blue,extra\n",
        encoding="utf-8",
    )
    res = run_cli(["score", str(csv_file), "--metrics", "exact_match", "--bootstrap-samples", "0",
                   "-o", str(tmp_path / "out-csv")], timeout=60)  # fmt: skip
    _assert_clean(res, 0)
    results = json.loads((tmp_path / "out-csv" / "results.json").read_text())
    assert results["skipped_samples"] == {"malformed_row": 2} and results["task"]["n_scored"] == 2
    reliability.record(
        GROUP,
        "external predictions: nested, huge, NaN and cut-short JSONL lines; over-long and extra CSV fields",
        7,
        "bad rows skipped and counted by reason; the good rows scored, exit 0",
    )


def test_score_refuses_unusable_external_files(tmp_path, reliability):
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    files = {
        "not UTF-8": (tmp_path / "latin1.csv", "prediction,reference\nrouge,r\xe9d\n".encode("latin-1")),
        "empty": (tmp_path / "empty.csv", b""),
        "only bad rows": (tmp_path / "bad.jsonl", (DEEP + "\n[1]\n").encode()),
        "not a regular file": (fifo, None),
    }
    for name, (path, data) in files.items():
        if data is not None:
            path.write_bytes(data)
        res = run_cli(
            ["score", str(path), "--metrics", "exact_match", "-o", str(tmp_path / "out")], timeout=60
        )
        _assert_clean(res, 2)
        assert str(path) in _error_line(res), name
    assert not (tmp_path / "out").exists()
    reliability.record(
        GROUP,
        "external predictions file that is not UTF-8, empty, all bad rows, or a FIFO",
        len(files),
        "one Error: line naming the file, exit 2",
    )
