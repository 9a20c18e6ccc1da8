"""A folder of nine hand-built runs of one task in the study's shape: every metric column, five difficulty
levels, long labels, models of equal size and like scores (their points would collide), a blind
baseline, a model of unknown size, one whose size is only the registered one, and answers holding
control characters, NUL bytes, markup, dollar signs and characters no font has."""

from __future__ import annotations

import json
import random
from pathlib import Path

TASK = {"name": "studylike", "version": "1", "hash": "fedcba9876543210", "split": "test"}
LEVELS = (0, 1, 2, 3, 5)
STUDY_METRICS = (
    "bertscore_precision", "bertscore_recall", "bertscore_f1", "bartscore_f", "sbert", "meteor",
    "exact_match", "average_mark", "wups_0.0", "wups_0.9", "wups_weighted",
)  # fmt: skip
# (label, parameters, registered size): long labels as a user's own checkpoints give them.
MODELS = [
    ("contrastive-ranker-with-a-long-name[pretrained=ViT-B-32-quickgelu-laion400m_e32]", 151_000_000, None),
    ("region-feature-vqa-model-multitask-twelve-in-one[checkpoint=multi_task_model.bin]", 268_000_000, None),
    ("encoder-decoder-vqa-base-model[pretrained=org/encoder-decoder-vqa-base-finetuned]", 385_000_000, None),
    ("encoder-decoder-vqa-base-model-lora[adapter=sweeps/study/r16-query_value_out]", 385_000_000, None),
    ("unified-seq2seq-model-base[pretrained=org/unified-seq2seq-base-checkpoint-000123]", None, "182M"),
    ("frozen-encoder-querying-transformer-opt[pretrained=org/querying-opt-2.7b]", 3_900_000_000, None),
    ("instruct-chat-model-with-native-resolution[pretrained=org/chat-3b-instruct]", 3_800_000_000, None),
    ("small-instruct-chat-model-with-image-splitting[pretrained=org/small-500m]", None, None),
    ("blind-most-frequent-answer-baseline-of-similar-questions[k=10]", 0, None),
]
ODD_ANSWERS = ["nul\x00byte", "bell\x07\x1b[31mred", "<b>bold</b> & co", "$5 and $6", "中文", "🙂 smile",
               "a-very-long-answer-that-no-figure-should-ever-show-in-full-because-it-is-long"]  # fmt: skip


def write_study_runs(root: Path, n_samples: int = 60) -> list[Path]:
    """Nine runs of :data:`TASK` under ``root``; returns their folders."""
    folders = []
    for i, (label, parameters, registered) in enumerate(MODELS):
        rng = random.Random(i)
        quality = 0.35 + 0.04 * (i % 4)  # models 3 and 7 score alike at equal size: their points collide
        folder = root / TASK["name"] / f"model{i}-{i:08x}"
        folder.mkdir(parents=True)
        rows, by_level = [], {}
        for s in range(n_samples):
            level = LEVELS[s % len(LEVELS)]
            ref = f"answer{s % 7}"
            right = rng.random() < quality
            answer = (
                ref if right else (ODD_ANSWERS[s % len(ODD_ANSWERS)] if i % 2 else f"answer{(s + 1) % 7}")
            )
            rows.append({"sample_id": f"s{s:03d}", "question": f"Question {s}?", "references": [ref],
                         "difficulty": level, "status": "ok", "raw": answer, "answer": answer,
                         "scores": {"exact_match": float(right)}})  # fmt: skip
            by_level.setdefault(level, []).append(float(right))
        with open(folder / "predictions.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        metrics = {name: _metric(quality + 0.3 * (j % 3) / 3, rng) for j, name in enumerate(STUDY_METRICS)}
        model = {"name": label.split("[")[0], "label": label, "fingerprint": f"{i:016x}",
                 "parameters": parameters}  # fmt: skip
        if registered:
            model["parameters_registered"] = registered
        results = {
            "schema": "vlmbench.results/1",
            "status": "ok",
            "task": {**TASK, "n_samples": n_samples, "n_scored": n_samples},
            "model": model,
            "notes": ["answers by ranking candidates (train answers), as it cannot generate"]
            if i == 0
            else [],
            "metrics": metrics,
            "by_difficulty": {
                str(level): {
                    "n": len(v),
                    "weight": float(level + 1),
                    "metrics": {
                        name: _metric(sum(v) / len(v) + 0.05 * j / 11, rng, len(v))
                        for j, name in enumerate(STUDY_METRICS)
                    },
                }
                for level, v in sorted(by_level.items())
            },
            "skipped_metrics": {},
            "config": {"seed": 0},
            "timing": {"cached_rerun": True} if registered else {},
            "provenance": {
                "vlmbench_version": "0.1.0",
                "created": f"2025-01-0{i + 1}T10:00:00+00:00",
                "command": f"vlmbench run -m model{i} -t studylike",
            },
        }
        (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
        folders.append(folder)
    return folders


def _metric(value: float, rng: random.Random, n: int = 60) -> dict:
    value = min(1.0, max(0.0, value + rng.uniform(-0.02, 0.02)))
    half = 0.05 + rng.uniform(0, 0.03)
    return {"value": value, "ci95": [max(0.0, value - half), min(1.0, value + half)], "n": n,
            "higher_is_better": True}  # fmt: skip
