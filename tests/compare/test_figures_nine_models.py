"""`vlmbench plot` at the study's scale: nine models with long labels, equal sizes, like scores, a model
known only by its registered size and answers full of characters no figure or XML may hold. Every text
stays inside its figure, no two texts overlap, every SVG is XML, and nothing warns."""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import warnings
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner
from study_runs import MODELS, write_study_runs

import vlmbench
from vlmbench.analysis import figures
from vlmbench.analysis.display import shorten
from vlmbench.cli import cli

FIGURES = ("metrics_vs_parameters", "semantic_vs_parameters", "difficulty_exact_match", "confusions")


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """The nine runs plotted through the command line: (runs folder, output folder, result, the
    matplotlib figures as saved, warnings raised while drawing)."""
    root = tmp_path_factory.mktemp("nine")
    write_study_runs(root / "runs")
    saved = {}
    original = figures.save

    def keep(fig, out_dir, name):
        saved[name] = fig
        return original(fig, out_dir, name)

    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp.setattr(figures, "save", keep)
        mp.setattr(sys, "argv", ["vlmbench", "plot", str(root / "runs"), "--top", "8"])
        result = CliRunner().invoke(
            cli, ["plot", str(root / "runs"), "-o", str(root / "plots"), "--top", "8"]
        )
    return root / "runs", root / "plots", result, saved, list(caught)


def _in_view(labels, limits, index):
    lo, hi = sorted(limits)
    return [t for t in labels if lo - 1e-9 * abs(lo) <= t.get_position()[index] <= hi + 1e-9 * abs(hi)]


def _texts(fig):
    """Every text the figure draws: titles, axis labels, tick labels in view, annotations, legends."""
    found = list(fig.texts)
    for legend in fig.legends:
        found += [*legend.get_texts(), legend.get_title()]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        found += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        xlabels = [*ax.get_xticklabels(), *ax.get_xticklabels(minor=True)]
        found += _in_view(xlabels, ax.get_xlim(), 0) + _in_view(ax.get_yticklabels(), ax.get_ylim(), 1)
    return [t for t in found if t.get_visible() and t.get_text().strip()]


@pytest.mark.slow
def test_nine_models_every_figure_written_without_warnings(drawn):
    _, out, result, saved, caught = drawn
    assert result.exit_code == 0, result.output
    assert sorted(saved) == sorted(FIGURES)
    assert [str(w.message) for w in caught] == []  # no glyph, layout or mathtext warnings
    for name in FIGURES:
        assert ET.parse(out / f"{name}.svg").getroot().tag.endswith("svg")  # NUL bytes would break it


@pytest.mark.slow
def test_nine_models_no_text_leaves_a_figure_or_overlaps_another(drawn):
    *_, saved, _ = drawn
    for name, fig in saved.items():
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
        frame = fig.bbox
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in _texts(fig)]
        assert len(boxes) > 20, name
        outside = [text for text, b in boxes if b.x0 < frame.x0 - 1 or b.y0 < frame.y0 - 1
                   or b.x1 > frame.x1 + 1 or b.y1 > frame.y1 + 1]  # fmt: skip
        assert outside == [], name
        overlapping = [(a, b) for (a, one), (b, two) in itertools.combinations(boxes, 2) if one.overlaps(two)]
        assert overlapping == [], name


def test_nine_models_short_labels_a_legend_and_escaped_answers(drawn):
    _, out, _, saved, _ = drawn
    size = saved["metrics_vs_parameters"]
    assert len(size.legends) == 1  # nine labels beside the points would collide
    shown = [t.get_text() for t in size.legends[0].get_texts()]
    assert len(shown) == len(MODELS) and len(set(shown)) == len(MODELS)
    assert all(len(label) <= figures.LABEL_WIDTH + len(" (parameters unknown)") for label in shown)
    assert any(label.endswith("r16-query_value_out]") for label in shown)  # the checkpoint tag is kept
    svg = (out / "metrics_vs_parameters.svg").read_text(encoding="utf-8")
    # the model known only by its registered size sits on the axis; the one of unknown size is a line
    registered, unknown = (shorten(MODELS[i][0], figures.LABEL_WIDTH) for i in (4, 7))
    assert f"{registered} (parameters unknown)" not in svg and registered in svg
    assert f"{unknown} (parameters unknown)" in svg
    confusions = (out / "confusions.svg").read_text(encoding="utf-8")
    for escaped in (r"nul\x00byte", r"\u4e2d\u6587", r"\U0001f642", "$5 and $6", "&amp; co"):
        assert escaped in confusions
    assert "\x00" not in confusions and "\x07" not in confusions


def test_report_says_when_and_how_it_and_each_run_were_made(drawn):
    runs, out, result, _, _ = drawn
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f"by vlmbench {vlmbench.__version__}: <code>vlmbench plot {runs} --top 8</code>" in page
    for i in range(len(MODELS)):
        assert f"<code>vlmbench run -m model{i} -t studylike</code>" in page
        assert f"2025-01-0{i + 1} 10:00:00" in page
    assert "every answer from the cache" in page and "182M (registered)" in page
    assert "registered size" in result.output  # the note on hollow markers
    assert "\x00" not in page


@pytest.mark.slow
def test_a_folder_of_several_tasks_gives_one_sub_folder_per_task(drawn, tmp_path):
    runs, *_ = drawn
    mixed = tmp_path / "runs"
    shutil.copytree(runs, mixed)
    for folder in sorted((mixed / "studylike").iterdir())[:3]:
        data = json.loads((folder / "results.json").read_text())
        data["task"]["name"] = "other task/v2"
        (folder / "results.json").write_text(json.dumps(data))
    res = CliRunner().invoke(cli, ["plot", str(mixed), "--top", "3"])
    assert res.exit_code == 0, res.output
    for sub in ("other_task_v2", "studylike"):
        assert (mixed / "plots" / sub / "report.html").is_file()
        assert (mixed / "plots" / sub / "difficulty_exact_match.svg").is_file()
    assert not (mixed / "plots" / "report.html").exists()
    page = (mixed / "plots" / "other_task_v2" / "report.html").read_text(encoding="utf-8")
    assert page.count("<code>vlmbench run -m model") == 3
