"""The command line as a user runs it, on the bundled sample task."""

import json

import pytest

from vlmbench_testing import REPO, run_cli


@pytest.mark.slow(seconds=30)
def test_prior_on_abo_sample_end_to_end(tmp_path):
    env = {"VLMBENCH_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "runs"
    first = run_cli(
        ["run", "--model", "prior", "--task", "abo_sample", "--output-dir", str(out)], env=env, cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    assert "(225 computed, 0 cached)" in first.stderr
    assert "| abo_sample | prior | 0 | 225 |" in first.stdout
    results = json.loads(next(out.rglob("results.json")).read_text())
    assert set(results["metrics"]) >= {"exact_match", "average_mark"}
    for m in ("exact_match", "average_mark"):
        assert results["metrics"][m]["ci95"] is not None
    assert set(results["by_difficulty"]) == {"0", "1", "2", "3", "5"}
    assert (
        results["provenance"]["command"].startswith("vlmbench run")
        or "run" in results["provenance"]["command"]
    )
    assert len(next(out.rglob("predictions.jsonl")).read_text().splitlines()) == 225

    second = run_cli(
        ["run", "--model", "prior", "--task", "abo_sample", "--output-dir", str(out)], env=env, cwd=tmp_path
    )
    assert second.returncode == 0 and "(0 computed, 225 cached)" in second.stderr

    board = run_cli(["leaderboard", str(out), "--sort-by", "average_mark"], cwd=tmp_path)
    assert board.returncode == 0, board.stderr
    assert "| abo_sample | prior |" in board.stdout
    assert (out / "leaderboard.md").exists() and (out / "leaderboard.csv").read_text().startswith(
        "task,model"
    )
    bad = run_cli(["leaderboard", str(out), "--sort-by", "exact_mach"], cwd=tmp_path)
    assert bad.returncode == 2 and "did you mean 'exact_match'" in bad.stderr


def test_help_texts():
    res = run_cli(["run", "--help"])
    assert res.returncode == 0 and "--model-args" in res.stdout and "--on-bad-sample" in res.stdout
    assert "vlmbench list" in run_cli(["--help"]).stdout


def test_packaging_lists_every_package():
    """A wheel contains only the packages named in pyproject.toml; every folder with code must be listed."""
    import tomllib

    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = cfg["package-dir"]
    found = set()
    for name, folder in mapping.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == listed
