"""Runs for the tests of ``vlmbench view``: two tasks on generated images, answered by in-process test
models, one of which answers with markup (``<script>``, ``<img onerror>``) that the page must show as text."""

from __future__ import annotations

import json
from pathlib import Path

from vlmbench.evaluation.runner import evaluate
from vlmbench.plugin.hookspecs import hookimpl
from vlmbench.plugin.loading import load_plugins
from vlmbench.plugin.model import Model

from vlmbench_testing import closest_colour, make_images, write_task

SCRIPT_ANSWER = "<script>alert(1)</script>"
IMG_ANSWER = "<img/src=x/onerror=alert(2)>"


class LooksAtColour(Model):
    """Names the image's closest colour: right on colour questions only."""

    def generate(self, batch, generation):
        return [closest_colour(r.image) for r in batch.requests]


class ReadsQuestion(Model):
    """Reads only the question: 'square' for shape questions, always 'red' for colour ones."""

    def generate(self, batch, generation):
        return ["square" if "shape" in r.question else "red" for r in batch.requests]


class WritesMarkup(Model):
    """Answers with HTML that would run script if a page printed it unescaped."""

    def generate(self, batch, generation):
        return [IMG_ANSWER if "shape" in r.question else SCRIPT_ANSWER for r in batch.requests]


class Plugin:
    @hookimpl
    def register_models(self, register):
        register("looks-at-colour", f"{__name__}:LooksAtColour", summary="test")
        register("reads-question", f"{__name__}:ReadsQuestion", summary="test")
        register("writes-markup", f"{__name__}:WritesMarkup", summary="test")


def make_runs(root: Path) -> dict[str, Path]:
    """Task ``shapes`` (12 images; colour questions at difficulty 0 and 5, shape questions at 3, one row
    whose image is missing, so skipped) run by three models, and task ``other`` run by one; returns each
    run folder by "TASK/MODEL"."""
    images = make_images(root / "shapes" / "images", 12)
    rows = []
    for i, (rel, colour) in enumerate(images):
        stem = Path(rel).stem
        rows.append({"image_id": stem, "path": rel, "question": f"What colour is item {i}?", "answer": colour,
                     "difficulty": 5 if i % 3 == 0 else 0})  # fmt: skip
        rows.append({"image_id": stem, "path": rel, "question": f"What shape is item {i}?", "answer": "square",
                     "difficulty": 3})  # fmt: skip
    rows.append({"image_id": "gone", "path": "ff/gone.jpg", "question": "What colour is the lost item?",
                 "answer": "red", "difficulty": 5})  # fmt: skip
    # answers as the models gave them: the markup must reach the page whole
    extra = {"filters": ["strip"], "metrics": ["exact_match", "average_mark"]}
    shapes = write_task(root / "shapes", rows, extra=extra, name="shapes")
    other_images = make_images(root / "other" / "images", 4)
    other_rows = [{"image_id": Path(r).stem, "path": r, "question": "What colour?", "answer": c, "difficulty": 1}
                  for r, c in other_images]  # fmt: skip
    other = write_task(root / "other", other_rows, extra=extra, name="other")
    plugins = load_plugins(extra=[Plugin()])
    out = {}
    try:
        for task, models in (
            (shapes, ("looks-at-colour", "reads-question", "writes-markup")),
            (other, ("prior",)),
        ):
            for name in models:
                result = evaluate(name, task, plugins=plugins, output_dir=root / "runs", num_workers=0,
                                  cache=False, progress=False)  # fmt: skip
                out[f"{task.stem}/{name}"] = result.run_dir
    finally:
        load_plugins(reload=True)
    return out


def predictions(run_dir: Path) -> dict[str, dict]:
    rows = (json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines())
    return {row["sample_id"]: row for row in rows}


def compare_flips(first: Path, second: Path) -> list[str]:
    """The sample ids ``vlmbench compare`` lists as flipped between two runs, in its order."""
    from vlmbench.analysis import compare

    report = compare.compare_runs([first, second], bootstrap_samples=0)
    flips = report["comparisons"][0]["flips"]
    return [f["sample_id"] for f in flips["right_to_wrong"] + flips["wrong_to_right"]]
