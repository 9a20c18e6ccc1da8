"""Options checked before any model work, through the command line in this process: bad generation
settings, dtypes, keys given twice, run-file entries that must stay structured, a task without an
image root, bootstrap and seed bounds of ``score`` and ``compare``, and the study's LoRA step.

"Before any model work" is observed, not timed: the runs use ``tripwire``, a model that records every
load, fit and generate call; a case passes only when the command stopped with one ``Error:`` line and
exit status 2 and the model was never touched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from vlmbench.cli import cli
from vlmbench.evaluation.run_spec import load_run_file
from vlmbench.plugin.args import Arg
from vlmbench.plugin.hookspecs import hookimpl
from vlmbench.plugin.loading import load_plugins
from vlmbench.plugin.model import Model

from vlmbench_testing import colour_rows, make_images, write_task

GROUP = "Options checked before any model work"


class Tripwire(Model):
    """Records every call that would be model work; answers the question's last word."""

    args = {"k": Arg(int, 1, "a number"), "note": Arg(str, "", "free text")}
    calls: list[str] = []

    def load(self):
        Tripwire.calls.append("load")

    def fit(self, examples):
        Tripwire.calls.append("fit")

    def generate(self, batch, generation):
        Tripwire.calls.append("generate")
        return [r.question.split()[-1] for r in batch.requests]


class _Plugin:
    @hookimpl
    def register_models(self, register):
        register("tripwire", f"{__name__}:Tripwire", summary="test")


@pytest.fixture(scope="module")
def plugins():
    plugins = load_plugins(extra=[_Plugin()])
    plugins.call_each("register_commands", cli=cli)  # `study` comes from a plugin
    yield plugins
    load_plugins(reload=True)


@pytest.fixture
def task(tmp_path: Path) -> Path:
    """A task with a train split (the study's LoRA step needs one) and a val split."""
    images = make_images(tmp_path / "task" / "images", 4)
    rows = [{**row, "split": ("train", "val", "test")[i % 3]} for i, row in enumerate(colour_rows(images))]
    return write_task(tmp_path / "task", rows, {"split": "test", "train_split": "train",
                                                 "dataset": {"path": "data.csv", "image_root": "images",
                                                             "columns": {"split": "split"}}})  # fmt: skip


def _error(args: list[str], detail: str) -> str | None:
    """None when ``vlmbench ARGS`` printed one Error line holding ``detail``, exited 2 and never touched the
    model; else what happened."""
    Tripwire.calls.clear()
    res = CliRunner().invoke(cli, args)
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return f"exception {res.exception!r}"
    if res.exit_code != 2 or len(errors) != 1 or detail not in errors[0]:
        return f"exit {res.exit_code}, stderr {res.stderr[-500:]!r}"
    if Tripwire.calls:
        return f"the model was used first: {Tripwire.calls}"
    return None


def _run(task: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "-m", "tripwire", "-t", str(task), "-o", str(out), "--no-cache", "-q", *extra]


RUN_CASES = {
    "--gen-kwargs temperature=nan": (["--gen-kwargs", "temperature=nan"], "temperature must be a finite number"),
    "--gen-kwargs temperature=inf": (["--gen-kwargs", "temperature=inf"], "temperature must be a finite number"),
    "--gen-kwargs do_sample=true,temperature=0": (["--gen-kwargs", "do_sample=true,temperature=0"], "positive when do_sample"),
    "--gen-kwargs top_p=5": (["--gen-kwargs", "top_p=5"], "top_p must be above 0 and at most 1"),
    "--gen-kwargs repetition_penalty=-1": (["--gen-kwargs", "repetition_penalty=-1"], "repetition_penalty must be positive"),
    "--gen-kwargs max_new_tokens=10**9": (["--gen-kwargs", "max_new_tokens=1000000000"], "at most 8192"),
    "--gen-kwargs max_new_tokens=5,max_new_tokens=6": (["--gen-kwargs", "max_new_tokens=5,max_new_tokens=6"], "'max_new_tokens' is given twice"),
    "-a k=3 -a k=4": (["-a", "k=3", "-a", "k=4"], "'k' is given twice"),
    "-a k=3 before the model, -a k=4 after it": (["-a", "k=4", "-m", "prior"], "'k' is given twice"),
    "--dtype garbage": (["--dtype", "garbage"], "unknown dtype 'garbage'"),
    "--seed -1": (["--seed", "-1"], "--seed"),
}  # fmt: skip


def test_run_options_fail_before_the_model_loads(plugins, task, tmp_path, reliability):
    failures = {}
    for name, (extra, detail) in RUN_CASES.items():
        args = _run(task, tmp_path / "out", *extra)
        if name.startswith("-a k=3 before"):
            args = ["run", "-a", "k=3", "-m", "tripwire", *extra, "-t", str(task), "-o", str(tmp_path), "-q"]
        failures[name] = _error(args, detail)
    # `prior` needs no weights, yet a dtype no model could use is refused for it too.
    failures["--dtype garbage with prior"] = _error(
        ["run", "-m", "prior", "-t", str(task), "--dtype", "garbage", "--no-cache"], "unknown dtype"
    )
    # A task whose rows name image files but no image_root: every sample would be skipped after loading.
    spec = yaml.safe_load(task.read_text())
    del spec["dataset"]["image_root"]
    no_root = task.with_name("noroot.yaml")
    no_root.write_text(yaml.safe_dump({**spec, "task": "noroot"}))
    failures["task without dataset.image_root"] = _error(
        _run(no_root, tmp_path / "out"), "no dataset.image_root"
    )
    assert {k: v for k, v in failures.items() if v} == {}
    assert not (tmp_path / "out").exists()  # nothing written either
    reliability.record_each(
        GROUP, failures, "one Error line, exit 2; the model never loaded, nothing written", prefix="run "
    )


def _run_file(folder: Path, task: Path, models: list, options: dict | None = None) -> Path:
    path = folder / "runs.yaml"
    path.write_text(yaml.safe_dump({"models": models, "tasks": [str(task)], "options": options or {}}))
    return path


def test_run_file_entries_stay_structured(plugins, task, tmp_path, reliability):
    """A run file's gen_kwargs and model args are mappings: a key holding ``=`` and ``,`` is one unknown
    key (it used to be split into two settings), and a value holding a comma reaches the model whole."""
    split_key = _run_file(tmp_path, task, ["tripwire"], {"gen_kwargs": {"max_new_tokens=5,num_beams": 3}})
    assert _error(["run", "--config", str(split_key), "--no-cache", "-q"], "unknown key") is None
    arg_key = _run_file(tmp_path, task, [{"name": "tripwire", "args": {"k=3,note": "x"}}])
    assert _error(["run", "--config", str(arg_key), "--no-cache", "-q"], "'k=3,note'") is None
    twice = _run_file(tmp_path, task, [{"name": "tripwire", "args": {"k": 3}}])
    twice.write_text(twice.read_text().replace("k: 3", "k: 3\n    k: 4"))  # YAML keeps the last: refused
    assert _error(["run", "--config", str(twice), "--no-cache", "-q"], "'k' appears twice") is None

    commas = _run_file(
        tmp_path,
        task,
        [{"name": "tripwire", "args": {"note": "a,b=c"}}],
        {"gen_kwargs": {"max_new_tokens": 3}},
    )
    (choice,) = load_run_file(commas).model_choices()
    assert plugins.create_model(choice.name, choice.args).arg_values["note"] == "a,b=c"
    res = CliRunner().invoke(
        cli, ["run", "--config", str(commas), "--no-cache", "-q", "-o", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.stderr
    (results,) = (tmp_path / "o").rglob("results.json")
    data = yaml.safe_load(results.read_text())
    assert data["model"]["args"]["note"] == "a,b=c" and data["config"]["generation"]["max_new_tokens"] == 3
    reliability.record_each(
        GROUP,
        ["run-file gen_kwargs key holding '=' and ','", "run-file model argument key holding '=' and ','",
         "run-file model argument given twice (YAML duplicate key)"],
        "one Error line, exit 2, before any model work (never split into other settings)",
    )  # fmt: skip
    reliability.record(
        GROUP, "run-file model argument value holding ',' and '='", 1, "reaches the model whole"
    )


@pytest.mark.parametrize("command", ["score", "compare"])
def test_bootstrap_samples_and_seed_are_bounded(plugins, tmp_path, command, reliability):
    """Checked before any file is read: the paths only need to exist."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths = [str(tmp_path / "a")] if command == "score" else [str(tmp_path / "a"), str(tmp_path / "b")]
    cases = {
        "--bootstrap-samples 1000000000": (["--bootstrap-samples", "1000000000"], "--bootstrap-samples"),
        "--bootstrap-samples -5": (["--bootstrap-samples", "-5"], "--bootstrap-samples"),
        "--seed -1": (["--seed", "-1"], "--seed"),
        "--seed 2**40": (["--seed", str(2**40)], "--seed"),
    }
    failures = {name: _error([command, *paths, *extra], detail) for name, (extra, detail) in cases.items()}
    assert {k: v for k, v in failures.items() if v} == {}
    reliability.record_each(
        GROUP, cases, "one Error line, exit 2, before any run is read", prefix=f"{command} "
    )


def test_study_lora_step_is_checked_before_the_model_table(plugins, task, tmp_path, reliability):
    """The study's LoRA step (train split, base model) and 8-bit step are checked when the study is
    planned: the model table (here one tripwire model) never starts."""
    no_train = yaml.safe_load(task.read_text())
    no_train.pop("train_split")
    plain = task.with_name("plain.yaml")
    plain.write_text(yaml.safe_dump({**no_train, "task": "plain"}))
    run_file = _run_file(tmp_path, task, ["tripwire"])
    base = ["study", "-c", str(run_file), "-o", str(tmp_path / "study"), "--no-cache", "-q"]
    failures = {
        "study -t TASK without a train split": _error([*base, "-t", str(plain)], "names no train split"),
        "study --lora-base prior": _error([*base, "--lora-base", "prior"], "needs a BLIP VQA model plugin"),
        "study --no-lora --lora-base prior (8-bit step)": _error(
            [*base, "--no-lora", "--lora-base", "prior"], "cannot be loaded in 8 bits"
        ),
        "study --dtype garbage": _error([*base, "--dtype", "garbage"], "unknown dtype"),
        "study -a tripwire:k=3 -a tripwire:k=4": _error([*base, "-a", "tripwire:k=3", "-a", "tripwire:k=4"], "given twice"),
    }  # fmt: skip
    assert {k: v for k, v in failures.items() if v} == {}
    assert not (tmp_path / "study").exists()
    reliability.record_each(GROUP, failures, "one Error line, exit 2; the model table never started")
