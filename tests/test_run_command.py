"""`vlmbench run` as users type it: several instances of one model, limits, reruns, exit codes, the
spellings of the ecosystem, run files, listings and quiet output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from vlmbench_testing import colour_rows, invoke_cli, make_images, run_cli, write_task


def _results(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("results.json"))]


def _run(*args: str, cwd: Path | None = None):
    """``vlmbench run ARGS`` in this process: these tests are about what the command does with its
    options (the same group, checks and exit codes as the console script); the tests of what a user's
    terminal shows start a real process (``run_cli``)."""
    if cwd is None:
        return invoke_cli(["run", *args])
    return run_cli(["run", *args], cwd=cwd)


@pytest.mark.slow
def test_each_model_args_binds_to_the_model_before_it(tiny_task, tmp_path):
    res = _run("-m", "prior", "-a", "k=3", "-m", "prior", "-a", "k=7", "-t", str(tiny_task),
               "-o", str(tmp_path / "r"), "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    results = _results(tmp_path / "r")
    assert sorted(r["model"]["args"]["k"] for r in results) == [3, 7]
    assert sorted(r["model"]["label"] for r in results) == ["prior[k=3]", "prior[k=7]"]
    assert "| tiny | prior[k=3] |" in res.stdout and "| tiny | prior[k=7] |" in res.stdout
    # lm-eval's spelling and an argument before any --model (it applies to every model)
    res = _run("--model_args", "exclude_same_image=false", "--model", "prior", "--model_args", "k=2",
               "--tasks", str(tiny_task), "--output_path", str(tmp_path / "lm"), "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    (only,) = _results(tmp_path / "lm")
    assert only["model"]["args"] == {"k": 2, "exclude_same_image": False}
    # an unambiguous MODEL: prefix still works; an ambiguous one and a repeated instance are errors
    ok = _run("-m", "prior", "-a", "prior:k=4", "-t", str(tiny_task), "-o", str(tmp_path / "p"), "-q")
    assert ok.returncode == 0 and _results(tmp_path / "p")[0]["model"]["args"]["k"] == 4
    for args, message in (
        (["-m", "prior", "-m", "prior", "-a", "prior:k=4"], "ambiguous"),
        (["-m", "prior", "-a", "k=4", "-m", "prior", "-a", "k=4"], "given twice"),
    ):
        bad = _run(*args, "-t", str(tiny_task), "-o", str(tmp_path / "x"))
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_two_checkpoints_of_one_model(tiny_checkpoint, tiny_task, tmp_path):
    first = tiny_checkpoint("blip")
    second = shutil.copytree(first, tmp_path / "blip-finetuned")
    res = _run("-m", "blip", "-a", f"pretrained={first}", "-m", "blip", "-a", f"pretrained={second}",
               "-t", str(tiny_task), "-o", str(tmp_path / "r"), "-q", "--limit", "4", "--metrics", "exact_match")  # fmt: skip
    assert res.returncode == 0, res.stderr
    results = _results(tmp_path / "r")
    assert {r["model"]["checkpoint"] for r in results} == {str(first.resolve()), str(second.resolve())}
    assert {r["model"]["label"] for r in results} == {f"blip[{first.name}]", "blip[blip-finetuned]"}


@pytest.mark.slow
def test_a_limited_run_never_replaces_a_full_one(tiny_task, tmp_path):
    out = tmp_path / "r"
    assert _run("-m", "prior", "-t", str(tiny_task), "-o", str(out), "-q").returncode == 0
    res = _run("-m", "prior", "-t", str(tiny_task), "-o", str(out), "-q", "--limit", "5")
    assert res.returncode == 0, res.stderr
    by_n = {r["task"]["n_samples"]: r for r in _results(out)}
    assert set(by_n) == {24, 5}  # two folders: the full result is still there
    assert by_n[5]["config"]["limit"] == 5 and "limited to 5 of 24 samples" in by_n[5]["notes"][0]
    board = run_cli(["leaderboard", str(out)])
    assert "limited to 5 of 24 samples (--limit 5)" in board.stdout
    fraction = _run("-m", "prior", "-t", str(tiny_task), "-o", str(out), "-q", "--limit", "0.25")
    assert fraction.returncode == 0 and 6 in {r["task"]["n_samples"] for r in _results(out)}
    # the task's data shrinks: its run folder holds more samples of other data, so it is refused
    csv = tiny_task.parent / "data.csv"
    csv.write_text("\n".join(csv.read_text().splitlines()[:11]) + "\n")
    refused = _run("-m", "prior", "-t", str(tiny_task), "-o", str(out), "-q")
    assert refused.returncode == 2 and "holds the result of 24 samples" in refused.stderr
    assert _run("-m", "prior", "-t", str(tiny_task), "-o", str(out), "-q", "--replace").returncode == 0


@pytest.mark.slow
def test_a_cached_rerun_keeps_what_the_model_reported(tiny_checkpoint, tiny_task, tmp_path):
    args = ["-m", "blip", "-a", f"pretrained={tiny_checkpoint('blip')}", "-t", str(tiny_task),
            "-o", str(tmp_path / "r"), "--cache", str(tmp_path / "c.sqlite"), "-q", "--limit", "6",
            "--metrics", "exact_match"]  # fmt: skip
    first = _run(*args)
    assert first.returncode == 0, first.stderr
    parameters = _results(tmp_path / "r")[0]["model"]["parameters"]
    again = _run(*args)
    assert "(0 computed, 6 cached)" in again.stderr
    (rerun,) = _results(tmp_path / "r")
    assert rerun["model"]["parameters"] == parameters > 0
    assert rerun["timing"]["cached_rerun"] is True


@pytest.mark.slow
def test_exit_status_when_nothing_or_not_everything_was_evaluated(tiny_task, tmp_path):
    missing = _run(
        "-m", "blip", "-a", "pretrained=owner/not-here", "-t", str(tiny_task), "-o", str(tmp_path / "r")
    )
    assert missing.returncode == 4 and "nothing was evaluated" in missing.stderr
    mixed = _run("-m", "prior", "-m", "blip", "-a", "pretrained=owner/not-here", "-t", str(tiny_task),
                 "-o", str(tmp_path / "r"), "-q")  # fmt: skip
    assert mixed.returncode == 0, mixed.stderr
    strict = _run("-m", "prior", "-m", "blip", "-a", "pretrained=owner/not-here", "-t", str(tiny_task),
                  "-o", str(tmp_path / "r"), "-q", "--fail-on-skip")  # fmt: skip
    assert strict.returncode == 4 and "--fail-on-skip" in strict.stderr


@pytest.mark.slow
def test_several_tasks_generation_settings_and_batch_size(tiny_task, tmp_path):
    other = write_task(
        tmp_path / "other", colour_rows(make_images(tmp_path / "other" / "images", 3)), name="other"
    )
    res = _run("-m", "prior", "-t", str(tiny_task), "-t", str(other), "-o", str(tmp_path / "r"), "-q",
               "--gen_kwargs", "max_new_tokens=5,num_beams=2", "--batch_size", "auto")  # fmt: skip
    assert res.returncode == 0, res.stderr
    results = _results(tmp_path / "r")
    assert {r["task"]["name"] for r in results} == {"tiny", "other"}
    for r in results:
        assert (
            r["config"]["generation"]["max_new_tokens"] == 5 and r["config"]["generation"]["num_beams"] == 2
        )
        assert r["config"]["batch_size_requested"] == "auto" and r["config"]["batch_size"] == 8  # a CPU run
        assert r["config"]["world_size"] == 1
    assert all("-gen" in Path(p).parent.name for p in map(str, (tmp_path / "r").rglob("results.json")))
    bad = _run(
        "-m", "prior", "-t", str(tiny_task), "--gen-kwargs", "max_new_token=5", "-o", str(tmp_path / "x")
    )
    assert bad.returncode == 2 and "did you mean 'max_new_tokens'" in bad.stderr


@pytest.mark.slow
def test_run_file_lists_models_tasks_and_options(tiny_task, tmp_path):
    run_file = tmp_path / "study.yaml"
    run_file.write_text(yaml.safe_dump({
        "description": "two priors",
        "models": ["prior", {"name": "prior", "args": {"k": 3}, "label": "prior-k3"}],
        "tasks": [str(tiny_task)],
        "options": {"limit": 6, "output_dir": "out", "metrics": ["exact_match"]},
    }))  # fmt: skip
    res = run_cli(["run", "--config", str(run_file), "-q"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    results = _results(tmp_path / "out")
    assert sorted(r["model"]["label"] for r in results) == ["prior", "prior-k3"]
    assert all(r["task"]["n_samples"] == 6 for r in results)
    override = run_cli(["run", "--config", str(run_file), "-q", "--limit", "4"], cwd=tmp_path)
    assert override.returncode == 0 and 4 in {r["task"]["n_samples"] for r in _results(tmp_path / "out")}
    listing = run_cli(["list", "configs"])
    assert "study" in listing.stdout and "CLIP" in listing.stdout


def test_list_models_name_shows_the_arguments():
    res = run_cli(["list", "models", "prior"])
    assert res.returncode == 0 and "k " in res.stdout and "int >= 1; default 10" in res.stdout
    bad = run_cli(["list", "models", "prio"])
    assert bad.returncode == 2 and "did you mean 'prior'" in bad.stderr


def test_run_help_explains_every_option():
    from vlmbench.cli import run

    undocumented = [p.name for p in run.params if not getattr(p, "help", None)]
    assert undocumented == []
    res = run_cli(["run", "--help"])
    assert "Examples:" in res.stdout and "Exit status" in res.stdout


@pytest.mark.slow
@pytest.mark.parametrize("quiet", [True, False])
def test_output_shows_progress_results_and_real_warnings_only(tmp_path, quiet):
    res = run_cli(["run", "-m", "prior", "-t", "abo_sample", "--limit", "5", "-o", str(tmp_path / "r"), "--no-cache",
                   *(["-q"] if quiet else [])])  # what a terminal shows: a real process  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "kernels-community" not in res.stderr and "Traceback" not in res.stderr
    if quiet:
        assert "Loading weights" not in res.stderr and "%|" not in res.stderr


def test_vlmbench_warnings_are_one_plain_line(tmp_path):
    """A warning of vlmbench's own (here: no sample has a difficulty weight for Average Mark) reads as
    one `warning:` line, not as a Python warning with a source path and code line."""
    preds = tmp_path / "preds.csv"
    preds.write_text("question,answer,prediction\nwhat colour?,red,red\nwhat material?,wood,metal\n")
    res = run_cli(["score", str(preds), "--prediction-column", "prediction", "--reference-column", "answer",
                   "--metrics", "exact_match,average_mark", "-o", str(tmp_path / "out")])  # fmt: skip
    assert res.returncode == 0, res.stderr
    warned = [line for line in res.stderr.splitlines() if "left out" in line]
    assert warned == [
        "warning: average_mark: 2 of 2 samples left out (no difficulty weight: 2 at level unknown)"
    ]
    assert "UserWarning" not in res.stderr and ".py:" not in res.stderr
