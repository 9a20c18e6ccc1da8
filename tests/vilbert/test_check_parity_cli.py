"""``vlmbench check-parity vilbert FIXTURE.pt``: the command the ViLBERT plugin adds to the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from vlmbench.cli import cli
from vlmbench.plugin.loading import load_plugins

from .conftest import ALT_FIXTURE, TINY_FIXTURE
from .test_parity import MULTITASK_OUTPUTS


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    load_plugins().call_each("register_commands", cli=cli)
    return CliRunner()


def _rows(output: str) -> dict[str, str]:
    """Output name -> its report line."""
    return {line.split()[0]: line for line in output.splitlines() if line.split()[:1] != []}


@pytest.mark.parametrize("fixture", [TINY_FIXTURE, ALT_FIXTURE], ids=["tiny", "alt"])
def test_shipped_fixtures_pass(runner, fixture):
    result = runner.invoke(cli, ["check-parity", "vilbert", str(fixture)])
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    for name in MULTITASK_OUTPUTS:
        assert rows[name].endswith(" ok"), rows[name]
        assert float(rows[name].split()[2]) <= 1e-5
    assert result.stdout.splitlines()[-1].startswith("PASS")
    assert "tolerance: 1.0e-05" in result.stdout


def test_a_tighter_tolerance_than_the_float32_noise_fails(runner):
    # the second fixture differs by ~1e-6 (float32 rounding): a 1e-9 tolerance must fail it
    result = runner.invoke(cli, ["check-parity", "vilbert", str(ALT_FIXTURE), "--tolerance", "1e-9"])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1].startswith("FAIL")
    assert "tolerance: 1.0e-09" in result.stdout


def test_perturbed_fixture_fails(runner, tmp_path):
    data = torch.load(TINY_FIXTURE, map_location="cpu", weights_only=True)
    outputs = dict(data["outputs"])
    outputs["vil_prediction"] = outputs["vil_prediction"].clone()
    outputs["vil_prediction"][1, 7] += 1e-3
    path = tmp_path / "perturbed.pt"
    torch.save({**data, "outputs": outputs}, path)
    result = runner.invoke(cli, ["check-parity", "vilbert", str(path)])
    assert result.exit_code == 1, result.output
    rows = _rows(result.stdout)
    assert rows["vil_prediction"].endswith("FAIL")
    assert abs(float(rows["vil_prediction"].split()[2]) - 1e-3) < 1e-5
    assert rows["vil_logit"].endswith(" ok")  # only the perturbed output fails


def test_json_report(runner):
    result = runner.invoke(cli, ["check-parity", "vilbert", str(TINY_FIXTURE), "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["variant"] == "multitask"
    assert [o["name"] for o in report["outputs"]] == MULTITASK_OUTPUTS
    assert report["max_abs_diff"] <= 1e-5


def test_a_file_that_is_not_a_fixture_is_a_clear_error(runner, tmp_path):
    bad = tmp_path / "not_a_fixture.pt"
    torch.save({"config": {}}, bad)
    result = runner.invoke(cli, ["check-parity", "vilbert", str(bad)])
    assert result.exit_code == 2
    assert "cannot check parity" in result.stderr and "lacks" in result.stderr
    assert runner.invoke(cli, ["check-parity", "vilbert", str(tmp_path / "absent.pt")]).exit_code == 2


@pytest.mark.slow
def test_installed_command_line(tmp_path):
    # through the console entry point: plugins add their commands before the CLI runs
    result = subprocess.run(
        [sys.executable, "-m", "vlmbench", "check-parity", "vilbert", str(TINY_FIXTURE)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("PASS: max |diff|")
