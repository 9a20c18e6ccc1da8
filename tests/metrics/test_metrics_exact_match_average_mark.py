"""Exact Match (the VQA evaluation's normalisation, quirks included) and Average Mark's counts."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from metric_helpers import make_metric

from vlmbench.plugin.loading import load_plugins
from vlmbench.plugin.metric import MetricContext, ScoreTable
from vlmbench.scoring.scorer import build_metrics, score
from vlmbench.tasks.normalize import vqa_normalize
from vlmbench.tasks.spec import MetricSpec

STUDY_WEIGHTS = {0: 1.0, 1: 2.0, 2: 4.0, 3: 8.0, 5: 20.0}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("red" + "." * 32, "red"),
        ("red" + "." * 33, "red."),  # the 33rd period is not deleted
        ("." * 40, "." * 8),
        ("a.b." * 17 + "c", "ab" * 16 + "a.b.c"),  # counted left to right
        ("2.5" + "." * 32 + "x.", "2.5x."),  # a period before a digit is kept and not counted
    ],
)
def test_normalisation_deletes_at_most_32_periods_as_the_official_script(raw, expected):
    assert vqa_normalize(raw) == expected


def test_exact_match_keeps_the_period_quirk():
    metric = make_metric("exact_match")
    out = metric.score(["red" + "." * 32, "red" + "." * 33, "Red."], ["red", "red", "red"])
    assert out["exact_match"] == [1.0, 0.0, 1.0]
    assert "at most 32" in metric.describe()["definition"]


def score_average_mark(correct, levels, weights, samples=200):
    context = MetricContext(weights, 0, "cpu")
    metrics = build_metrics([MetricSpec("average_mark")], load_plugins(), context)
    answers = ["red" if c else "blue" for c in correct]
    return score(metrics, answers, [["red"]] * len(correct), levels, weights=weights,
                 bootstrap_samples=samples, seed=0)  # fmt: skip


def test_average_mark_counts_and_warns_about_samples_without_a_weight():
    correct = [1, 0, 1, 1, 0, 1, 1, 0]
    levels = [0, 0, 1, 3, 5, 4, 4, None]  # level 4 has no weight, one level is unknown
    with pytest.warns(UserWarning, match=r"average_mark: 3 of 8 samples left out .*2 at level 4"):
        result = score_average_mark(correct, levels, STUDY_WEIGHTS)
    entry = result.metrics["average_mark"]
    weighted = [(c, STUDY_WEIGHTS[d]) for c, d in zip(correct, levels, strict=True) if d in STUDY_WEIGHTS]
    assert entry["value"] == pytest.approx(sum(c * w for c, w in weighted) / sum(w for _, w in weighted))
    assert entry["n"] == 5 and entry["n_left_out"] == 3
    assert entry["left_out_by_level"] == {"unknown": 1, "4": 2}
    assert entry["ci95"][0] <= entry["value"] <= entry["ci95"][1]
    assert result.warnings == {"left_out_of_average_mark": 3}
    # Why there is no per-level entry is said in the results, not left to guess.
    assert all("average_mark" not in level["metrics"] for level in result.by_difficulty.values())
    assert "exact_match" in result.details["average_mark"]["by_difficulty"]


def test_average_mark_with_every_level_weighted_reports_nothing_left_out():
    correct, levels = [1, 0, 1, 1], [0, 1, 2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = score_average_mark(correct, levels, STUDY_WEIGHTS)
    entry = result.metrics["average_mark"]
    assert entry["n"] == 4 and entry["n_left_out"] == 0 and "left_out_by_level" not in entry
    assert result.warnings == {}


def test_average_mark_without_difficulties_is_undefined_and_says_why():
    with pytest.warns(UserWarning, match="3 of 3 samples left out"):
        result = score_average_mark([1, 1, 0], [None, None, None], STUDY_WEIGHTS)
    entry = result.metrics["average_mark"]
    assert entry["value"] is None and entry["ci95"] is None
    assert entry["n"] == 0 and entry["left_out_by_level"] == {"unknown": 3}


def test_report_counts_on_the_table_directly():
    metric = make_metric("average_mark", weights={0: 1.0, 2: 4.0})
    table = ScoreTable({"exact_match": np.array([1.0, 0.0, 1.0])}, np.array([0, 1, 2]))
    assert metric.report(table) == {
        "n": 2, "n_left_out": 1, "left_out_reason": "no difficulty weight", "left_out_by_level": {"1": 1}
    }  # fmt: skip
    assert metric.compute(table) == pytest.approx(1.0)
