"""`compare` and `plot` on runs written by ``vlmbench.evaluate`` with in-process test models."""

from __future__ import annotations

import base64
import io
import json
import re
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner
from PIL import Image

from vlmbench.analysis import compare, figure_data, plot
from vlmbench.cli import cli
from vlmbench.errors import VlmbenchError
from vlmbench.evaluation.runner import evaluate
from vlmbench.plugin.hookspecs import hookimpl
from vlmbench.plugin.loading import load_plugins
from vlmbench.plugin.model import Model

from vlmbench_testing import closest_colour, make_images, write_task


class LooksAtColour(Model):
    """Names the image's closest colour for every question: right on colour questions only."""

    def generate(self, batch, generation):
        return [closest_colour(r.image) for r in batch.requests]

    def describe(self):
        return {**super().describe(), "parameters": 2_000_000}


class ReadsQuestion(Model):
    """Reads only the question: 'square' for the shape question, always 'red' for the colour one."""

    def generate(self, batch, generation):
        return ["square" if "shape" in r.question else "red" for r in batch.requests]

    def describe(self):
        return {**super().describe(), "parameters": 90_000_000}


class RanksColours(Model):
    """Can only rank: the candidate answer that names the image's closest colour scores highest."""

    def rank(self, batch):
        out = []
        for r in batch.requests:
            best = closest_colour(r.image)
            out.append([float(c == best) for c in r.candidates])
        return out

    def describe(self):
        return {**super().describe(), "parameters": 30_000_000}


class Plugin:
    @hookimpl
    def register_models(self, register):
        register("looks-at-colour", f"{__name__}:LooksAtColour", summary="test")
        register("reads-question", f"{__name__}:ReadsQuestion", summary="test")
        register("ranks-colours", f"{__name__}:RanksColours", summary="test", request_types=("rank",))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four runs of one 16-image generate task (colour questions at difficulty 0, shape at 3, and a
    tricky question text at difficulty 1), one by a model that can only rank candidates, and their
    folders."""
    root = tmp_path_factory.mktemp("e2e")
    images = make_images(root / "task" / "images", 16)
    rows = []
    for rel, colour in images:
        stem = rel.split("/")[-1][:-4]
        rows.append(
            {
                "image_id": stem,
                "path": rel,
                "question": "What colour is it?",
                "answer": colour,
                "difficulty": 0,
            }
        )
        rows.append({"image_id": stem, "path": rel, "question": "What shape is shown?", "answer": "square", "difficulty": 3})  # fmt: skip
    rows[0]["question"] = "Is <b>this</b> red & | square?"
    rows[0]["difficulty"] = 1
    task = write_task(root / "task", rows)
    plugins = load_plugins(extra=[Plugin()])
    out = {}
    try:
        for name in ("looks-at-colour", "reads-question", "prior", "ranks-colours"):
            result = evaluate(
                name,
                task,
                plugins=plugins,
                output_dir=root / "runs",
                num_workers=0,
                cache=False,
                progress=False,
            )
            out[name] = result.run_dir
    finally:
        load_plugins(reload=True)
    return root, out


def _preds(run_dir):
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def test_compare_on_evaluated_runs(runs):
    _, dirs = runs
    a, b = dirs["looks-at-colour"], dirs["reads-question"]
    report = compare.compare_runs([a, b], bootstrap_samples=300)
    (comp,) = report["comparisons"]
    pa = {p["sample_id"]: p for p in _preds(a)}
    pb = {p["sample_id"]: p for p in _preds(b)}
    lost = [s for s in pa if pa[s]["scores"]["exact_match"] == 1 and pb[s]["scores"]["exact_match"] == 0]
    gained = [s for s in pa if pa[s]["scores"]["exact_match"] == 0 and pb[s]["scores"]["exact_match"] == 1]
    # colour questions about non-red squares are lost (12 of 16, less the one moved to difficulty 1
    # which is red anyway); every shape question is gained
    assert len(lost) == 12 and len(gained) == 16
    assert [f["sample_id"] for f in comp["flips"]["right_to_wrong"]] == lost
    assert [f["sample_id"] for f in comp["flips"]["wrong_to_right"]] == gained
    assert comp["mcnemar"]["p_value"] == pytest.approx(compare.mcnemar_exact(12, 16))
    by = comp["by_difficulty"]
    assert by["0"]["metrics"]["exact_match"]["delta"] == pytest.approx(-12 / 15)
    assert by["3"]["metrics"]["exact_match"]["delta"] == pytest.approx(1.0)
    assert by["1"]["n"] == 1 and by["1"]["metrics"]["exact_match"]["ci95"] is None  # one sample: no interval
    # Average Mark rebuilt from the task's default weights, paired
    assert comp["metrics"]["average_mark"]["paired"] is True
    ra = json.loads((a / "results.json").read_text())["metrics"]["average_mark"]["value"]
    rb = json.loads((b / "results.json").read_text())["metrics"]["average_mark"]["value"]
    assert comp["metrics"]["average_mark"]["delta"] == pytest.approx(rb - ra)  # every sample is paired

    res = CliRunner().invoke(
        cli, ["compare", str(a), str(b), str(dirs["prior"]), "--fail-on-regression", "average_mark:0.05"]
    )
    assert res.exit_code == 0, res.output  # Average Mark goes up for both
    res = CliRunner().invoke(cli, ["compare", str(b), str(a), "--fail-on-regression", "average_mark:0.05"])
    assert res.exit_code == 3 and "regression: average_mark fell by" in res.output


@pytest.mark.slow
def test_plot_writes_figures_and_report(runs, tmp_path):
    root, _ = runs
    out = tmp_path / "plots"
    res = CliRunner().invoke(cli, ["plot", str(root / "runs"), "--output-dir", str(out), "--top", "3"])
    assert res.exit_code == 0, res.output
    names = ["metrics_vs_parameters", "difficulty_exact_match", "confusions"]
    for name in names:
        png = Image.open(out / f"{name}.png")
        png.verify()
        assert png.format == "PNG"
        root_el = ET.parse(out / f"{name}.svg").getroot()
        assert root_el.tag.endswith("svg")
    assert not (out / "semantic_vs_parameters.png").exists()
    assert "No semantic-similarity metric" in res.output

    # the size figure is a real chart: big enough, many colours, labelled with every sized model
    with Image.open(out / "metrics_vs_parameters.png") as img:
        assert img.width >= 800 and img.height >= 400
        colours = img.convert("RGB").getcolors(maxcolors=1_000_000)
        assert len(colours) > 200
        dominant = max(colours)[0] / (img.width * img.height)
        assert dominant < 0.97  # not a blank canvas
    svg_text = (out / "metrics_vs_parameters.svg").read_text()
    for label in ("looks-at-colour", "reads-question", "prior (no parameters)", "Parameters (log scale)"):
        assert label in svg_text
    # the model that can only rank answered the generate task beside the others, in every figure
    for name in names:
        assert "ranks-colours" in (out / f"{name}.svg").read_text()
    assert "2M" in svg_text or "10M" in svg_text  # parameter ticks in words

    conf = (out / "confusions.svg").read_text()
    # reads-question answers "red" to every colour question: blue, green and yellow become red
    for pair in ("blue → red", "green → red", "yellow → red"):
        assert pair in conf
    assert "square → " in conf  # looks-at-colour names a colour for the shape question

    page = (out / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(names)
    assert Image.open(io.BytesIO(base64.b64decode(embedded[0]))).format == "PNG"
    for name in names:
        assert f'href="{name}.svg"' in page
    assert "<table>" in page and "looks-at-colour" in page and "reads-question" in page
    assert "answers by ranking candidates (task answers), as it cannot generate" in page


@pytest.mark.slow
def test_plot_library_options_and_errors(runs, tmp_path):
    root, dirs = runs
    report = plot.render(root / "runs", tmp_path / "p", metric="average_mark", metrics=["exact_match"])
    assert [f.name for f in report.figures] == [
        "metrics_vs_parameters",
        "difficulty_average_mark",
        "confusions",
    ]
    _, found, _ = figure_data.collect_runs(root / "runs")
    assert [r.label for r in found] == [
        "prior",
        "looks-at-colour",
        "ranks-colours",
        "reads-question",
    ]  # by size
    runner = CliRunner()
    bad = runner.invoke(
        cli, ["plot", str(root / "runs"), "-o", str(tmp_path / "q"), "--metric", "exact_mach"]
    )
    assert bad.exit_code == 2 and "did you mean 'exact_match'" in bad.output
    # a second task in the folder: one sub-folder per task, or the task chosen
    other = tmp_path / "mixed"
    for src in dirs.values():
        dest = other / "tiny" / src.name
        dest.mkdir(parents=True)
        for f in ("results.json", "predictions.jsonl"):
            (dest / f).write_bytes((src / f).read_bytes())
    data = json.loads((other / "tiny" / dirs["prior"].name / "results.json").read_text())
    data["task"]["name"] = "another"
    (other / "tiny" / dirs["prior"].name / "results.json").write_text(json.dumps(data))
    mixed = runner.invoke(cli, ["plot", str(other), "-o", str(tmp_path / "m")])
    assert mixed.exit_code == 0, mixed.output
    for task in ("another", "tiny"):
        assert f"report: {tmp_path / 'm' / task / 'report.html'}" in mixed.output
        assert (tmp_path / "m" / task / "confusions.svg").is_file()
    assert "prior" in (tmp_path / "m" / "another" / "confusions.svg").read_text()
    assert "prior" not in (tmp_path / "m" / "tiny" / "confusions.svg").read_text()
    ok = runner.invoke(cli, ["plot", str(other), "-o", str(tmp_path / "one"), "--task", "another"])
    assert ok.exit_code == 0 and (tmp_path / "one" / "report.html").is_file(), ok.output
    with pytest.raises(VlmbenchError, match="choose one with --task"):
        plot.render(other, tmp_path / "lib")  # the one-task library call still asks
    bad_metric = runner.invoke(cli, ["plot", str(other), "-o", str(tmp_path / "b"), "--metric", "wups"])
    assert bad_metric.exit_code == 2 and "in the runs of task 'another'" in bad_metric.output
    assert not (tmp_path / "b").exists()  # every task is checked before anything is drawn


def test_metric_families_and_titles():
    run = figure_data.PlotRun("m", 1, {"metrics": {k: {} for k in ("wups_0.9", "exact_match", "sbert", "bertscore_f1", "wups_0.0", "em2")}}, None)  # fmt: skip
    assert figure_data.metrics_in([run], figure_data.CORE_METRICS) == ["exact_match", "wups_0.0", "wups_0.9"]
    assert figure_data.metrics_in([run], figure_data.SEMANTIC_METRICS) == [
        "bertscore_f1",
        "sbert",
    ]  # the study's order
    assert figure_data.metric_title("wups_0.9") == "WUPS@0.9"
    assert figure_data.metric_title("bertscore_f1") == "BERTScore F1"
    assert figure_data.metric_title("wups_weighted") == "Weighted WUPS"
