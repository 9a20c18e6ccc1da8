import json
import sys
from pathlib import Path

import pytest

from vlmbench.errors import UnknownNameError, VlmbenchError
from vlmbench.plugin.hookspecs import hookimpl
from vlmbench.plugin.loading import load_plugins

from vlmbench_testing import REPO, run_cli


def test_load_plugins_is_idempotent_and_lists_builtins():
    a = load_plugins()
    assert load_plugins() is a
    assert "prior" in a.models and "exact_match" in a.metrics and "abo_sample" in a.tasks
    assert {p.distribution for p in a.plugins} >= {"vlmbench"}
    assert a.models.get("prior").plugin == "vlmbench"
    b = load_plugins(reload=True)
    assert b is not a and b.models.names() == a.models.names()


def test_did_you_mean():
    plugins = load_plugins()
    with pytest.raises(UnknownNameError, match=r"unknown model 'prio'; did you mean 'prior'\?"):
        plugins.models.get("prio")
    with pytest.raises(UnknownNameError, match=r"unknown task 'abo_smaple'; did you mean 'abo_sample'"):
        plugins.tasks.get("abo_smaple")


class _Broken:
    @hookimpl
    def register_models(self, register):
        raise RuntimeError("boom")


class _Conflict:
    @hookimpl
    def register_models(self, register):
        register("prior", "somewhere:Else")


class _BadTarget:
    @hookimpl
    def register_metrics(self, register):
        register("bad", "no_colon_here")


def test_a_failing_plugin_is_recorded_and_the_rest_load():
    plugins = load_plugins(extra=[_Broken(), _Conflict(), _BadTarget()])
    try:
        errors = [p.error for p in plugins.problems]
        assert any("register_models failed: RuntimeError: boom" in e for e in errors)
        assert any("registered twice" in e for e in errors)
        assert any("module:attribute" in e for e in errors)
        assert "prior" in plugins.models and plugins.models.get("prior").target.startswith("vlmbench_plugins")
    finally:
        load_plugins(reload=True)


def test_list_does_not_import_torch():
    import subprocess

    probe = (
        "import sys, runpy\n"
        "sys.argv = ['vlmbench', 'list']\n"
        "try:\n    runpy.run_module('vlmbench', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    check = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "prior" in check.stdout and check.stdout.strip().endswith("NO-TORCH"), check.stdout + check.stderr


def test_third_party_plugin_installs_lists_and_runs(plugin_env, tmp_path):
    listed = run_cli(["list", "models"], env=plugin_env)
    assert listed.returncode == 0, listed.stderr
    assert "dominant-color" in listed.stdout and "vlmbench-dominant-color" in listed.stdout
    plugins_out = run_cli(["list", "plugins"], env=plugin_env)
    assert "vlmbench-test-helpers" in plugins_out.stdout and "BROKEN" in plugins_out.stdout
    assert "vlmbench_this_module_does_not_exist" in plugins_out.stdout
    res = run_cli(
        [
            "run",
            "-m",
            "dominant-color",
            "-t",
            "abo_sample",
            "-o",
            str(tmp_path / "runs"),
            "-q",
            "--num-workers",
            "0",
            "--metrics",
            "exact_match",
        ],
        env=plugin_env,
    )
    assert res.returncode == 0, res.stderr
    assert "warning: plugin vlmbench-test-helpers (broken) is broken" in res.stderr
    assert "| abo_sample | dominant-color |" in res.stdout
    results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert results["model"]["plugin"] == "vlmbench-dominant-color"
    # colour questions are answerable from pixels alone: better than nothing on that subset
    preds = [
        json.loads(x) for x in next((tmp_path / "runs").rglob("predictions.jsonl")).read_text().splitlines()
    ]
    colour = [p for p in preds if "color" in p["question"].lower()]
    assert sum(p["scores"]["exact_match"] for p in colour) >= 5


def test_docs_plugin_example_matches_the_tested_package():
    """docs/plugins.md shows the example plugin's files verbatim; the test above runs that package."""
    doc = (REPO / "docs" / "plugins.md").read_text()
    files = ["pyproject.toml", "vlmbench_dominant_color/__init__.py", "vlmbench_dominant_color/model.py",
             "vlmbench_dominant_color/fit.py"]  # fmt: skip
    for rel in files:
        source = (REPO / "tests" / "thirdparty_plugin" / rel).read_text().strip()
        assert source in doc, f"docs/plugins.md is out of date with tests/thirdparty_plugin/{rel}"


@pytest.mark.slow
def test_third_party_command_trains_what_its_model_loads(plugin_env, tmp_path):
    """A plugin's own command registered through the hook, as `vlmbench finetune` is: it learns a
    palette from a task's images, and the plugin's model answers with it."""
    palette = tmp_path / "palette.json"
    fit = run_cli(["fit-palette", "abo_sample", "-o", str(palette)], env=plugin_env)
    assert fit.returncode == 0, fit.stderr
    learned = json.loads(palette.read_text())
    assert len(learned) >= 5 and all(len(rgb) == 3 for rgb in learned.values())
    assert "fit-palette" in run_cli(["--help"], env=plugin_env).stdout
    out = tmp_path / "runs"
    for args in ([], ["-a", f"palette={palette}"]):
        res = run_cli(["run", "-m", "dominant-color", *args, "-t", "abo_sample", "-o", str(out), "-q",
                       "--metrics", "exact_match"], env=plugin_env)  # fmt: skip
        assert res.returncode == 0, res.stderr
    default, fitted = [
        {**json.loads(p.read_text()), "_path": str(p)}
        for p in sorted(out.rglob("results.json"), key=lambda p: p.stat().st_mtime)
    ]
    assert default["model"]["fingerprint"] != fitted["model"]["fingerprint"]
    assert fitted["model"]["identity"]["palette_sha256"]
    answers = {
        json.loads(line)["raw"]
        for line in (Path(fitted["_path"]).parent / "predictions.jsonl").read_text().splitlines()
    }
    assert answers <= set(learned)  # the model answers with the colours the command learned


def test_unknown_model_in_cli_is_one_clear_line(tmp_path):
    res = run_cli(["run", "-m", "blip3", "-t", "abo_sample", "-o", str(tmp_path)])
    assert res.returncode == 2
    assert res.stderr.strip().startswith("Error: unknown model 'blip3'") and "Traceback" not in res.stderr


def test_error_class_hierarchy():
    assert issubclass(UnknownNameError, VlmbenchError)
