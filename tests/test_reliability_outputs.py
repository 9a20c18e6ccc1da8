"""What the analysis commands write, from hostile labels and answers, and plot over many runs.

Labels, task names, notes and answers come from run files anyone can edit. In a CSV file none may start
a spreadsheet formula; in a Markdown file (leaderboard, ``compare --format markdown``, the study's
report.md, the sweep table) none may become HTML, a link, an image or an extra table cell. And ``plot``
over more runs than a figure can show draws the best ones, reading only their answers.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from vlmbench.cli import cli

sys.path.insert(0, str(Path(__file__).parent / "compare"))
from compare_helpers import samples, write_run

GROUP = "Hostile text in outputs"
FORMULAS = ['=HYPERLINK("http://evil.example","click")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)",
            "\t=1+1", "\r=1+1"]  # fmt: skip
MARKUP = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "cell | split | row",
          "[click](http://evil.example)", "![pixel](http://evil.example/p.png)", "`code` *bold* \\"]  # fmt: skip


def _runs(root: Path, labels: list[str], answers: list[str]) -> list[Path]:
    items = samples(8)
    folders = []
    for i, (label, answer) in enumerate(zip(labels, answers, strict=True)):
        folder = write_run(
            root / "t" / f"run{i}", label, items, [j % 2 == i % 2 for j in range(8)], wrong_answer=answer
        )
        data = json.loads((folder / "results.json").read_text())
        data["notes"] = [label]  # notes hold text from runs too
        data["by_difficulty"] = {label: {"n": 8, "metrics": {"exact_match": data["metrics"]["exact_match"]}}}
        (folder / "results.json").write_text(json.dumps(data))
        folders.append(folder)
    return folders


def _invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_leaderboard_csv_cells_never_start_a_formula(tmp_path, reliability):
    root = tmp_path / "runs"
    _runs(root, FORMULAS, ["no"] * len(FORMULAS))
    printed = _invoke("leaderboard", str(root), "--format", "csv")
    by_level = _invoke("leaderboard", str(root), "--format", "csv", "--by-difficulty", "--no-write")
    for text in (printed, (root / "leaderboard.csv").read_bytes().decode("utf-8"), by_level):
        cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], text
        for label in FORMULAS:  # still there, as text
            assert "'" + label in cells
    reliability.record_each(GROUP, FORMULAS, "written with a leading ' (shown as text, never run)",
                            prefix="leaderboard CSV cell from a label: ")  # fmt: skip


def _inert(markdown: str, columns: dict[str, int]) -> None:
    """No raw HTML, link or image from the runs, and every table row with its header's cell count."""
    assert "<script" not in markdown and "<img" not in markdown, markdown
    assert not re.search(r"(?<!\\)\]\(http://evil", markdown), markdown
    cells = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            cells = None
            continue
        count = len(re.findall(r"(?<!\\)\|", line)) - 1
        cells = count if cells is None else cells
        assert count == cells, line
        columns[line] = count


@pytest.mark.slow(seconds=8)
def test_markdown_outputs_show_markup_as_text(tmp_path, reliability):
    from vlmbench.analysis.leaderboard import collect
    from vlmbench_plugins.models.blip.finetune.sweep import sweep_table
    from vlmbench_plugins.study.recipe import StudyResult
    from vlmbench_plugins.study.report import write_report

    root = tmp_path / "runs"
    folders = _runs(root, MARKUP, list(reversed(MARKUP)))
    rows: dict[str, int] = {}
    outputs = {
        "leaderboard --format markdown": _invoke("leaderboard", str(root)),
        "leaderboard.md": (root / "leaderboard.md").read_text(encoding="utf-8"),
        "leaderboard --by-difficulty": _invoke("leaderboard", str(root), "--by-difficulty", "--no-write"),
        "compare --format markdown": _invoke("compare", *map(str, folders[:3]), "--bootstrap-samples", "0"),
        "sweep table": sweep_table(
            [{"name": m, "rank": 4, "targets": m, "alpha": 8.0, "status": m, "test": {}} for m in MARKUP],
            None,
        ),
    }
    runs = collect(root)
    study = SimpleNamespace(output_dir=tmp_path / "study", task=SimpleNamespace(name=MARKUP[0], samples=[1]),
                            run_file=Path("<b>run.yaml"), options=SimpleNamespace(with_paper=True), protocol=None,
                            models=[(SimpleNamespace(name=r.model), None) for r in runs], sweep=None)  # fmt: skip
    study.output_dir.mkdir()
    result = StudyResult(study.output_dir, [(r, Path(r.path)) for r in runs], skipped=[(MARKUP[1], MARKUP[2])],
                         sweep_skipped=MARKUP[3])  # fmt: skip
    outputs["study report.md"] = write_report(study, result).read_text(encoding="utf-8")
    for name, text in outputs.items():
        _inert(text, rows)
        assert "&lt;script&gt;" in text or (name == "sweep table" and "&lt;" in text), name
    # The answers are in compare's flipped-sample tables, escaped.
    assert "&lt;img src=x onerror=alert(1)&gt;" in outputs["compare --format markdown"]
    reliability.record_each(GROUP, outputs, "labels, notes and answers with <script>, <img onerror>, links, "
                            "images and pipes written as text; tables keep their cells", prefix="Markdown: ")  # fmt: skip


@pytest.mark.slow(seconds=5)
def test_plot_over_more_runs_than_a_figure_shows(tmp_path, reliability):
    """Five runs, figures of at most two: the two best are drawn, the others' answers are never read
    (their predictions.jsonl is garbage, and no warning names it)."""
    from vlmbench.analysis import plot

    root = tmp_path / "runs"
    items = samples(8)
    for i in range(5):
        folder = write_run(root / "t" / f"run{i}", f"model{i}", items, [j < i + 2 for j in range(8)],
                           parameters=10**8 * (i + 1))  # fmt: skip
        if i < 3:
            (folder / "predictions.jsonl").write_text("{not json\n")
    unreadable: list = []
    (report,) = plot.render_tasks(root, tmp_path / "plots", max_runs=2, unreadable=unreadable)
    assert unreadable == []
    assert [f.name for f in report.figures] == [
        "metrics_vs_parameters",
        "difficulty_exact_match",
        "confusions",
    ]
    assert any("5 runs: the figures show the 2 best by exact_match" in n for n in report.notes), report.notes
    confusions = (tmp_path / "plots" / "confusions.svg").read_text()
    assert "model4" in confusions and "model3" in confusions and "model0" not in confusions
    page = report.report.read_text(encoding="utf-8")
    assert all(f"model{i}" in page for i in range(5))  # every run in the report's leaderboard
    reliability.record(GROUP, "plot over more runs than a figure shows (5 runs, 2 shown)", 1,
                       "the best runs drawn, the others grey points; only the drawn runs' answers read")  # fmt: skip
