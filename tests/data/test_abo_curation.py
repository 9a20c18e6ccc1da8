"""Validation rules, the curation report and the image-level stratified split."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from vlmbench.errors import VlmbenchError
from vlmbench.plugin.generator import QAItem
from vlmbench_plugins.datasets.abo import curation, splits
from vlmbench_plugins.datasets.abo.curation import Candidate, ValidationConfig, validate


def cand(question, answer, difficulty=0, image="img1", generator="g") -> Candidate:
    return Candidate(
        QAItem(question, answer, difficulty, generator=generator), image_id=image, path=f"{image}.jpg"
    )


@pytest.mark.parametrize(
    ("question", "answer", "difficulty", "reason"),
    [
        ("", "Wood", 0, "empty_question"),
        ("What is it made of?", " ", 0, "empty_answer"),
        ("What is it made of?", "...", 0, "empty_answer"),
        ("What is it made of?", "Solid wood", 0, "not_single_word"),
        ("What type of shirt is it?", "t-shirt", 0, "not_single_word"),  # VQA normalisation splits hyphens
        ("Is it wooden?", "Yes", 0, "yes_no"),
        ("Is it wooden?", "no.", 0, "yes_no"),
        ("What is it made of?", "Wood", 4, "bad_difficulty"),
        ("What is it made of?", "Wood", None, "bad_difficulty"),
        ("What is it made of?", "Wood", True, "bad_difficulty"),
        ("What colour is the red chair?", "Red", 0, "answer_in_question"),
        ("How many legs? Two or four?", "four", 0, "answer_in_question"),
        ("How many legs does it have?", "Four", 0, None),
        ("What is it made of?", '"The Oak."', 2, None),  # article and punctuation go: one word
        ("What colour is the reddish chair?", "Red", 0, None),  # whole words only
    ],
)
def test_rules(question, answer, difficulty, reason):
    assert curation.check(QAItem(question, answer, difficulty), ValidationConfig()) == reason


def test_yes_no_policy_allow():
    assert curation.check(QAItem("Is it wooden?", "Yes", 0), ValidationConfig(yes_no="allow")) is None
    with pytest.raises(ValueError):
        ValidationConfig(yes_no="sometimes")


def test_validate_cleans_deduplicates_and_counts():
    result = validate([
        cand("  What is it  made of? ", " Wood. ", 2),
        cand("what is it made of", "Metal", 2, generator="h"),  # same question, same image: duplicate
        cand("What is it made of?", "Metal", 2, image="img2"),  # another image: kept
        cand("Is it big?", "yes", 0),
        cand("What size?", "very big", 0, generator="h"),
    ])  # fmt: skip
    assert [(a.image_id, a.question, a.answer) for a in result.accepted] == [
        ("img1", "What is it made of?", "Wood"),
        ("img2", "What is it made of?", "Metal"),
    ]
    assert result.rejected == Counter(
        {("h", "duplicate"): 1, ("g", "yes_no"): 1, ("h", "not_single_word"): 1}
    )
    assert result.examples["yes_no"][0]["question"] == "Is it big?"


def test_report_counts_and_vocabulary(tmp_path: Path):
    result = validate([
        cand("Q1?", "Wood", 0), cand("Q2?", "wood", 1), cand("Q3?", "Red", 1, generator="h"),
        cand("Q4?", "two words", 0), cand("Q1?", "Oak", 0),
    ])  # fmt: skip
    parts = {"train": result.accepted[:2], "val": result.accepted[2:], "test": []}
    generation = {"h": {"listings": 1, "unparsed": {"malformed_reply": 2}}}
    report = curation.build_report(result, splits=parts, generation=generation, reading={"lines": 9})
    assert report["accepted"] == 3 and report["images"] == 1
    assert report["per_difficulty"] == {"0": 1, "1": 2}
    assert report["per_generator"]["g"] == {"accepted": 2, "per_difficulty": {"0": 1, "1": 1}}
    assert report["rejected"]["by_reason"] == {"duplicate": 1, "malformed_reply": 2, "not_single_word": 1}
    assert report["rejected"]["by_generator"]["h"] == {"malformed_reply": 2}
    assert report["rejected"]["total"] == 4
    assert report["answers"]["vocabulary_size"] == 2
    assert report["answers"]["top"][0] == {"answer": "wood", "count": 2}
    assert report["splits"]["val"] == {"questions": 1, "images": 1, "per_difficulty": {"1": 1}}
    json_path, md_path = curation.write_report(report, tmp_path)
    assert json.loads(json_path.read_text()) == report
    text = md_path.read_text()
    assert "| g | duplicate | 1 |" in text and "| wood | 2 |" in text and "Amazon.com" in text


def test_report_shows_rejection_examples_per_reason(tmp_path: Path):
    result = validate([
        cand("What is it made of?", "Solid wood", 2), cand("Is it big?", "Yes", 0),
        cand("What colour is the red chair?", "Red", 0, generator="h"), cand("What shape?", "Round", 0),
    ])  # fmt: skip
    replies = {"malformed_reply": [{"listing": "B0X@amazon.in", "generator": "h",
                                    "reply": "Sorry | I cannot | help\nwith this"}]}  # fmt: skip
    report = curation.build_report(result, reply_examples=replies)
    examples = report["rejected"]["examples"]
    assert sorted(examples) == ["answer_in_question", "malformed_reply", "not_single_word", "yes_no"]
    assert examples["malformed_reply"] == replies["malformed_reply"]
    _, md_path = curation.write_report(report, tmp_path)
    text = md_path.read_text()
    assert "## Rejected, examples" in text
    assert "### not_single_word" in text and "| g | img1 | What is it made of? | Solid wood | 2 |" in text
    assert "### yes_no" in text and "| g | img1 | Is it big? | Yes | 0 |" in text
    # A reply is one table cell: its pipes escaped, its line breaks marked.
    assert "| h | B0X@amazon.in | Sorry \\| I cannot \\| help ⏎ with this |" in text


def test_report_draws_a_seeded_sample_of_accepted_rows_for_a_manual_check(tmp_path: Path):
    result = validate([cand(f"Question {i}?", f"answer{i}", i % 4, image=f"img{i % 7}") for i in range(60)])
    report = curation.build_report(result, sample_seed=3)
    sample = report["quality_sample"]
    assert sample["seed"] == 3 and sample["of"] == 60 and len(sample["rows"]) == curation.QUALITY_SAMPLE == 20
    accepted = [(a.question, a.answer) for a in result.accepted]
    picked = [(r["question"], r["answer"]) for r in sample["rows"]]
    assert set(picked) <= set(accepted) and len(set(picked)) == 20
    assert picked == sorted(picked, key=accepted.index)  # shown in the accepted order
    assert curation.build_report(result, sample_seed=3)["quality_sample"] == sample  # the same draw
    assert curation.build_report(result, sample_seed=4)["quality_sample"]["rows"] != sample["rows"]
    assert picked != accepted[:20]  # random, not the first rows
    few = validate([cand("What shape?", "Round", 0)])
    assert len(curation.build_report(few)["quality_sample"]["rows"]) == 1
    _, md_path = curation.write_report(report, tmp_path)
    text = md_path.read_text()
    assert "## Sample for a manual check" in text and "seed 3" in text
    rows = [line for line in text.splitlines() if line.startswith("| img") and line.endswith("|  |")]
    assert len(rows) == 20


def synthetic_images(n_images: int, seed: int = 1) -> dict[str, list[int]]:
    rng = random.Random(seed)
    levels = [0, 0, 0, 1, 1, 2, 3, 5]
    return {f"img{i:04d}": [rng.choice(levels) for _ in range(rng.randint(1, 6))] for i in range(n_images)}


def worst_gap(images: dict[str, list[int]], assignment: dict[str, str]) -> float:
    """The largest difference between a split's share of a difficulty and the split's fraction."""
    totals = Counter(d for diffs in images.values() for d in diffs)
    worst = 0.0
    for split, fraction in splits.DEFAULT_FRACTIONS.items():
        counts = Counter(d for img, diffs in images.items() if assignment[img] == split for d in diffs)
        worst = max(worst, *(abs(counts[level] / total - fraction) for level, total in totals.items()))
    return worst


def test_split_is_by_image_stratified_and_seeded():
    images = synthetic_images(600)
    a = splits.assign_images(images, seed=7)
    assert set(a) == set(images) and set(a.values()) == {"train", "val", "test"}
    assert a == splits.assign_images(images, seed=7)
    assert a != splits.assign_images(images, seed=8)
    assert worst_gap(images, a) < 0.01  # each difficulty is shared out like the whole


def test_split_balances_rare_difficulties_too():
    # Few kinds of images, as from a template generator: a rare difficulty (5) must not drift.
    kinds = [[0, 0, 0, 1, 1], [0, 1, 2, 3, 3], [2, 3], [5]]
    images = {
        f"img{i:04d}": kinds[0 if i < 1000 else 1 if i < 1600 else 2 if i < 1950 else 3] for i in range(2000)
    }
    assert worst_gap(images, splits.assign_images(images, seed=0)) < 0.01


def test_split_rows_keeps_every_image_in_one_split():
    images = synthetic_images(50)
    rows = [(img, d) for img, diffs in images.items() for d in diffs]
    parts = splits.split_rows(rows, image_of=lambda r: r[0], difficulty_of=lambda r: r[1], seed=3)
    assert sum(len(p) for p in parts.values()) == len(rows)
    owners = {}
    for name, part in parts.items():
        for img, _ in part:
            assert owners.setdefault(img, name) == name
    assert all(parts.values())  # even a small set gets images in every split


def test_split_fraction_checks():
    assert splits.parse_fractions("0.7,0.15,0.15") == {"train": 0.7, "val": 0.15, "test": 0.15}
    for bad in ("0.8,0.1", "a,b,c", "0.8,0.3,0.1", "1.2,-0.1,-0.1"):
        with pytest.raises(VlmbenchError):
            splits.parse_fractions(bad)
    only_train = splits.assign_images(synthetic_images(10), {"train": 1.0, "val": 0.0, "test": 0.0})
    assert set(only_train.values()) == {"train"}
