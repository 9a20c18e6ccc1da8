"""Bad input, through the command line a user types: every case ends in one ``Error:`` line and exit
status 2 (found before any model work), or in a counted skip with exit status 0 — never a traceback.

Each case builds its own small task next to shared images and runs ``vlmbench run`` in a fresh process
with default settings (DataLoader workers included). The cases run a few at a time to keep the suite fast.
"""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from vlmbench_testing import invoke_cli, make_images

N_IMAGES = 4  # a missing, broken or hostile image is always one of several good ones


@dataclass
class Case:
    name: str
    build: object  # (folder: Path, images: Path) -> list of CLI arguments after `run`
    expect: str  # "error" or "skip"
    detail: object  # error: substring of the message; skip: {reason: count}


def _rows(images: Path, **changes) -> list[dict]:
    rows = []
    for i, rel in enumerate(sorted(p.relative_to(images).as_posix() for p in images.rglob("*.jpg"))):
        rows.append(
            {
                "image_id": f"i{i}",
                "path": rel,
                "question": "What colour is it?",
                "answer": "red",
                "difficulty": 0,
            }
        )
    for index, row_changes in changes.get("edit", {}).items():
        rows[index].update(row_changes)
    return rows


def _task(
    folder: Path, images: Path, *, rows=None, csv_bytes=None, spec=None, yaml_text=None, name="case"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if csv_bytes is None:
        rows = rows if rows is not None else _rows(images)
        header = list(rows[0])
        lines = [",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]
        csv_bytes = ("\n".join(lines) + "\n").encode()
    (folder / "data.csv").write_bytes(csv_bytes)
    path = folder / f"{name}.yaml"
    if yaml_text is not None:
        path.write_text(yaml_text)
        return path
    data = {"task": name, "version": 1, "dataset": {"path": "data.csv", "image_root": str(images)},
            "metrics": ["exact_match"]}  # fmt: skip
    data.update(spec or {})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run_args(task: Path, folder: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "prior",
        "-t",
        str(task),
        "-o",
        str(folder / "runs"),
        "--cache",
        str(folder / "c.sqlite"),
        "-q",
        *extra,
    ]


def _plain(folder, images, *extra):
    return _run_args(_task(folder, images), folder, *extra)


def _spec(**spec):
    return lambda f, im: _run_args(_task(f, im, spec=spec), f)


def _yaml(text):
    def build(f, im):
        return _run_args(_task(f, im, yaml_text=textwrap.dedent(text).replace("IMAGES", str(im))), f)

    return build


def _edit(index, **changes):
    return lambda f, im: _run_args(_task(f, im, rows=_rows(im, edit={index: changes})), f)


def _image_copy(f: Path, im: Path) -> Path:
    """A private copy of the images, for cases that damage one."""
    target = f / "images"
    for p in im.rglob("*.jpg"):
        (target / p.relative_to(im)).parent.mkdir(parents=True, exist_ok=True)
        (target / p.relative_to(im)).write_bytes(p.read_bytes())
    return target


def _damage(fn):
    def build(f, im):
        own = _image_copy(f, im)
        rows = _rows(own)
        fn(own / rows[0]["path"], own)
        return _run_args(_task(f, own, rows=rows), f)

    return build


def _output_is_a_file(f, im):
    (f / "out").parent.mkdir(parents=True, exist_ok=True)
    (f / "out").write_text("x")
    return ["-m", "prior", "-t", str(_task(f, im)), "-o", str(f / "out"), "--no-cache", "-q"]


def _cache_is(kind):
    def build(f, im):
        task = _task(f, im)
        target = f / f"cache-{kind}"
        if kind == "folder":
            target.mkdir()
        elif kind == "csv":
            target.write_text("image_id,path,question,answer\n")
        else:
            with sqlite3.connect(target) as con:
                con.execute("CREATE TABLE orders (id INTEGER)")
        return ["-m", "prior", "-t", str(task), "-o", str(f / "runs"), "--cache", str(target), "-q"]

    return build


def _candidates(content: bytes | None, suffix: str = ".json"):
    def build(f, im):
        f.mkdir(parents=True, exist_ok=True)
        cand = f / f"candidates{suffix}"
        if content is not None:
            cand.write_bytes(content)
        spec = {"request_type": "rank", "candidates": {"source": "file", "path": cand.name}}
        return _run_args(_task(f, im, spec=spec), f)

    return build


def _include(content: bytes | None):
    def build(f, im):
        f.mkdir(parents=True, exist_ok=True)
        if content is not None:
            (f / "base.yaml").write_bytes(content)
        task = _task(f, im)
        task.write_text("include: base.yaml\n" + task.read_text())
        return _run_args(task, f)

    return build


def _jsonl(line: str):
    def build(f, im):
        f.mkdir(parents=True, exist_ok=True)
        rows = [json.dumps(r) for r in _rows(im)] + [line]
        (f / "d.jsonl").write_text("\n".join(rows) + "\n")
        spec = {
            "task": "j",
            "version": 1,
            "dataset": {"path": "d.jsonl", "image_root": str(im)},
            "metrics": ["exact_match"],
        }
        (f / "j.yaml").write_text(yaml.safe_dump(spec))
        return _run_args(f / "j.yaml", f)

    return build


def _fifo(f, im):
    own = _image_copy(f, im)
    rows = _rows(own)
    os.mkfifo(own / "fifo.jpg")
    rows += [{"image_id": "x", "path": "fifo.jpg", "question": "Q?", "answer": "a", "difficulty": 0}]
    return _run_args(_task(f, own, rows=rows), f)


def _symlink_loop(f, im):
    own = _image_copy(f, im)
    rows = _rows(own)
    (own / "loop1.jpg").symlink_to(own / "loop2.jpg")
    (own / "loop2.jpg").symlink_to(own / "loop1.jpg")
    rows += [{"image_id": "x", "path": "loop1.jpg", "question": "Q?", "answer": "a", "difficulty": 0}]
    return _run_args(_task(f, own, rows=rows), f)


def _huge_file(f, im):
    own = _image_copy(f, im)
    rows = _rows(own)
    with open(own / "huge.jpg", "wb") as fh:  # sparse: large on paper, no disk used
        fh.truncate(300 * 2**20)
    rows += [{"image_id": "x", "path": "huge.jpg", "question": "Q?", "answer": "a", "difficulty": 0}]
    return _run_args(_task(f, own, rows=rows), f)


def _folder_as_image(f, im):
    own = _image_copy(f, im)
    rows = _rows(own)
    (own / "dir.jpg").mkdir()
    rows += [{"image_id": "x", "path": "dir.jpg", "question": "Q?", "answer": "a", "difficulty": 0}]
    return _run_args(_task(f, own, rows=rows), f)


def _csv_text(text: str, encoding: str = "utf-8"):
    return lambda f, im: _run_args(
        _task(f, im, csv_bytes=text.replace("IMG", _first(im)).encode(encoding)), f
    )


def _first(im: Path) -> str:
    return sorted(p.relative_to(im).as_posix() for p in im.rglob("*.jpg"))[0]


HEADER = "image_id,path,question,answer,difficulty\n"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdef", "bcdefg", strict=True)
)  # 9**7 values from a few hundred bytes

CASES = [
    # -- locations and options: one Error line before any model work
    Case("output folder is a file", _output_is_a_file, "error", "is a file"),
    Case("output folder cannot be created", lambda f, im: ["-m", "prior", "-t", str(_task(f, im)), "-o", "/proc/self/out", "--no-cache"], "error", "output folder"),
    Case("--cache is a folder", _cache_is("folder"), "error", "is a folder"),
    Case("--cache is a CSV file", _cache_is("csv"), "error", "not a vlmbench prediction cache"),
    Case("--cache is another program's database", _cache_is("db"), "error", "not a vlmbench prediction cache"),
    Case("--device bogus", lambda f, im: _plain(f, im, "--device", "bogus"), "error", "unknown device"),
    Case("--device cuda:99", lambda f, im: _plain(f, im, "--device", "cuda:99"), "error", "cuda:99"),
    Case("--device cpu:3", lambda f, im: _plain(f, im, "--device", "cpu:3"), "error", "cpu"),
    Case("--seed -1", lambda f, im: _plain(f, im, "--seed", "-1"), "error", "--seed"),
    Case("--seed beyond 32 bits", lambda f, im: _plain(f, im, "--seed", str(2**40)), "error", "--seed"),
    Case("--batch-size 0", lambda f, im: _plain(f, im, "--batch-size", "0"), "error", "--batch-size"),
    Case("--limit 0", lambda f, im: _plain(f, im, "--limit", "0"), "error", "--limit"),
    Case("--num-workers -1", lambda f, im: _plain(f, im, "--num-workers", "-1"), "error", "--num-workers"),
    Case("unknown model", lambda f, im: ["-m", "blipp", "-t", str(_task(f, im)), "--no-cache"], "error", "did you mean"),
    Case("unknown task", lambda f, im: ["-m", "prior", "-t", "abo_sampel", "--no-cache"], "error", "did you mean"),
    Case("unknown model argument", lambda f, im: _plain(f, im, "-a", "kk=3"), "error", "did you mean 'k'"),
    Case("model argument of the wrong type", lambda f, im: _plain(f, im, "-a", "k=many"), "error", "invalid value"),
    Case("unknown metric", lambda f, im: _plain(f, im, "--metrics", "exact_matsh"), "error", "did you mean"),
    # -- task files
    Case("invalid YAML", _yaml("task: [x\n"), "error", "invalid YAML"),
    Case("YAML python object tag", _yaml("task: !!python/object/apply:os.system ['true']\nversion: 1\n"), "error", "invalid YAML"),
    Case("YAML nested too deeply", _yaml("task: " + "[" * 3000 + "\n"), "error", "invalid YAML"),
    Case("YAML alias bomb", _yaml(BOMB + "task: t\nversion: 1\ndataset: {path: data.csv}\n"), "error", "expands to more than"),
    Case("task file is a folder", lambda f, im: ["-m", "prior", "-t", str(f / "dir.yaml"), "--no-cache"] if (f / "dir.yaml").mkdir(parents=True) is None else [], "error", "is a folder"),
    Case("task file not UTF-8", lambda f, im: (f.mkdir(parents=True), (f / "t.yaml").write_bytes(b"task: caf\xe9\n"), ["-m", "prior", "-t", str(f / "t.yaml")])[2], "error", "not UTF-8"),
    Case("unknown key", _spec(metrix=["exact_match"]), "error", "unknown key"),
    Case("the internal source_path key", _spec(source_path="/tmp/x"), "error", "unknown key"),
    Case("prompt with a huge format spec", _spec(prompt={"default": "{question:>5000000}"}), "error", "format specification"),
    Case("prompt with a nested field", _spec(prompt={"default": "{question:{question}}"}), "error", "format specification"),
    Case("prompt with a conversion", _spec(prompt={"default": "{question!r}"}), "error", "format specification"),
    Case("prompt with an attribute lookup", _spec(prompt={"default": "{question.__class__}"}), "error", "unknown field"),
    Case("bootstrap_samples of a billion", _spec(bootstrap_samples=10**9), "error", "bootstrap_samples"),
    Case("negative difficulty weight", _spec(difficulty_weights={0: -1}), "error", "must not be negative"),
    Case("generation.max_new_tokens 0", _spec(generation={"max_new_tokens": 0}), "error", "at least 1"),
    Case("task name '..'", _spec(task=".."), "error", "not a valid task name"),
    Case("task name with a space", _spec(task="rt x"), "error", "not a valid task name"),
    Case("task name with a slash", _spec(task="rt/x"), "error", "not a valid task name"),
    Case("include that is not UTF-8", _include(b"version: caf\xe9\n"), "error", "not UTF-8"),
    Case("include that does not exist", _include(None), "error", "include"),
    Case("candidates file missing", _candidates(None), "error", "candidates.path"),
    Case("candidates file not JSON", _candidates(b"[1, 2,"), "error", "not valid JSON"),
    Case("candidates JSON of numbers", _candidates(b"[1, 2]"), "error", "list of strings"),
    Case("candidates file empty", _candidates(b"\n\n", ".txt"), "error", "no answers"),
    Case("dataset file missing", _spec(dataset={"path": "nope.csv"}), "error", "does not exist"),
    Case("duplicate CSV header", _csv_text(HEADER.replace("difficulty", "answer") + "a,IMG,Q?,red,blue\n"), "error", "appears more than once"),
    Case("empty CSV file", _csv_text(""), "error", "empty"),
    # -- rows and images: skipped and counted, the other samples evaluated
    Case("missing image", _damage(lambda p, root: p.unlink()), "skip", {"missing_image": 1}),
    Case("zero-byte image", _damage(lambda p, root: p.write_bytes(b"")), "skip", {"empty_image": 1}),
    Case("truncated image", _damage(lambda p, root: p.write_bytes(p.read_bytes()[:100])), "skip", {"corrupt_image": 1}),
    Case("random bytes named .jpg", _damage(lambda p, root: p.write_bytes(os.urandom(3000))), "skip", {"corrupt_image": 1}),
    Case("FIFO named .jpg", _fifo, "skip", {"not_a_file": 1}),
    Case("folder named .jpg", _folder_as_image, "skip", {"missing_image": 1}),
    Case("300 MB file named .jpg", _huge_file, "skip", {"image_too_large": 1}),
    Case("symlink loop", _symlink_loop, "skip", {"bad_image_path": 1}),
    Case("image path with ..", _edit(0, path="../x.jpg"), "skip", {"image_outside_root": 1}),
    Case("absolute image path", _edit(0, path="/etc/passwd"), "skip", {"image_outside_root": 1}),
    Case("NUL byte in an image path", _jsonl(json.dumps({"image_id": "n", "path": "a\u0000b.jpg", "question": "Q?", "answer": "a", "difficulty": 0})), "skip", {"bad_image_path": 1}),
    Case("difficulty 1e300", _edit(0, difficulty="1e300"), "skip", {"bad_difficulty": 1}),
    Case("difficulty -1", _edit(0, difficulty=-1), "skip", {"bad_difficulty": 1}),
    Case("difficulty inf", _edit(0, difficulty="inf"), "skip", {"bad_difficulty": 1}),
    Case("difficulty 'hard'", _edit(0, difficulty="hard"), "skip", {"bad_difficulty": 1}),
    Case("empty question", _edit(0, question=""), "skip", {"empty_question": 1}),
    Case("empty answer", _edit(0, answer=""), "skip", {"empty_reference": 1}),
    Case("deeply nested JSONL row", _jsonl("[" * 100_000 + "]" * 100_000), "skip", {"malformed_row": 1}),
    Case("JSONL row that is a list", _jsonl("[1, 2]"), "skip", {"malformed_row": 1}),
    Case("CSV row with too few fields", _csv_text(HEADER + "a,IMG,Q?,red,0\nb,IMG,Q?\n"), "skip", {"malformed_row": 1}),
    Case("CSV line that is not UTF-8", lambda f, im: _run_args(_task(f, im, csv_bytes=(HEADER + "a,IMG,Q?,red,0\n").replace("IMG", _first(im)).encode() + b"b,x.jpg,Caf\xe9?,red,0\n"), f), "skip", {"bad_encoding": 1}),
    Case("UTF-16 CSV (read as such)", _csv_text(HEADER + "a,IMG,Q?,red,0\n", "utf-16"), "skip", {}),
]  # fmt: skip


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shared-images")
    make_images(root, N_IMAGES)
    return root


def _check(case: Case, folder: Path, images: Path) -> str | None:
    """None when the case behaved; else what went wrong."""
    args = case.build(folder, images)
    res = invoke_cli(["run", *args])
    out = f"exit {res.returncode}; stderr: {res.stderr.strip()[-600:]}"
    if "Traceback" in res.stderr or "Traceback" in res.stdout:
        return f"traceback: {out}"
    if case.expect == "error":
        errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
        if res.returncode != 2 or len(errors) != 1 or case.detail not in errors[0]:
            return f"expected one 'Error: ...{case.detail}...' and exit 2: {out}"
        return None
    if res.returncode != 0:
        return f"expected exit 0: {out}"
    results = [json.loads(p.read_text()) for p in (folder / "runs").rglob("results.json")]
    if len(results) != 1:
        return f"expected one results.json, found {len(results)}: {out}"
    skipped = results[0]["skipped_samples"]
    if skipped != case.detail:
        return f"expected skipped_samples {case.detail}, got {skipped}: {out}"
    if results[0]["task"]["n_scored"] < 1:
        return "no sample was evaluated"
    return None


@pytest.mark.slow(seconds=80)
def test_bad_inputs_give_one_error_line_or_a_counted_skip(tmp_path, images, reliability):
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)
    # In this process, one case after another: the subject is the run's checks and skips (the same group
    # and exit codes as the console script); eighty process starts would cost a minute of the suite.
    outcomes = {c.name: _check(c, tmp_path / f"case{i}", images) for i, c in enumerate(CASES)}
    failures = {name: outcome for name, outcome in outcomes.items() if outcome is not None}
    assert failures == {}, "\n".join(f"{k}: {v}" for k, v in failures.items())
    errors = sum(c.expect == "error" for c in CASES)
    reliability.record(
        "Bad inputs through the command line",
        "locations, options and task files (see tests/test_bad_inputs_cli.py)",
        errors,
        "one Error line, exit 2, before any model work; no traceback",
    )
    reliability.record(
        "Bad inputs through the command line",
        "bad rows and images among good ones (see tests/test_bad_inputs_cli.py)",
        len(CASES) - errors,
        "skipped and counted under a reason, the rest evaluated, exit 0; no traceback",
    )


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["--no-cache", "cache"])
def test_a_full_disk_is_one_error_line(tmp_path, images, reliability, cache):
    """A file-size limit makes every write past it fail as a full disk would."""
    import resource
    import subprocess
    import sys

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    task = _task(tmp_path / "t", images)
    option = cache if cache == "--no-cache" else f"--cache={tmp_path / 'c.sqlite'}"
    res = subprocess.run(
        [sys.executable, "-m", "vlmbench", "run", "-m", "prior", "-t", str(task), "-o", str(tmp_path / "out"), "-q", option],
        capture_output=True, text=True, timeout=120, preexec_fn=limit_file_size,
    )  # fmt: skip
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert res.returncode == 2 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "File too large" in errors[0] or "disk I/O error" in errors[0]
    reliability.record(
        "Bad inputs through the command line",
        f"disk full (file-size limit) while writing {'artifacts' if cache == '--no-cache' else 'the cache'}",
        1,
        "one Error line naming the file, exit 2; no partial artifact",
    )
