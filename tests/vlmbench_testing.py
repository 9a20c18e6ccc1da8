"""Helpers shared by the test modules (imported as ``vlmbench_testing``; fixtures live in conftest.py)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SAMPLE_TASK = REPO / "tasks" / "abo_sample"  # the bundled sample: its CSV and images

# The fault-injection test files (relative to tests/): each records its faults for docs/reliability.md.
RELIABILITY_FILES = (
    "test_reliability.py",
    "test_bad_inputs_cli.py",
    "test_reliability_artifacts.py",
    "test_reliability_adapters.py",
    "test_reliability_caches.py",
    "test_reliability_options.py",
    "test_reliability_outputs.py",
    "test_reliability_outputs_replace.py",
    "test_reliability_paths.py",
    "test_reliability_processes.py",
    "test_reliability_text.py",
    "models/test_hostile_model_files.py",
    "data/test_abo_gemini.py",
    "data/test_reliability_download_secrets.py",
)

COLOURS = {"red": (220, 30, 30), "green": (40, 160, 60), "blue": (40, 80, 210), "yellow": (240, 220, 40)}


def closest_colour(image: Image.Image) -> str:
    """The name in :data:`COLOURS` nearest the image's mean colour: how the test models "see"."""
    px = np.asarray(image).reshape(-1, 3).mean(0)
    return min(COLOURS, key=lambda n: ((px - COLOURS[n]) ** 2).sum())


def image_colours(n: int) -> list[str]:
    """The colours of ``n`` generated images: the names of :data:`COLOURS` in turn."""
    names = list(COLOURS)
    return [names[i % len(names)] for i in range(n)]


def sample_row(image_id: str, path: str, question: str, answer: str, difficulty: int) -> dict:
    """A row of a task CSV in the study's columns."""
    return {
        "image_id": image_id,
        "path": path,
        "question": question,
        "answer": answer,
        "difficulty": difficulty,
    }


def make_images(root: Path, n: int) -> list[tuple[str, str]]:
    """``n`` solid-colour JPEG images under ``root/xx/``; returns (relative path, colour) pairs."""
    out = []
    for i, colour in enumerate(image_colours(n)):
        rel = f"{i:02x}/img{i:03d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), COLOURS[colour]).save(root / rel, quality=95)
        out.append((rel, colour))
    return out


def write_task(
    folder: Path,
    rows: list[dict],
    extra: dict | None = None,
    name: str = "tiny",
    filename: str = "data.csv",
) -> Path:
    """A task YAML + CSV (the study's columns) in ``folder``; images are expected in folder/images."""
    folder.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0].keys()) if rows else ["image_id", "path", "question", "answer", "difficulty"]
    with open(folder / filename, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    spec = {"task": name, "version": 1, "dataset": {"path": filename, "image_root": "images"}}
    spec.update(extra or {})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def colour_rows(images: list[tuple[str, str]]) -> list[dict]:
    """Two questions per image: its colour (difficulty 0) and a constant answer (difficulty 3)."""
    rows = []
    for rel, colour in images:
        stem = Path(rel).stem
        rows.append(sample_row(stem, rel, "What colour is the square?", colour, 0))
        rows.append(sample_row(stem, rel, "What shape is shown?", "square", 3))
    return rows


def run_cli(
    args: list[str], env: dict | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python -m vlmbench ARGS`` in a fresh process (what a user's shell does)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "vlmbench", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


def invoke_cli(args: list[str]) -> subprocess.CompletedProcess:
    """Run ``vlmbench ARGS`` in this process, for tests whose subject is a command's checks, not the
    process: the same group, error handling and exit codes as ``run_cli``, without a process start
    (about half a second of imports each). A traceback fails the test: exceptions are not caught."""
    from click.testing import CliRunner

    from vlmbench.cli import cli

    result = CliRunner().invoke(cli, args, prog_name="vlmbench", catch_exceptions=False)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
