"""What a run reports: predictions.jsonl rows, their scores, and the blocks of results.json.

Shared by ``run`` (:mod:`vlmbench.runner`) and ``score`` (:mod:`vlmbench.rescore`), so that a run and
a re-scoring of it write the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vlmbench.dataset import Sample
from vlmbench.filters import apply_filters
from vlmbench.metric import Metric
from vlmbench.model import Model
from vlmbench.normalize import vqa_normalize
from vlmbench.request import Request
from vlmbench.scoring import ScoredSet, score
from vlmbench.store import CachedPrediction, RunKey

if TYPE_CHECKING:
    from vlmbench.plan import RunPlan


def scored_answer(raw: str, filters: Sequence[str]) -> str:
    """The answer scored for a raw output: the filters, then surrounding whitespace stripped. Reference
    cells are stripped when read, so both sides are alike even with no filters: whitespace-sensitive
    metrics (BARTScore) would otherwise score ``" red"`` against ``"red"``."""
    return apply_filters(raw, filters).strip()


def prediction_records(
    samples: list[Sample], requests: list[Request], cached: dict[str, CachedPrediction], filters: list[str]
) -> list[dict]:
    """One predictions.jsonl row per sample: the stored raw answer, the filtered answer, or ``skipped``."""
    rows = []
    for sample, request in zip(samples, requests, strict=True):
        pred = cached.get(sample.id)
        row: dict[str, Any] = {
            "sample_id": sample.id,
            "image_id": sample.image_id,
            "image": sample.image,
            "image_sha256": pred.image_sha256 if pred else None,
            "question": sample.question,
            "references": list(sample.answers),
            "difficulty": sample.difficulty,
            "prompt": request.prompt,
        }
        if pred is None:
            row.update(status="skipped", raw=None, answer=None, scores={})
        else:
            row.update(status="ok", raw=pred.raw, answer=scored_answer(pred.raw, filters), scores={})
            if pred.scores is not None:
                top = np.argsort(pred.scores)[::-1][:5]
                row["top_candidates"] = [[request.candidates[i], pred.scores[i]] for i in top]
        rows.append(row)
    return rows


def model_block(
    model: Model,
    key: RunKey,
    samples: list[Sample] | None = None,
    label: str | None = None,
    stored: dict[str, Any] | None = None,
) -> dict:
    """results.json's ``model``: what was loaded, its label and fingerprint, and for closed-vocabulary
    models the share of references they cannot produce at all. ``stored`` is what the model reported
    when it last computed these answers: it fills in what an unloaded model cannot know (its exact
    parameter count, the checkpoint commit) when every answer came from the cache."""
    described = model.describe()
    for name, value in (stored or {}).items():
        if described.get(name) is None and value is not None:
            described[name] = value
    if described.get("parameters") is None and model.entry.parameters:
        described["parameters_registered"] = model.entry.parameters
    block = {
        **described,
        "label": label or model.label(),
        "fingerprint": key.model_fp,
        "identity": model.identity(),
    }
    vocabulary = model.answer_vocabulary() if samples else None
    if vocabulary is not None:
        known = {vqa_normalize(a) for a in vocabulary}
        outside = sum(all(vqa_normalize(a) not in known for a in s.answers) for s in samples)
        block["vocabulary"] = {"size": len(known), "reference_outside_share": outside / len(samples)}
    return block


def config_block(plan: RunPlan, world_size: int = 1, workers: tuple[int, str] | None = None) -> dict:
    """results.json's ``config``: the options and task settings the answers and scores depend on, and
    how the run was executed (``workers``: the DataLoader worker count it used and why)."""
    cfg, spec = plan.cfg, plan.task.spec
    num_workers, reason = workers or (
        cfg.num_workers,
        "given" if cfg.num_workers is not None else "not started",
    )
    return {
        "batch_size": plan.batch_size,
        "batch_size_requested": cfg.batch_size,
        "limit": cfg.limit,
        "seed": cfg.seed,
        "device": plan.device,
        "dtype": cfg.dtype,
        "num_workers": num_workers,
        "num_workers_reason": reason,
        "world_size": world_size,
        "on_bad_sample": cfg.on_bad_sample,
        "generation": plan.generation.as_kwargs(),
        "gen_kwargs": cfg.gen_kwargs,
        "request_type": plan.requests[0].kind if plan.requests else spec.request_type,
        "filters": spec.filters,
        "difficulty_weights": {str(k): v for k, v in spec.difficulty_weights.items()},
        "bootstrap_samples": spec.bootstrap_samples,
    }


def score_records(
    records: list[dict],
    metrics: Sequence[Metric],
    *,
    weights: dict[int, float],
    bootstrap_samples: int,
    seed: int,
) -> ScoredSet:
    """Score the ``ok`` rows of ``records`` and write each row's per-sample scores into it."""
    ok = [r for r in records if r["status"] == "ok"]
    scored = score(
        metrics,
        [r["answer"] or "" for r in ok],
        [r["references"] for r in ok],
        [r.get("difficulty") for r in ok],
        weights=weights,
        bootstrap_samples=bootstrap_samples,
        seed=seed,
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
