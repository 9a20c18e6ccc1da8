"""Hand-built run folders (results.json + predictions.jsonl) with known per-sample outcomes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

WEIGHTS = {0: 1.0, 1: 2.0, 2: 4.0, 3: 8.0}
TASK = {"name": "handmade", "version": "1", "hash": "0123456789abcdef", "split": None}


@dataclass
class Sample:
    sample_id: str
    difficulty: int | None
    question: str
    references: list[str]


def samples(n: int = 40) -> list[Sample]:
    """``n`` samples cycling through difficulties 0-3, reference answer ``ref<i>``."""
    return [Sample(f"s{i:02d}", i % 4, f"Question number {i}?", [f"ref{i}"]) for i in range(n)]


def write_run(
    folder: Path,
    model: str,
    items: list[Sample],
    correct: list[bool],
    *,
    skipped: set[str] = frozenset(),
    task: dict | None = None,
    parameters: int | None = None,
    wrong_answer: str = "wrong",
) -> Path:
    """A run whose sample i is right (answer = its reference) or wrong (``wrong_answer``); samples in
    ``skipped`` have status skipped. Scores: exact_match (higher is better), error_rate (lower is
    better) and the corpus metric average_mark with ``WEIGHTS``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for s, ok in zip(items, correct, strict=True):
        row = {
            "sample_id": s.sample_id,
            "question": s.question,
            "references": s.references,
            "difficulty": s.difficulty,
        }
        if s.sample_id in skipped:
            row.update(status="skipped", raw=None, answer=None, scores={})
        else:
            answer = s.references[0] if ok else wrong_answer
            row.update(
                status="ok",
                raw=answer,
                answer=answer,
                scores={"exact_match": float(ok), "error_rate": float(not ok)},
            )
        rows.append(row)
    with open(folder / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    scored = [r for r in rows if r["status"] == "ok"]
    em = sum(r["scores"]["exact_match"] for r in scored) / len(scored)
    am_num = sum(r["scores"]["exact_match"] * WEIGHTS[r["difficulty"]] for r in scored)
    am = am_num / sum(WEIGHTS[r["difficulty"]] for r in scored)
    results = {
        "schema": "vlmbench.results/1",
        "status": "ok",
        "task": {**(task or TASK), "n_samples": len(rows), "n_scored": len(scored)},
        "model": {"name": model, "label": model, "fingerprint": f"{model}-fp-0000", "parameters": parameters},
        "metrics": {
            "exact_match": {
                "value": em,
                "ci95": [em - 0.1, em + 0.1],
                "n": len(scored),
                "higher_is_better": True,
            },
            "error_rate": {"value": 1 - em, "ci95": None, "n": len(scored), "higher_is_better": False},
            "average_mark": {"value": am, "ci95": None, "n": len(scored), "higher_is_better": True},
        },
        "by_difficulty": {},
        "metric_details": {"average_mark": {"options": {"correctness": "exact_match"}}},
        "config": {"difficulty_weights": {str(k): v for k, v in WEIGHTS.items()}, "seed": 0},
    }
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return folder
