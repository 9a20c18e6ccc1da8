"""Train/val/test splits by image, stratified by difficulty, seeded.

All questions about one image go to the same split (a model must never be tested on an image it
was trained on). Within that constraint the split keeps each difficulty's share close to the target
fractions: images are shuffled with the seed, placed largest first (stable), and each goes to the
split where it most reduces the gap between the current and the target number of questions per
difficulty, sum over difficulties of (count - target)² / target. The same rows and seed always give
the same splits.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import TypeVar

from vlmbench.api import VlmbenchError

DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}

R = TypeVar("R")


def parse_fractions(text: str, names: Sequence[str] = ("train", "val", "test")) -> dict[str, float]:
    """``"0.8,0.1,0.1"`` -> ``{"train": 0.8, "val": 0.1, "test": 0.1}`` (must sum to 1)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise VlmbenchError(f"split fractions must be numbers, got {text!r}") from None
    if len(values) != len(names):
        raise VlmbenchError(f"give {len(names)} split fractions ({', '.join(names)}), got {text!r}")
    return check_fractions(dict(zip(names, values, strict=True)))


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    if any(v < 0 for v in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise VlmbenchError(f"split fractions must be non-negative and sum to 1, got {dict(fractions)}")
    return dict(fractions)


def assign_images(
    image_difficulties: Mapping[str, Sequence[int]],
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, str]:
    """``{image_id: split}`` for images given with the difficulties of their questions."""
    fractions = check_fractions(fractions)
    names = list(fractions)
    totals: Counter[int] = Counter()
    for diffs in image_difficulties.values():
        totals.update(diffs)
    target = {s: {d: fractions[s] * n for d, n in totals.items()} for s in names}
    current = {s: Counter() for s in names}
    size = dict.fromkeys(names, 0)
    n_questions = sum(totals.values()) or 1

    images = sorted(image_difficulties)
    random.Random(seed).shuffle(images)
    images.sort(key=lambda i: -len(image_difficulties[i]))  # stable: ties keep the shuffled order
    out: dict[str, str] = {}
    for image in images:
        counts = Counter(image_difficulties[image])
        best, best_key = None, None
        for s in names:
            if fractions[s] == 0:
                continue
            # Change in the chi-square-like gap if the image went to s (other splits are unaffected);
            # dividing by the target keeps rare difficulties as balanced as common ones.
            gain = sum(
                ((current[s][d] + c - target[s][d]) ** 2 - (current[s][d] - target[s][d]) ** 2)
                / max(target[s][d], 1e-9)
                for d, c in counts.items()
            )
            # Tie-break: the split furthest below its overall share, then the declared order.
            fill = size[s] / (fractions[s] * n_questions)
            key = (gain, fill)
            if best_key is None or key < best_key:
                best, best_key = s, key
        assert best is not None
        out[image] = best
        current[best].update(counts)
        size[best] += sum(counts.values())
    return out


def split_rows(
    rows: Sequence[R],
    *,
    image_of,
    difficulty_of,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, list[R]]:
    """Group ``rows`` into splits by image (row order is kept within each split)."""
    per_image: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        per_image[image_of(row)].append(difficulty_of(row))
    assignment = assign_images(per_image, fractions, seed)
    out: dict[str, list[R]] = {s: [] for s in fractions}
    for row in rows:
        out[assignment[image_of(row)]].append(row)
    return out
