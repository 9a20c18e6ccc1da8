"""What a model run reports besides its scores: the predictions.jsonl rows of its stored answers, and
results.json's ``model`` and ``config`` blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from vlmbench.evaluation.store import CachedPrediction, RunKey
from vlmbench.plugin.model import Model
from vlmbench.plugin.request import Request
from vlmbench.scoring.records import scored_answer
from vlmbench.tasks.dataset import Sample
from vlmbench.tasks.normalize import vqa_normalize

if TYPE_CHECKING:
    from vlmbench.evaluation.plan import RunPlan


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
