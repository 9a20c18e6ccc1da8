"""Exact Match (the VQA evaluation's normalisation, quirks included) and Average Mark's counts."""

from __future__ import annotations

import pytest
from metric_helpers import make_metric

from vlmbench.normalize import vqa_normalize


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
