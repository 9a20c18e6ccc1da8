"""A task that can only be learned from the image: the colour of a square drawn at a random place,
with train/val/test splits in a split column (the fine-tuning tests' data; usable outside pytest)."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import yaml
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (40, 160, 60), "blue": (40, 80, 210), "yellow": (240, 220, 40)}
QUESTION = "What colour is the square?"
SPLITS = {"train": 32, "val": 16, "test": 16}


@dataclass
class SquaresTask:
    folder: Path
    yaml: Path
    sizes: dict[str, int]


def make_squares_task(folder: Path, sizes: dict[str, int] | None = None, seed: int = 0) -> SquaresTask:
    """One question for every image, the same question each time: only the image tells the answer.
    Colours cycle through the samples of each split, so every split is balanced."""
    sizes = sizes or SPLITS
    rng = random.Random(seed)
    names = list(COLOURS)
    rows = []
    for split, n in sizes.items():
        for i in range(n):
            colour = names[i % len(names)]
            rel = f"{split}/sq{i:03d}.png"
            (folder / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            image = Image.new("RGB", (48, 48), (235, 235, 235))
            size = rng.randint(20, 30)
            x, y = rng.randint(0, 48 - size), rng.randint(0, 48 - size)
            ImageDraw.Draw(image).rectangle((x, y, x + size, y + size), fill=COLOURS[colour])
            image.save(folder / "images" / rel)
            rows.append(
                {"image_id": f"{split}{i}", "path": rel, "question": QUESTION, "answer": colour,
                 "difficulty": 0, "split": split}
            )  # fmt: skip
    with open(folder / "squares.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    spec = {
        "task": "squares",
        "version": 1,
        "dataset": {"path": "squares.csv", "image_root": "images", "columns": {"split": "split"}},
        "split": "test",
        "train_split": "train",
        "generation": {"max_new_tokens": 4},
        "bootstrap_samples": 0,
    }
    path = folder / "squares.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return SquaresTask(folder, path, dict(sizes))
