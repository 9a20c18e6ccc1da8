"""Scoring stored answers: metric set-up, unique-pair batching, per-sample scores and aggregates.

Used by ``run`` after the model has answered and by ``score`` for stored or external predictions.
A metric that cannot load or fails is reported as skipped with its reason; it never costs the
predictions.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmbench.errors import AssetMissingError, VlmbenchError
from vlmbench.plugin.loading import Plugins
from vlmbench.plugin.metric import CorpusMetric, Metric, MetricContext, SampleMetric, ScoreTable
from vlmbench.scoring.stats import mean_with_ci, statistic_with_ci
from vlmbench.tasks.spec import MetricSpec

UNKNOWN_DIFFICULTY = -1


@dataclass
class ScoredSet:
    """Per-sample scores (aligned with the input order) and their aggregates."""

    sample_scores: dict[str, np.ndarray]
    metrics: dict[str, dict]
    by_difficulty: dict[str, dict]
    details: dict[str, dict]
    skipped: dict[str, str] = field(default_factory=dict)
    #: Counts worth a note in results.json, e.g. ``left_out_of_average_mark``.
    warnings: dict[str, int] = field(default_factory=dict)


def build_metrics(specs: Sequence[MetricSpec], plugins: Plugins, context: MetricContext) -> list[Metric]:
    """Instantiate metrics (validating options), adding the sample metrics corpus metrics depend on."""
    metrics: list[Metric] = [plugins.create_metric(spec.name, spec.options, context) for spec in specs]
    produced = {col for m in metrics if isinstance(m, SampleMetric) for col in m.outputs}
    for m in list(metrics):
        if isinstance(m, CorpusMetric):
            for col in m.required_columns():
                if col in produced:
                    continue
                providers = [e for e in plugins.metrics if e.level == "sample" and col in e.outputs]
                if not providers:
                    raise VlmbenchError(
                        f"metric {m.name!r} needs the score {col!r}, which no installed metric produces"
                    )
                entry = providers[0]
                metrics.insert(0, plugins.create_metric(entry.name, {}, context))
                produced.update(entry.outputs)
    return metrics


def score(
    metrics: Sequence[Metric],
    answers: Sequence[str],
    references: Sequence[Sequence[str]],
    difficulties: Sequence[int | None],
    *,
    weights: dict[int, float],
    bootstrap_samples: int,
    seed: int,
) -> ScoredSet:
    n = len(answers)
    difficulty = np.array([UNKNOWN_DIFFICULTY if d is None else d for d in difficulties], dtype=np.int64)
    columns: dict[str, np.ndarray] = {}
    details: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    notes: dict[str, int] = {}
    higher: dict[str, bool] = {}

    for metric in metrics:
        if not isinstance(metric, SampleMetric):
            continue
        try:
            metric.setup()
            columns.update(_score_unique_pairs(metric, answers, references))
            details[metric.name] = metric.describe()
            higher.update({c: metric.entry.higher_is_better for c in metric.outputs})
        except Exception as exc:  # a broken metric must not cost the run
            skipped[metric.name] = _reason(exc)

    table = ScoreTable(columns, difficulty)
    results: dict[str, dict] = {}
    by_level: dict[str, dict] = {}
    levels = sorted(set(difficulty.tolist()))
    level_rows = {lvl: np.flatnonzero(difficulty == lvl) for lvl in levels}
    for lvl in levels:
        by_level[_level_name(lvl)] = {
            "n": len(level_rows[lvl]),
            "weight": weights.get(lvl) if lvl != UNKNOWN_DIFFICULTY else None,
            "metrics": {},
        }

    for col, values in columns.items():
        results[col] = {**mean_with_ci(values, bootstrap_samples, seed), "higher_is_better": higher[col]}
        for lvl, rows in level_rows.items():
            by_level[_level_name(lvl)]["metrics"][col] = mean_with_ci(values[rows], bootstrap_samples, seed)

    for metric in metrics:
        if not isinstance(metric, CorpusMetric):
            continue
        missing = [c for c in metric.required_columns() if c not in columns]
        if missing:
            skipped[metric.name] = f"needs {', '.join(missing)}, which could not be computed"
            continue
        try:
            metric.setup()

            def stat(index: np.ndarray, _m: CorpusMetric = metric, _t: ScoreTable = table) -> float:
                return _m.compute(_t.take(index))

            counts = metric.report(table)
            results[metric.name] = {
                **statistic_with_ci(stat, n, bootstrap_samples, seed),
                **counts,
                "higher_is_better": metric.entry.higher_is_better,
            }
            if metric.by_difficulty:
                for lvl, rows in level_rows.items():
                    sub = table.take(rows)
                    by_level[_level_name(lvl)]["metrics"][metric.name] = statistic_with_ci(
                        lambda i, _m=metric, _s=sub: _m.compute(_s.take(i)),
                        len(rows),
                        bootstrap_samples,
                        seed,
                    )
            details[metric.name] = metric.describe()
        except Exception as exc:
            skipped[metric.name] = _reason(exc)
            continue
        left_out = counts.get("n_left_out", 0)
        if left_out:  # outside the try: a warning turned into an error must not pass for a broken metric
            notes[f"left_out_of_{metric.name}"] = left_out
            warnings.warn(
                f"{metric.name}: {left_out} of {n} samples left out ({_left_out_detail(counts)})",
                stacklevel=2,
            )

    return ScoredSet(columns, results, by_level, details, skipped, notes)


def _left_out_detail(counts: dict[str, Any]) -> str:
    reason = counts.get("left_out_reason", "not counted")
    by_level = counts.get("left_out_by_level") or {}
    if by_level:
        reason += ": " + ", ".join(f"{k} at level {level}" for level, k in by_level.items())
    return reason


def _score_unique_pairs(
    metric: SampleMetric, answers: Sequence[str], references: Sequence[Sequence[str]]
) -> dict[str, np.ndarray]:
    """Score each distinct (answer, reference) pair once; a sample gets its best reference's score."""
    pair_index: dict[tuple[str, str], int] = {}
    width = max((len(r) for r in references), default=1) or 1
    sample_pairs = np.full((len(answers), width), -1, dtype=np.int64)
    for i, (answer, refs) in enumerate(zip(answers, references, strict=True)):
        for j, ref in enumerate(refs):
            sample_pairs[i, j] = pair_index.setdefault((answer, ref), len(pair_index))
    pairs = list(pair_index)
    unique_scores = {col: np.empty(len(pairs), dtype=np.float64) for col in metric.outputs}
    for start in range(0, len(pairs), metric.batch_size):
        chunk = pairs[start : start + metric.batch_size]
        out = metric.score([p for p, _ in chunk], [r for _, r in chunk])
        for col in metric.outputs:
            values = np.asarray(out[col], dtype=np.float64)
            if values.shape != (len(chunk),):
                raise VlmbenchError(
                    f"metric {metric.name!r} returned {values.shape} scores for {len(chunk)} pairs"
                )
            unique_scores[col][start : start + len(chunk)] = values
    result = {}
    valid = sample_pairs >= 0
    for col, values in unique_scores.items():
        gathered = np.where(valid, values[np.clip(sample_pairs, 0, None)], -np.inf)
        result[col] = gathered.max(axis=1)
    return result


def _level_name(level: int) -> str:
    return "unknown" if level == UNKNOWN_DIFFICULTY else str(level)


def _reason(exc: Exception) -> str:
    if isinstance(exc, (AssetMissingError, VlmbenchError)):
        return str(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"
