"""`vlmbench compare` on a hand-built pair of runs whose per-sample outcomes are known exactly."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from compare_helpers import TASK, WEIGHTS, Sample, samples, write_run

from vlmbench.analysis import compare
from vlmbench.cli import cli
from vlmbench.errors import VlmbenchError

# Per sample (s00..s40): G = wrong in A, right in B; L = right in A, wrong in B; R = both right;
# W = both wrong. s40 is skipped in B, so 40 samples are paired.
PATTERN = "GLRWGGRLWGGRRWGLRWRGRGWRRWGRWRRGWRRWRWRWR"
B_RESAMPLES = 400


@pytest.fixture
def pair(tmp_path):
    items = samples(len(PATTERN))
    a = write_run(tmp_path / "a", "alpha", items, [c in "LR" for c in PATTERN])
    b = write_run(tmp_path / "b", "beta", items, [c in "GR" for c in PATTERN], skipped={"s40"})
    return a, b, items


def _paired(items):
    """(difficulty, A right, B right) of the paired samples, in the baseline's order."""
    return [(s.difficulty, c in "LR", c in "GR") for s, c in zip(items, PATTERN, strict=True)][:40]


def _mcnemar_by_enumeration(b: int, c: int) -> float:
    """Two-sided exact McNemar by brute force: of all 2^(b+c) equally likely ways the discordant
    pairs could split, the share at least as extreme as min(b, c), doubled."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    extreme = sum(1 for bits in itertools.product((0, 1), repeat=n) if sum(bits) <= k)
    return min(1.0, 2 * extreme / 2**n)


def _bootstrap_by_hand(a, b, samples, seed):
    """Paired percentile bootstrap, one resample at a time."""
    rng = np.random.default_rng(seed)
    n = len(a)
    deltas = []
    for _ in range(samples):
        idx = rng.integers(0, n, size=n)
        deltas.append(sum(b[i] - a[i] for i in idx) / n)
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return lo, hi


def test_mcnemar_exact_values():
    # b=3, c=10: P[X <= 3] for X ~ Bin(13, 1/2) = (1 + 13 + 78 + 286) / 8192; doubled: 756 / 8192.
    assert compare.mcnemar_exact(3, 10) == pytest.approx(756 / 8192, abs=1e-15)
    assert compare.mcnemar_exact(10, 3) == compare.mcnemar_exact(3, 10)
    assert compare.mcnemar_exact(0, 0) == 1.0
    assert compare.mcnemar_exact(5, 5) == 1.0  # 2 * P[X <= 5] > 1 is capped
    assert compare.mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    for b, c in [(1, 2), (4, 9), (7, 7), (0, 12), (11, 2)]:
        assert compare.mcnemar_exact(b, c) == pytest.approx(_mcnemar_by_enumeration(b, c), abs=1e-15)
    # large counts stay exact (no float overflow in 2**n) and tiny
    assert 0 < compare.mcnemar_exact(100, 1500) < 1e-200
    scipy_stats = pytest.importorskip("scipy.stats")
    for b, c in [(3, 10), (20, 35), (0, 9)]:
        assert compare.mcnemar_exact(b, c) == pytest.approx(scipy_stats.binomtest(b, b + c, 0.5).pvalue)


def test_pair_deltas_ci_mcnemar_flips_and_difficulty(pair):
    a_dir, b_dir, items = pair
    report = compare.compare_runs([a_dir, b_dir], bootstrap_samples=B_RESAMPLES, seed=7)
    assert report["schema"] == "vlmbench.compare/1"
    (comp,) = report["comparisons"]
    assert comp["samples"] == {
        "paired": 40,
        "baseline_ok": 41,
        "run_ok": 40,
        "only_baseline": 1,
        "only_run": 0,
        "reference_mismatches": 0,
    }
    paired = _paired(items)
    a = [float(x) for _, x, _ in paired]
    b = [float(y) for _, _, y in paired]

    em = comp["metrics"]["exact_match"]
    assert em["a"] == pytest.approx(sum(a) / 40) and em["b"] == pytest.approx(sum(b) / 40)
    assert em["delta"] == pytest.approx((10 - 3) / 40)
    lo, hi = _bootstrap_by_hand(a, b, B_RESAMPLES, seed=7)
    assert em["ci95"] == pytest.approx([lo, hi], abs=1e-12)
    assert em["ci95"][0] < em["delta"] < em["ci95"][1]

    # lower-is-better error rate: the same change with the opposite sign and verdict direction
    er = comp["metrics"]["error_rate"]
    assert er["delta"] == pytest.approx(-em["delta"]) and er["higher_is_better"] is False
    assert er["ci95"] == pytest.approx([-hi, -lo], abs=1e-12)

    # Average Mark recomputed on the paired samples with the run's difficulty weights
    def am(right):
        return sum(WEIGHTS[d] * r for (d, *_), r in zip(paired, right, strict=True)) / sum(
            WEIGHTS[d] for d, *_ in paired
        )

    assert comp["metrics"]["average_mark"]["paired"] is True
    assert comp["metrics"]["average_mark"]["delta"] == pytest.approx(am(b) - am(a))
    assert comp["metrics"]["average_mark"]["ci95"] is not None

    mc = comp["mcnemar"]
    assert (mc["right_to_wrong"], mc["wrong_to_right"]) == (3, 10)
    assert (mc["both_right"], mc["both_wrong"]) == (16, 11)  # s40 (both right in the files) is unpaired
    assert mc["p_value"] == pytest.approx(_mcnemar_by_enumeration(3, 10))

    lost = [f"s{i:02d}" for i, ch in enumerate(PATTERN[:40]) if ch == "L"]
    gained = [f"s{i:02d}" for i, ch in enumerate(PATTERN[:40]) if ch == "G"]
    assert [f["sample_id"] for f in comp["flips"]["right_to_wrong"]] == lost
    assert [f["sample_id"] for f in comp["flips"]["wrong_to_right"]] == gained
    first = comp["flips"]["right_to_wrong"][0]
    assert first == {
        "sample_id": "s01",
        "difficulty": 1,
        "question": "Question number 1?",
        "references": ["ref1"],
        "answer_baseline": "ref1",
        "answer_run": "wrong",
    }

    assert list(comp["by_difficulty"]) == ["0", "1", "2", "3"]
    for level in range(4):
        rows = [(x, y) for d, x, y in paired if d == level]
        entry = comp["by_difficulty"][str(level)]
        assert entry["n"] == len(rows) == 10
        delta = sum(y - x for x, y in rows) / len(rows)
        assert entry["metrics"]["exact_match"]["delta"] == pytest.approx(delta)
        lost_here = sum(x and not y for x, y in rows)
        gained_here = sum(y and not x for x, y in rows)
        assert entry["mcnemar"]["right_to_wrong"] == lost_here
        assert entry["mcnemar"]["wrong_to_right"] == gained_here
        assert entry["mcnemar"]["p_value"] == pytest.approx(_mcnemar_by_enumeration(lost_here, gained_here))
        # Average Mark has one weight per level: no per-difficulty breakdown
        assert "average_mark" not in entry["metrics"]


def test_same_seed_same_report_and_metric_selection(pair):
    a_dir, b_dir, _ = pair
    one = compare.compare_runs([a_dir, b_dir], bootstrap_samples=200, seed=3, metrics=["exact_match"])
    two = compare.compare_runs([a_dir, b_dir], bootstrap_samples=200, seed=3, metrics=["exact_match"])
    assert one == two and list(one["comparisons"][0]["metrics"]) == ["exact_match"]
    with pytest.raises(VlmbenchError, match="did you mean 'exact_match'"):
        compare.compare_runs([a_dir, b_dir], metrics=["exact_mach"])


def test_several_runs_are_compared_with_the_first(tmp_path, pair):
    a_dir, b_dir, items = pair
    c_dir = write_run(tmp_path / "c", "alpha", items, [True] * len(items))  # same label as the baseline
    report = compare.compare_runs([a_dir, b_dir, c_dir], bootstrap_samples=50)
    assert [c["run"]["path"] for c in report["comparisons"]] == [str(b_dir), str(c_dir)]
    assert {c["baseline"]["path"] for c in report["comparisons"]} == {str(a_dir)}
    labels = [report["baseline"]["label"], *(c["run"]["label"] for c in report["comparisons"])]
    assert len(set(labels)) == 3  # duplicates get told apart
    third = report["comparisons"][1]
    assert third["samples"]["paired"] == 41
    assert third["mcnemar"]["wrong_to_right"] == PATTERN.count("G") + PATTERN.count("W")
    assert third["mcnemar"]["right_to_wrong"] == 0


def test_task_mismatch_is_refused_unless_allowed(tmp_path, pair):
    a_dir, _, items = pair
    other = write_run(tmp_path / "x", "gamma", items, [True] * len(items), task={**TASK, "hash": "ffff0000"})
    with pytest.raises(VlmbenchError, match=r"different tasks \(task hash.*--allow-task-mismatch"):
        compare.compare_runs([a_dir, other])
    newer = write_run(tmp_path / "y", "gamma", items, [True] * len(items), task={**TASK, "version": "2"})
    with pytest.raises(VlmbenchError, match="task version: '1' vs '2'"):
        compare.compare_runs([a_dir, newer])
    report = compare.compare_runs([a_dir, other], allow_task_mismatch=True, bootstrap_samples=0)
    comp = report["comparisons"][0]
    assert comp["task_mismatch"] == ["task hash: '0123456789abcdef' vs 'ffff0000'"]
    assert comp["metrics"]["exact_match"]["ci95"] is None  # no resamples asked for
    assert "Warning: different tasks" in compare.to_markdown(report)
    assert "Different tasks, compared on request" in compare.to_html(report)

    result = CliRunner().invoke(cli, ["compare", str(a_dir), str(other)])
    assert result.exit_code == 2 and "--allow-task-mismatch" in result.output
    result = CliRunner().invoke(cli, ["compare", str(a_dir), str(other), "--allow-task-mismatch"])
    assert result.exit_code == 0, result.output
    assert "compared across different tasks" in result.output


def test_regression_gate_exit_codes(pair):
    a_dir, b_dir, _ = pair
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, ["compare", *map(str, args), "--bootstrap-samples", "50"])

    # B is better than A: no regression either way round the metric's direction
    ok = invoke(
        a_dir, b_dir, "--fail-on-regression", "exact_match:0.01", "--fail-on-regression", "error_rate:0"
    )
    assert ok.exit_code == 0, ok.output
    # swapped: Exact Match falls by 7/40 = 0.175
    bad = invoke(b_dir, a_dir, "--fail-on-regression", "exact_match:0.01")
    assert bad.exit_code == 3, bad.output
    assert "regression: exact_match fell by 0.1750" in bad.output and "tolerance 0.01" in bad.output
    assert "delta -0.1750" in bad.output
    assert invoke(b_dir, a_dir, "--fail-on-regression", "exact_match:0.2").exit_code == 0
    # lower is better: the error rate rising is the regression
    rose = invoke(b_dir, a_dir, "--fail-on-regression", "error_rate:0.1")
    assert rose.exit_code == 3 and "error_rate rose by 0.1750" in rose.output
    # usage errors are status 2, not 3
    assert invoke(a_dir, b_dir, "--fail-on-regression", "exact_match").exit_code == 2
    assert invoke(a_dir, b_dir, "--fail-on-regression", "exact_match:-1").exit_code == 2
    unknown = invoke(a_dir, b_dir, "--fail-on-regression", "exact_mach:0.01")
    assert unknown.exit_code == 2 and "did you mean 'exact_match'" in unknown.output
    assert invoke(a_dir).exit_code == 2


def test_markdown_html_json_outputs_escape_and_parse(tmp_path):
    items = samples(6)
    items[1].question = "Is <script>alert('x')</script> a | pipe & more?"
    items[1].references = ["<b>bold</b>"]
    a = write_run(tmp_path / "a", "alpha<i>", items, [True] * 6)
    b = write_run(tmp_path / "b", "beta", items, [True, False, True, True, True, True], wrong_answer="a|b")
    runner = CliRunner()

    html_out = tmp_path / "report.html"
    res = runner.invoke(cli, ["compare", str(a), str(b), "--format", "html", "-o", str(html_out)])
    assert res.exit_code == 0, res.output
    page = html_out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "alpha&lt;i&gt;" in page
    assert "<link" not in page and "src=" not in page  # self-contained

    md = runner.invoke(cli, ["compare", str(a), str(b)])
    assert md.exit_code == 0
    flip_line = next(line for line in md.output.splitlines() if line.startswith("| s01 |"))
    assert "a \\| pipe" in flip_line and "a\\|b" in flip_line
    assert flip_line.count(" | ") == 5  # six cells, the escaped pipes split nothing

    js = runner.invoke(cli, ["compare", str(a), str(b), "--format", "json", "--top", "1"])
    data = json.loads(js.output)
    assert data["schema"] == "vlmbench.compare/1" and data["task"] == {
        k: TASK[k] for k in ("name", "version", "hash")
    }
    assert set(data["settings"]) >= {"bootstrap_samples", "seed", "delta", "ci"}
    (comp,) = data["comparisons"]
    assert set(comp) == {
        "baseline",
        "run",
        "task_mismatch",
        "samples",
        "metrics",
        "mcnemar",
        "by_difficulty",
        "flips",
    }
    em = comp["metrics"]["exact_match"]
    assert set(em) >= {"a", "b", "delta", "ci95", "n", "higher_is_better", "verdict", "paired"}
    assert em["delta"] == pytest.approx(-1 / 6) and comp["mcnemar"]["p_value"] == pytest.approx(1.0)
    assert comp["flips"]["right_to_wrong"][0]["question"] == items[1].question
    assert all(isinstance(v["n"], int) for v in comp["by_difficulty"].values())
    assert not math.isnan(em["b"])


def test_inputs_that_cannot_be_compared(tmp_path, pair):
    a_dir, b_dir, _ = pair
    with pytest.raises(VlmbenchError, match="at least two runs"):
        compare.compare_runs([a_dir])
    (b_dir / "predictions.jsonl").rename(tmp_path / "moved.jsonl")
    with pytest.raises(VlmbenchError, match="predictions.jsonl is missing"):
        compare.compare_runs([a_dir, b_dir])
    with pytest.raises(VlmbenchError, match="holds 2 runs"):
        compare.compare_runs([tmp_path, a_dir])
    skipped = tmp_path / "skipped"
    skipped.mkdir()
    (skipped / "results.json").write_text(json.dumps({"status": "skipped", "reason": "no weights"}))
    with pytest.raises(VlmbenchError, match="skipped \\(no weights\\)"):
        compare.compare_runs([a_dir, skipped])
    others = [Sample("other1", 0, "Q?", ["r"]), Sample("other2", 1, "Q?", ["r"])]
    disjoint = write_run(tmp_path / "d", "delta", others, [True, False])
    with pytest.raises(VlmbenchError, match="no answered samples in common"):
        compare.compare_runs([a_dir, disjoint])
