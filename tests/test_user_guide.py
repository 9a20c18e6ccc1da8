"""The user guide's examples run as written: every command of docs/user_guide.md, against tiny checkpoints.

The fenced blocks are read from the guide itself, so editing the guide changes what runs. Each ```bash line
goes through ``bash -c`` in one temporary folder, in the guide's order (later lines read what earlier ones
wrote), so globs, quoting and loops behave as in a user's shell; ``vlmbench``, ``torchrun``,
``accelerate`` and ``python`` on PATH are this interpreter's. The ```yaml block is the run file that
``vlmbench run --config FILE`` runs, the ```python block a script of its own.

What differs from a user's machine is listed in one place: the text :data:`SUBSTITUTIONS` replace, the
lines :data:`SKIPPED` leaves out (with the reason), and the inputs the guide presumes. A line that is
neither run nor skipped fails the test, as does an entry of those tables that no longer matches the guide.
Nothing is downloaded: a model's default Hub checkpoint is a tiny one placed in a temporary Hugging Face
cache, and metrics whose encoders are absent offline (BERTScore, BARTScore) are reported as skipped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from vlmbench_testing import REPO, SAMPLE_TASK

GUIDE = REPO / "docs" / "user_guide.md"

# (text in the guide, what the test runs instead, why): the only changes made to the guide's lines.
# ``{models}`` is the folder of local checkpoints the test writes.
SUBSTITUTIONS: tuple[tuple[str, str, str], ...] = (
    ("--device cuda", "--device cpu", "the tests have no GPU"),
    ("/models/blip-vqa-base", "{models}/blip-vqa-base", "a local checkpoint: a tiny BLIP saved there"),
    ("--nproc_per_node 4", "--nproc_per_node 2", "two CPU processes over gloo instead of four GPUs"),
    ("--num_processes 4", "--num_processes 2", "two CPU processes over gloo instead of four GPUs"),
)

# Guide lines that are not run, each with the reason.
SKIPPED: dict[str, str] = {
    "make setup": "builds .venv; the tests run in an environment that is already installed",
    ". .venv/bin/activate": "activates .venv; the test puts this interpreter's commands on PATH instead",
}

# Programs a guide line may call to be run; any other program must be in SKIPPED.
PROGRAMS = frozenset({"vlmbench", "torchrun", "accelerate"})
_SHELL_CONTROL = frozenset({"for", "while", "if", "done", "fi", "else"})  # words that start no program
_SHELL_LEAD = frozenset({"do", "then"})  # words that precede a program

# The prose of the run-file section says how the ```yaml block is run.
CONFIG_COMMAND = "vlmbench run --config FILE"

# The commit the tiny checkpoints have in the temporary Hub cache; every run of a default checkpoint
# must record it (proof that the tiny model, not some other copy, answered).
TINY_COMMIT = "0123456789abcdef0123456789abcdef01234567"

# Inputs the guide presumes a user has: `vlmbench data download abo` (prose) fetched the ABO tree, and
# `preds.csv` is "an external file" of the user's.
PREDICTIONS_FILE = "preds.csv"


@dataclass(frozen=True)
class Step:
    """One thing to run: the guide's text, what is run (after substitutions), and how."""

    guide: str  # the line (or block) as the guide has it, comments stripped
    command: str  # the bash command line run
    kind: str  # "bash", "config" or "python"


@dataclass
class Plan:
    steps: list[Step]
    skipped: list[tuple[str, str]]  # (line, reason)
    unknown: list[str]  # lines neither run nor skipped
    unused: list[str]  # table entries that match nothing in the guide


# -- reading the guide ------------------------------------------------------------------------------


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block, in order."""
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def command_lines(body: str) -> list[str]:
    """The command lines of a shell block: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n", " ", body)
    lines = []
    for line in joined.splitlines():
        # A `#` starting a word begins a comment (none of the guide's commands quotes one).
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            lines.append(line)
    return lines


def programs(line: str) -> list[str]:
    """The programs a shell line calls: the first word of each simple command."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    found, segment = [], []
    for token in [*lexer, ";"]:
        if token and set(token) <= set(";&|"):
            while segment and segment[0] in _SHELL_LEAD:
                segment.pop(0)
            if segment and segment[0] not in _SHELL_CONTROL:
                found.append(segment[0])
            segment = []
        else:
            segment.append(token)
    return found


def substitute(line: str, used: set[str], models: str) -> str:
    for old, new, _why in SUBSTITUTIONS:
        if old in line:
            line = line.replace(old, new.format(models=models))
            used.add(old)
    return line


def plan(text: str, models: str = "{models}") -> Plan:
    """Every step of the guide ``text``, with what is skipped, unknown, or stale in the tables."""
    steps: list[Step] = []
    skipped: list[tuple[str, str]] = []
    unknown: list[str] = []
    used: set[str] = set()
    for language, body in fenced_blocks(text):
        if language == "bash":
            for line in command_lines(body):
                if line in SKIPPED:
                    skipped.append((line, SKIPPED[line]))
                    used.add(line)
                elif programs(line) and set(programs(line)) <= PROGRAMS:
                    steps.append(Step(line, substitute(line, used, models), "bash"))
                else:
                    unknown.append(line)
        elif language == "yaml" and CONFIG_COMMAND in text:
            steps.append(Step(body, CONFIG_COMMAND.replace("FILE", "study.yaml"), "config"))
        elif language == "python":
            steps.append(Step(body, "python example.py", "python"))
        else:
            unknown.append(f"a ```{language} block: {body.splitlines()[0] if body else ''}")
    tables = [old for old, _new, _why in SUBSTITUTIONS] + list(SKIPPED)
    return Plan(steps, skipped, unknown, [entry for entry in tables if entry not in used])


# -- the tests of the reading -----------------------------------------------------------------------


def test_every_guide_line_is_run_or_skipped_with_a_reason():
    result = plan(GUIDE.read_text(encoding="utf-8"))
    assert result.unknown == [], "lines neither run nor in SKIPPED (add one with its reason)"
    assert result.unused == [], "SUBSTITUTIONS or SKIPPED entries that match nothing in the guide"
    kinds = [s.kind for s in result.steps]
    assert kinds.count("config") == 1 and kinds.count("python") == 1
    assert sum(k == "bash" for k in kinds) > 2 * len(result.skipped)  # running is the rule


def test_a_new_unknown_line_or_a_stale_table_entry_fails_the_check():
    text = "```bash\nvlmbench list   # fine\npip install something\n```\n```toml\nx = 1\n```\n"
    result = plan(text)
    assert [s.command for s in result.steps] == ["vlmbench list"]
    assert result.unknown == ["pip install something", "a ```toml block: x = 1"]
    assert "make setup" in result.unused and "--device cuda" in result.unused


def test_shell_lines_are_read_like_a_shell():
    assert command_lines("vlmbench run \\\n  -m prior  # the baseline\n\n# a comment\n") == [
        "vlmbench run    -m prior"
    ]
    assert programs('for r in runs/*/; do vlmbench score "$r"; done') == ["vlmbench"]
    assert programs("vlmbench list && rm -rf x | tee y") == ["vlmbench", "rm", "tee"]
    assert programs(". .venv/bin/activate") == ["."]


# -- running it -------------------------------------------------------------------------------------


def _shims(folder: Path) -> Path:
    """``vlmbench``, ``torchrun``, ``accelerate`` and ``python`` that run this interpreter."""
    folder.mkdir()
    targets = {
        "vlmbench": "-m vlmbench",
        "torchrun": "-m torch.distributed.run",
        "accelerate": "-m accelerate.commands.accelerate_cli",
        "python": "",
    }
    for name, module in targets.items():
        path = folder / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" {module} "$@"\n', encoding="utf-8")
        path.chmod(0o755)
    return folder


def _hub_cache(hub: Path, steps: list[Step], tiny_checkpoint) -> None:
    """The default checkpoint of every model the guide runs, as a tiny one in a Hugging Face hub cache
    (``models--OWNER--NAME/refs/main`` naming a commit, ``snapshots/COMMIT/`` holding the files)."""
    import tiny_models

    from vlmbench.api import load_plugins

    registry = load_plugins().models
    commands = " ".join(step.command for step in steps)
    for name in sorted(set(re.findall(r"(?:-m|--model)\s+([\w.-]+)", commands)) - {"vlmbench"}):
        default = registry.get(name).default_checkpoint
        if name not in tiny_models.BUILDERS or not default or "/" not in default:
            continue  # no weights (prior), or not a Hub checkpoint
        repo = hub / ("models--" + default.replace("/", "--"))
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(TINY_COMMIT, encoding="utf-8")
        shutil.copytree(tiny_checkpoint(name), repo / "snapshots" / TINY_COMMIT)


def _abo_tree(data_dir: Path, env: dict[str, str]) -> None:
    """A tiny ABO download where `vlmbench data download abo` puts it, prepared as the guide says."""
    from data.abo_testkit import derived_records, write_tree

    write_tree(data_dir / "abo", derived_records(40))
    prepared = subprocess.run(
        [sys.executable, "-m", "vlmbench", "data", "prepare", "abo_single_word", "-q"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr


def _predictions_file(path: Path) -> None:
    """An external predictions file: the sample's questions, references and made-up answers."""
    import csv

    with open(SAMPLE_TASK / "abo_sample.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["question", "answer", "generated_answer"])
        for i, row in enumerate(rows):
            writer.writerow([row["question"], row["answer"], row["answer"] if i % 3 else "red"])


@pytest.fixture
def guide_home(tmp_path: Path, tiny_checkpoint) -> tuple[Path, dict[str, str]]:
    """The folder the guide's commands run in, and their environment: offline, every cache temporary."""
    steps = plan(GUIDE.read_text(encoding="utf-8")).steps
    env = {
        **os.environ,
        "PATH": f"{_shims(tmp_path / 'bin')}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
        "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLMBENCH_OFFLINE": "1",
        "VLMBENCH_CACHE_DIR": str(tmp_path / "vlmbench-cache"),
        "VLMBENCH_DATA_DIR": str(tmp_path / "data"),
        "MPLCONFIGDIR": str(tmp_path / "matplotlib"),
        # The CPU stands in for the guide's GPUs everywhere, also on a machine that has one (two ranks
        # with `--device auto` would otherwise want two).
        "CUDA_VISIBLE_DEVICES": "",
    }
    _hub_cache(tmp_path / "hf" / "hub", steps, tiny_checkpoint)
    shutil.copytree(tiny_checkpoint("blip"), tmp_path / "models" / "blip-vqa-base")
    _abo_tree(tmp_path / "data", env)
    work = tmp_path / "work"
    work.mkdir()
    _predictions_file(work / PREDICTIONS_FILE)
    return work, env


def _subcommand(command: str) -> str:
    """The vlmbench command a line runs (``run``, ``score``...), or ``python`` for the script."""
    words = shlex.split(command)
    return words[words.index("vlmbench") + 1] if "vlmbench" in words else words[0]


def _expected_models(step: Step) -> int:
    """How many runs a run step reports: one per model (a launcher's own ``-m vlmbench`` is no model)."""
    if step.kind == "config":
        import yaml

        return len(yaml.safe_load(step.guide)["models"])
    return len(re.findall(r"(?:^|\s)(?:-m|--model) (?!vlmbench\b)", step.command))


def _check_run_folders(step: Step, err: str, work: Path) -> list[str]:
    """Every folder a run reports holds its artifacts, scored; default Hub checkpoints are the tiny ones."""
    problems = []
    folders = re.findall(r" -> (\S+)$", err, re.MULTILINE)
    if len(folders) != _expected_models(step):
        problems.append(f"{len(folders)} run folders reported, expected {_expected_models(step)}")
    for folder in folders:
        if not (work / folder / "predictions.jsonl").is_file():
            problems.append(f"{folder}: no predictions.jsonl")
            continue
        results = json.loads((work / folder / "results.json").read_text(encoding="utf-8"))
        model = results["model"]
        if results["task"]["n_scored"] < 1:
            problems.append(f"{folder}: no sample scored")
        default = model.get("checkpoint") and model["checkpoint"] == model.get("default_checkpoint")
        if default and model.get("commit") != TINY_COMMIT:
            problems.append(
                f"{folder}: answered by {model['checkpoint']} at {model.get('commit')}, not the tiny one"
            )
    return problems


def _check_output(step: Step, out: str, err: str, work: Path) -> list[str]:
    """What each kind of command must show or write, besides its exit status."""
    sub = _subcommand(step.command)
    table = "| task | model |" in out
    if sub == "run":
        return ([] if table else ["no leaderboard table"]) + _check_run_folders(step, err, work)
    if sub == "leaderboard":
        csv_out = "--format csv" in step.command
        ok = out.startswith("task,model,") if csv_out else table
        written = "--no-write" in step.command or "wrote " in err
        return [] if ok and written else ["no leaderboard printed, or its files not written"]
    if sub == "score":
        return [] if table and "wrote " in err else ["no leaderboard row, or no folder written"]
    if sub == "compare":
        ok = "wrote " in err if " -o " in step.command else out.startswith("# Comparison")
        return [] if ok else ["no comparison report"]
    if sub == "plot":
        return [] if "report: " in out else ["no report.html"]
    if sub == "view":
        # only the static export can run here: the page itself serves until it is stopped
        ok = "--export" in step.command and "wrote " in out
        return [] if ok else ["no static copy written (a guide line of `view` must use --export)"]
    if sub == "python":
        status, _, run_dir = out.partition("\n")[0].partition(" ")
        ok = status == "ok" and (work / run_dir / "results.json").is_file()
        return [] if ok else ["the script did not print an evaluated run and its folder"]
    return [] if out.strip() else ["nothing printed"]


def check(step: Step, result: subprocess.CompletedProcess, work: Path) -> list[str]:
    """What is wrong with a step's outcome (empty when nothing is)."""
    out, err = result.stdout, result.stderr
    # A regression gate documents exit status 3 (its report is printed first, the failed gate on stderr).
    allowed = {0, 3} if "--fail-on-regression" in step.command else {0}
    problems = [] if result.returncode in allowed else [f"exit status {result.returncode}"]
    if result.returncode == 3 and "regression: " not in err:
        problems.append("exit status 3 without a regression line")
    if "Traceback (most recent call last)" in out + err:
        problems.append("a traceback")
    for path in re.findall(r"(?:-> |wrote |^report: )(\S+)", out + err, re.MULTILINE):
        if not (work / path).exists():
            problems.append(f"{path} is reported but does not exist")
    return problems + (_check_output(step, out, err, work) if not problems else [])


def test_a_failed_silent_or_broken_step_is_reported(tmp_path: Path):
    def done(status: int, out: str = "", err: str = "") -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess([], status, out, err)

    score = Step("vlmbench score runs/x/", "vlmbench score runs/x/", "bash")
    assert check(score, done(2, err="Error: Got unexpected extra argument"), tmp_path) == ["exit status 2"]
    assert check(score, done(0, "| task | model |", "wrote runs/x\n"), tmp_path) == [
        "runs/x is reported but does not exist"
    ]
    crash = done(0, "| task | model |", "Traceback (most recent call last):\n")
    assert check(score, crash, tmp_path) == ["a traceback"]
    (tmp_path / "runs" / "x").mkdir(parents=True)
    assert check(score, done(0, "", "wrote runs/x\n"), tmp_path) == [
        "no leaderboard row, or no folder written"
    ]
    assert check(score, done(0, "| task | model |", "wrote runs/x\n"), tmp_path) == []
    gate = Step("g", "vlmbench compare a b --fail-on-regression exact_match:0.01", "bash")
    assert check(gate, done(3, "# Comparison"), tmp_path) == ["exit status 3 without a regression line"]
    assert check(gate, done(3, "# Comparison", "regression: exact_match fell"), tmp_path) == []


def _without_progress(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "it/s]" not in line and "sample/s]" not in line)


def _metrics_summary(work: Path) -> tuple[set[str], dict[str, str]]:
    """The metrics the guide's runs computed, and those skipped with their reasons."""
    ran: set[str] = set()
    skipped: dict[str, str] = {}
    for path in work.rglob("results.json"):
        results = json.loads(path.read_text(encoding="utf-8"))
        ran |= set(results.get("metrics", {}))
        skipped |= results.get("skipped_metrics", {})
    return ran, skipped


@pytest.mark.slow(seconds=200)
def test_the_guide_runs_as_written(guide_home: tuple[Path, dict[str, str]]):
    work, env = guide_home
    steps = plan(GUIDE.read_text(encoding="utf-8"), models=str(work.parent / "models")).steps
    timings = []
    for step in steps:
        if step.kind == "config":
            (work / "study.yaml").write_text(step.guide, encoding="utf-8")
        elif step.kind == "python":
            (work / "example.py").write_text(step.guide, encoding="utf-8")
        start = time.monotonic()
        # -e: a failing command inside a loop fails the line, not only the loop's last one.
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", step.command],
            cwd=work, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        timings.append(f"{time.monotonic() - start:6.1f}s  {step.command}")
        problems = check(step, result, work)
        if problems:
            pytest.fail(
                f"guide: {step.guide}\nran: {step.command}\nproblems: {'; '.join(problems)}\n"
                f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{_without_progress(result.stderr)[-3000:]}"
            )
    print("\n".join(timings))
    ran, skipped = _metrics_summary(work)
    print(f"metrics computed: {', '.join(sorted(ran))}; skipped: {', '.join(sorted(skipped)) or 'none'}")
    # Offline, only metrics whose encoders are absent may be skipped; the others ran.
    assert {"exact_match", "average_mark", "meteor", "sbert"} <= ran
    for metric, reason in skipped.items():
        assert "not available" in reason, (metric, reason)
