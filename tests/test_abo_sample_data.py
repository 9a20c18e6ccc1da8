"""Integrity checks for the bundled `abo_sample` task data (CSV, images, data card)."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

TASK_DIR = Path(__file__).resolve().parents[1] / "tasks" / "abo_sample"
CSV_PATH = TASK_DIR / "abo_sample.csv"
IMAGE_ROOT = TASK_DIR / "images"
DATACARD = TASK_DIR / "DATACARD.md"

HEADER = ["image_id", "path", "question", "answer", "difficulty"]
LEVELS = {0, 1, 2, 3, 5}


def _read_rows() -> list[dict[str, str]]:
    with CSV_PATH.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return _read_rows()


def test_header_is_exact() -> None:
    with CSV_PATH.open(newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == HEADER


def test_every_row_is_complete(rows: list[dict[str, str]]) -> None:
    for row in rows:
        # DictReader puts surplus fields under None and fills missing ones with None.
        assert None not in row, row
        assert all(value is not None and value.strip() == value and value for value in row.values()), row


def test_paths_exist_and_stay_under_image_root(rows: list[dict[str, str]]) -> None:
    root = IMAGE_ROOT.resolve()
    for path in {row["path"] for row in rows}:
        assert re.fullmatch(r"[0-9a-f]{2}/[0-9a-f]{8}\.jpg", path), path
        full = (IMAGE_ROOT / path).resolve()
        assert full.is_relative_to(root), path
        assert full.is_file(), path


def test_image_id_is_file_stem(rows: list[dict[str, str]]) -> None:
    for row in rows:
        assert row["image_id"] == Path(row["path"]).stem
        # The two-character folder is the stem's prefix, as in ABO's image layout.
        assert row["path"].startswith(row["image_id"][:2] + "/")


def test_every_image_opens(rows: list[dict[str, str]]) -> None:
    for path in sorted({row["path"] for row in rows}):
        with Image.open(IMAGE_ROOT / path) as im:
            im.load()
            assert im.format == "JPEG", path
            assert im.size == (256, 256), path


def test_every_image_file_is_referenced(rows: list[dict[str, str]]) -> None:
    on_disk = {p.relative_to(IMAGE_ROOT).as_posix() for p in IMAGE_ROOT.rglob("*") if p.is_file()}
    assert on_disk == {row["path"] for row in rows}


def test_answers_are_one_lowercase_word(rows: list[dict[str, str]]) -> None:
    for row in rows:
        answer = row["answer"]
        assert re.fullmatch(r"\S+", answer), row
        assert answer == answer.lower(), row


def test_difficulty_levels(rows: list[dict[str, str]]) -> None:
    for row in rows:
        assert re.fullmatch(r"\d", row["difficulty"]), row
        assert int(row["difficulty"]) in LEVELS, row


def test_answer_not_in_question(rows: list[dict[str, str]]) -> None:
    for row in rows:
        # A whole-word match: "2" may not stand alone in the question, but "12" does not contain it.
        pattern = r"(?<![\w-])" + re.escape(row["answer"].lower()) + r"(?![\w-])"
        assert not re.search(pattern, row["question"].lower()), row


def test_questions_are_questions(rows: list[dict[str, str]]) -> None:
    for row in rows:
        assert row["question"].endswith("?"), row
        assert row["question"][0].isupper(), row


def test_image_count(rows: list[dict[str, str]]) -> None:
    assert 40 <= len({row["path"] for row in rows}) <= 60


def test_questions_per_image(rows: list[dict[str, str]]) -> None:
    per_image = Counter(row["path"] for row in rows)
    assert all(3 <= n <= 5 for n in per_image.values()), per_image


def test_rows_grouped_by_image(rows: list[dict[str, str]]) -> None:
    order = [row["path"] for row in rows]
    runs = [path for i, path in enumerate(order) if i == 0 or path != order[i - 1]]
    assert len(runs) == len(set(runs)), "an image's rows are split into several blocks"


def test_no_duplicate_questions(rows: list[dict[str, str]]) -> None:
    pairs = Counter((row["path"], row["question"].strip().lower()) for row in rows)
    assert [pair for pair, n in pairs.items() if n > 1] == []


def test_yes_no_share_is_small_and_balanced(rows: list[dict[str, str]]) -> None:
    answers = Counter(row["answer"] for row in rows)
    yes, no = answers["yes"], answers["no"]
    assert yes + no <= 0.15 * len(rows)
    assert abs(yes - no) <= 2


def test_datacard_figures_match_csv(rows: list[dict[str, str]]) -> None:
    card = DATACARD.read_text(encoding="utf-8")
    images = re.search(r"\*\*(\d+) images\*\*", card)
    questions = re.search(r"\*\*(\d+) questions\*\*", card)
    assert images and int(images.group(1)) == len({row["path"] for row in rows})
    assert questions and int(questions.group(1)) == len(rows)
    # Rows of the difficulty table: | level | meaning | questions | share |
    stated = {
        int(level): int(count)
        for level, count in re.findall(r"^\| (\d) \| [^|]+ \| (\d+) \| [\d.]+ % \|$", card, flags=re.M)
    }
    actual = Counter(int(row["difficulty"]) for row in rows)
    assert stated == {level: actual[level] for level in LEVELS}
