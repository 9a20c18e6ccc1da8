"""Fixtures of the model-plugin tests: tiny checkpoints (built once per session), a small task on
generated images, and a helper that runs the real ``vlmbench`` command line in-process."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image, ImageDraw

from vlmbench_testing import COLOURS, image_colours, sample_row

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


GENERATIVE = ("blip", "blip2", "qwen2.5-vl", "smolvlm")
ALL_MODELS = (*GENERATIVE, "clip")

# Questions of different lengths, so batches need padding.
QUESTIONS = [
    ("What colour is the product?", None, 0),
    ("Is it made of wood?", "yes", 1),
    ("How many chairs are shown in this picture of a kitchen table?", "two", 2),
    ("Which room?", "bedroom", 3),
    ("Is there a lamp on the table in the photo?", "no", 5),
]


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs tiny models: one torch thread (see the root conftest)."""


@dataclass
class TinyTask:
    folder: Path
    generate: Path  # task YAML asking for free-form answers
    rank: Path  # the same samples as rank requests over the task's answers
    n: int


def make_task(folder: Path, n_images: int = 6) -> TinyTask:
    """A task in the seed study's CSV format on generated PNG and JPEG images."""
    images = folder / "images"
    rows = []
    for i, colour in enumerate(image_colours(n_images)):
        rel = f"{i:02x}/item{i}.{'png' if i % 2 else 'jpg'}"
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (40 + 12 * i, 36 + 6 * i), COLOURS[colour])
        ImageDraw.Draw(image).ellipse((4, 4, 24 + 2 * i, 20 + i), fill=(255 - 30 * i, 25 * i, 90))
        image.save(images / rel)
        for j in range(2):
            question, answer, difficulty = QUESTIONS[(i + j) % len(QUESTIONS)]
            rows.append(sample_row(f"item{i}", rel, question, answer or colour, difficulty))
    with open(folder / "data.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    base = {"version": 1, "dataset": {"path": "data.csv", "image_root": "images"}, "bootstrap_samples": 0}
    generate = folder / "tiny_generate.yaml"
    generate.write_text(
        yaml.safe_dump(
            {"task": "tiny_generate", **base, "request_type": "generate", "generation": {"max_new_tokens": 4}}
        ),
        encoding="utf-8",
    )
    rank = folder / "tiny_rank.yaml"
    rank.write_text(
        yaml.safe_dump(
            {"task": "tiny_rank", **base, "request_type": "rank", "candidates": {"source": "task_answers"}}
        ),
        encoding="utf-8",
    )
    return TinyTask(folder, generate, rank, len(rows))


@pytest.fixture(scope="session")
def model_task(tmp_path_factory: pytest.TempPathFactory) -> TinyTask:
    return make_task(tmp_path_factory.mktemp("tiny-task"))


@dataclass
class Run:
    exit_code: int
    output: str
    run_dir: Path | None

    @property
    def results(self) -> dict:
        return json.loads((self.run_dir / "results.json").read_text(encoding="utf-8"))

    @property
    def predictions(self) -> list[dict]:
        lines = (self.run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]


def run_model(
    model: str,
    task: Path | str,
    out: Path,
    *args: str,
    model_args: str | None = None,
    batch_size: int = 4,
    workers: int = 0,
) -> Run:
    """``vlmbench run`` in-process (click's runner) with one model; the run folder it wrote."""
    from vlmbench.cli import cli

    argv = ["run", "-m", model, "-t", str(task), "-o", str(out), "-b", str(batch_size)]
    argv += ["--num-workers", str(workers), "--no-cache", "-q", *args]
    if model_args:
        argv += ["-a", model_args]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    dirs = sorted(p.parent for p in out.glob("*/*/results.json"))
    return Run(result.exit_code, result.output, dirs[-1] if dirs else None)


def create_model(name: str, **args: object):
    """A model plugin instance as the runner creates it (weights not loaded yet)."""
    from vlmbench.plugin.loading import load_plugins
    from vlmbench.plugin.registry import load_target

    entry = load_plugins().models.get(name)
    given = {k: str(v) for k, v in args.items() if v is not None}
    return load_target(entry.target).create(entry, given, device="cpu")


def sample_requests(kind: str, template: str, candidates: tuple[str, ...] = ()) -> list:
    """Three requests with different images and question lengths."""
    from vlmbench.plugin.request import Request

    out = []
    for i, (question, _, _) in enumerate(QUESTIONS[:3]):
        image = Image.new("RGB", (48 + 16 * i, 40 + 8 * i), list(COLOURS.values())[i])
        ImageDraw.Draw(image).rectangle((3, 3, 20, 12 + 4 * i), fill=(20, 20, 20))
        out.append(
            Request(
                sample_id=f"s{i}",
                kind=kind,
                prompt=template.format(question=question),
                question=question,
                image_ref=f"s{i}.png",
                image_id=f"s{i}",
                candidates=candidates,
                image=image,
            )
        )
    return out
