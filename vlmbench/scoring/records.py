"""Scoring predictions.jsonl rows: the answer each raw output is scored as, the per-sample scores written
into the rows, and the blocks of results.json that come from scoring.

Shared by ``run`` (:mod:`vlmbench.evaluation.runner`) and ``score`` (:mod:`vlmbench.scoring.rescore`), so
that a run and a re-scoring of it write the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlmbench.plugin.metric import Metric
from vlmbench.scoring.scorer import ScoredSet, score
from vlmbench.tasks.filters import apply_filters


def scored_answer(raw: str, filters: Sequence[str]) -> str:
    """The answer scored for a raw output: the filters, then surrounding whitespace stripped. Reference
    cells are stripped when read, so both sides are alike even with no filters: whitespace-sensitive
    metrics (BARTScore) would otherwise score ``" red"`` against ``"red"``."""
    return apply_filters(raw, filters).strip()


def score_records(records: list[dict], metrics: Sequence[Metric], **options: Any) -> ScoredSet:
    """Score the ``ok`` rows of ``records`` and write each row's per-sample scores into it. ``options``
    are :func:`~vlmbench.scoring.scorer.score`'s: weights, bootstrap samples, seed, score cache, progress."""
    ok = [r for r in records if r["status"] == "ok"]
    scored = score(
        metrics,
        [r["answer"] or "" for r in ok],
        [r["references"] for r in ok],
        [r.get("difficulty") for r in ok],
        **options,
    )
    for row in records:
        row["scores"] = {}
    for col, values in scored.sample_scores.items():
        for row, value in zip(ok, values, strict=True):
            row["scores"][col] = float(value)
    return scored


def metric_blocks(scored: ScoredSet) -> dict[str, Any]:
    """The results.json keys that come from scoring."""
    return {
        "metrics": scored.metrics,
        "by_difficulty": scored.by_difficulty,
        "metric_details": scored.details,
        "skipped_metrics": scored.skipped,
    }


def merge_metric_blocks(earlier: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` metric blocks laid over an earlier results.json: metrics scored now replace their earlier
    values, the others stay. A metric that could not be scored now keeps its earlier value (and says so
    in its details) rather than losing an hour of encoder work to a missing asset."""
    old_details = earlier.get("metric_details") or {}
    failed_now = {name for name in new["skipped_metrics"] if name in old_details}
    skipped = {
        k: v for k, v in (earlier.get("skipped_metrics") or {}).items() if k not in new["metric_details"]
    }
    skipped.update({k: v for k, v in new["skipped_metrics"].items() if k not in failed_now})
    details = {**old_details, **new["metric_details"]}
    for name in failed_now:
        details[name] = {**details[name], "kept_from_earlier_scoring": new["skipped_metrics"][name]}
    by_level = {}
    for level in {*(earlier.get("by_difficulty") or {}), *new["by_difficulty"]}:
        before = (earlier.get("by_difficulty") or {}).get(level) or {}
        after = new["by_difficulty"].get(level) or {}
        by_level[level] = {
            **before,
            **after,
            "metrics": {**(before.get("metrics") or {}), **(after.get("metrics") or {})},
        }
    return {
        "metrics": {**(earlier.get("metrics") or {}), **new["metrics"]},
        "by_difficulty": dict(sorted(by_level.items())),
        "metric_details": details,
        "skipped_metrics": skipped,
    }
