import numpy as np
import pytest

from vlmbench.analysis import leaderboard
from vlmbench.artifacts.run_files import write_json
from vlmbench.scoring.stats import mean_with_ci, statistic_with_ci


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = np.array([1.0] * 30 + [0.0] * 70)
    a = mean_with_ci(values, 1000, seed=0)
    b = mean_with_ci(values, 1000, seed=0)
    assert a == b and a["value"] == pytest.approx(0.3) and a["n"] == 100
    lo, hi = a["ci95"]
    # normal approximation: 0.3 +- 1.96 * sqrt(0.3*0.7/100) = [0.210, 0.390]
    assert lo == pytest.approx(0.21, abs=0.03) and hi == pytest.approx(0.39, abs=0.03)
    assert mean_with_ci(values, 1000, seed=1) != a
    assert mean_with_ci(values, 0, seed=0)["ci95"] is None
    assert mean_with_ci(np.array([1.0]), 1000, seed=0)["ci95"] is None


def test_statistic_bootstrap_matches_mean_bootstrap_for_the_mean():
    values = np.random.default_rng(3).random(200)
    direct = mean_with_ci(values, 500, seed=7)
    generic = statistic_with_ci(lambda idx: values[idx].mean(), len(values), 500, seed=7)
    assert generic["value"] == pytest.approx(direct["value"])
    assert generic["ci95"] == pytest.approx(direct["ci95"], abs=0.01)


def _results(path, model, em, status="ok", params=0, extra=None):
    data = {
        "status": status,
        "task": {"name": "t", "n_scored": 10},
        "model": {"name": model, "label": model, "parameters": params},
        "metrics": {}
        if status != "ok"
        else {"exact_match": {"value": em, "ci95": [em - 0.1, em + 0.1], "higher_is_better": True}},
        **(extra or {}),
    }
    write_json(path / model / "results.json", data)


def test_leaderboard_sorting_and_notes(tmp_path):
    _results(tmp_path, "a", 0.2, params=385_000_000)
    _results(
        tmp_path,
        "b",
        0.6,
        extra={
            "skipped_metrics": {"bertscore": "roberta-large is not available"},
            "skipped_samples": {"missing_image": 2},
        },
    )
    _results(tmp_path, "c", None, status="skipped", extra={"reason": "checkpoint x is not available"})
    rows = leaderboard.collect(tmp_path)
    md = leaderboard.to_markdown(rows)
    lines = [line for line in md.splitlines() if line.startswith("| t |")]
    assert [line.split("|")[2].strip() for line in lines] == ["b", "a", "c"]
    assert "385.0M" in md and "0.6000 [0.500, 0.700]" in md
    assert (
        "bertscore skipped: roberta-large is not available" in md
        and "2 samples skipped (missing_image 2)" in md
    )
    assert "skipped: checkpoint x is not available" in md
    csv_text = leaderboard.to_csv(rows)
    assert csv_text.splitlines()[0].startswith(
        "task,model,checkpoint,parameters,n,status,exact_match,exact_match_ci_low"
    )
