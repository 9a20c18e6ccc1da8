"""Scoring stored answers: metric set-up, unique-pair batching, per-sample scores and aggregates.

Used by ``run`` after the model has answered and by ``score`` for stored or external predictions.
A metric that cannot load or fails is reported as skipped with its reason; it never costs the
predictions.
"""

from __future__ import annotations

import time
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench.errors import AssetMissingError, VlmbenchError
from vlmbench.hashing import json_digest
from vlmbench.plugin.loading import Plugins
from vlmbench.plugin.metric import CorpusMetric, Metric, MetricContext, SampleMetric, ScoreTable
from vlmbench.scoring.progress import ScoringProgress
from vlmbench.scoring.score_cache import ScoreCache
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
    #: Seconds each metric took: set-up, scores (or their lookup in the score cache) and intervals.
    seconds: dict[str, float] = field(default_factory=dict)


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
    cache: Path | None = None,
    progress: bool = False,
) -> ScoredSet:
    """Score the aligned answers with ``metrics``. ``cache``: the score cache file (None: scores are
    neither read from nor stored in one); ``progress``: one labelled progress line per metric that takes
    more than a moment, on stderr."""
    difficulty = np.array([UNKNOWN_DIFFICULTY if d is None else d for d in difficulties], dtype=np.int64)
    out = ScoredSet({}, {}, {}, {})
    columns, higher = out.sample_scores, {}
    pairs = _UniquePairs(answers, references)
    store = ScoreCache(cache) if cache is not None else None
    try:
        for metric in metrics:
            if not isinstance(metric, SampleMetric):
                continue
            started = time.perf_counter()
            try:
                scores, out.details[metric.name] = _sample_scores(metric, pairs, store, progress)
                columns.update(scores)
                higher.update({c: metric.entry.higher_is_better for c in metric.outputs})
            except Exception as exc:  # a broken metric must not cost the run
                out.skipped[metric.name] = _reason(exc)
            out.seconds[metric.name] = time.perf_counter() - started
    finally:
        if store is not None:
            store.close()

    table = ScoreTable(columns, difficulty)
    levels = sorted(set(difficulty.tolist()))
    level_rows = {lvl: np.flatnonzero(difficulty == lvl) for lvl in levels}
    for lvl in levels:
        out.by_difficulty[_level_name(lvl)] = {
            "n": len(level_rows[lvl]),
            "weight": weights.get(lvl) if lvl != UNKNOWN_DIFFICULTY else None,
            "metrics": {},
        }

    owner = {c: m.name for m in metrics if isinstance(m, SampleMetric) for c in m.outputs}
    for col, values in columns.items():
        started = time.perf_counter()
        out.metrics[col] = {**mean_with_ci(values, bootstrap_samples, seed), "higher_is_better": higher[col]}
        for lvl, rows in level_rows.items():
            out.by_difficulty[_level_name(lvl)]["metrics"][col] = mean_with_ci(
                values[rows], bootstrap_samples, seed
            )
        out.seconds[owner[col]] += time.perf_counter() - started

    for metric in metrics:
        if isinstance(metric, CorpusMetric):
            started = time.perf_counter()
            _corpus_metric(metric, table, level_rows, out, bootstrap_samples, seed)
            out.seconds[metric.name] = time.perf_counter() - started
    return out


def _corpus_metric(
    metric: CorpusMetric,
    table: ScoreTable,
    level_rows: dict[int, np.ndarray],
    out: ScoredSet,
    bootstrap_samples: int,
    seed: int,
) -> None:
    """A statistic over the whole table, with its interval (and per level when it means something)."""
    n = len(table)
    missing = [c for c in metric.required_columns() if c not in table.columns]
    if missing:
        out.skipped[metric.name] = f"needs {', '.join(missing)}, which could not be computed"
        return
    try:
        metric.setup()

        def stat(index: np.ndarray, _m: CorpusMetric = metric, _t: ScoreTable = table) -> float:
            return _m.compute(_t.take(index))

        counts = metric.report(table)
        out.metrics[metric.name] = {
            **statistic_with_ci(stat, n, bootstrap_samples, seed),
            **counts,
            "higher_is_better": metric.entry.higher_is_better,
        }
        if metric.by_difficulty:
            for lvl, rows in level_rows.items():
                sub = table.take(rows)
                out.by_difficulty[_level_name(lvl)]["metrics"][metric.name] = statistic_with_ci(
                    lambda i, _m=metric, _s=sub: _m.compute(_s.take(i)),
                    len(rows),
                    bootstrap_samples,
                    seed,
                )
        out.details[metric.name] = metric.describe()
    except Exception as exc:
        out.skipped[metric.name] = _reason(exc)
        return
    left_out = counts.get("n_left_out", 0)
    if left_out:  # outside the try: a warning turned into an error must not pass for a broken metric
        out.warnings[f"left_out_of_{metric.name}"] = left_out
        warnings.warn(
            f"{metric.name}: {left_out} of {n} samples left out ({_left_out_detail(counts)})",
            stacklevel=3,
        )


def _left_out_detail(counts: dict[str, Any]) -> str:
    reason = counts.get("left_out_reason", "not counted")
    by_level = counts.get("left_out_by_level") or {}
    if by_level:
        reason += ": " + ", ".join(f"{k} at level {level}" for level, k in by_level.items())
    return reason


class _UniquePairs:
    """The distinct (answer, reference) pairs of a scored set, in first-seen order, and for each sample
    the positions of its pairs (-1 where it has fewer references than the widest sample)."""

    def __init__(self, answers: Sequence[str], references: Sequence[Sequence[str]]):
        index: dict[tuple[str, str], int] = {}
        width = max((len(r) for r in references), default=1) or 1
        self.of_sample = np.full((len(answers), width), -1, dtype=np.int64)
        for i, (answer, refs) in enumerate(zip(answers, references, strict=True)):
            for j, ref in enumerate(refs):
                self.of_sample[i, j] = index.setdefault((answer, ref), len(index))
        self.pairs = list(index)
        self._digest: str | None = None

    def digest(self) -> str:
        """Names this exact list of pairs (for metrics whose scores depend on the pairs scored together)."""
        if self._digest is None:
            self._digest = json_digest(self.pairs, length=None)
        return self._digest

    def best(self, unique: np.ndarray) -> np.ndarray:
        """Each sample's best score over its references, from the scores of the unique pairs."""
        valid = self.of_sample >= 0
        return np.where(valid, unique[np.clip(self.of_sample, 0, None)], -np.inf).max(axis=1)


def _sample_scores(
    metric: SampleMetric, pairs: _UniquePairs, store: ScoreCache | None, progress: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per-sample scores and details of one metric: the unique pairs' scores from the score cache where
    it holds them, the rest computed (the metric is set up only then)."""
    width = len(metric.outputs)
    unique = np.empty((len(pairs.pairs), width), dtype=np.float64)
    caching = store is not None and store.enabled
    identity = _identity(metric, pairs) if caching else None
    details: dict[str, Any] | None = None
    found: dict[int, np.ndarray] = {}
    if identity is not None:
        key = json_digest(identity, length=None)
        details = store.details(key)
        found = store.lookup(key, pairs.pairs, width) if details is not None else {}
        if not metric.pair_independent and len(found) < len(pairs.pairs):
            found = {}  # only the very set of pairs scored together reproduces their scores exactly
    for i, values in found.items():
        unique[i] = values
    todo = [i for i in range(len(pairs.pairs)) if i not in found]
    if todo or details is None:
        with ScoringProgress(metric.name, len(pairs.pairs), len(found), progress) as bar:
            with bar.setting_up():
                metric.setup()
            unique[todo] = _score_pairs(metric, [pairs.pairs[i] for i in todo], bar)
        details = metric.describe()
        if caching:
            _store(metric, pairs, store, identity, details, todo, unique[todo])
    if caching and type(metric).cache_identity is not SampleMetric.cache_identity:
        details = {**details, "score_cache": {"pairs": len(pairs.pairs), "cached": len(found)}}
    return {col: pairs.best(unique[:, k]) for k, col in enumerate(metric.outputs)}, details


def _identity(metric: SampleMetric, pairs: _UniquePairs) -> dict[str, Any] | None:
    """What the metric's stored scores are keyed by: its identity, and for a metric whose scores depend
    on the pairs scored together, the list of pairs."""
    identity = metric.cache_identity()
    if identity is not None and not metric.pair_independent:
        identity = {**identity, "pairs": pairs.digest()}
    return identity


def _store(
    metric: SampleMetric,
    pairs: _UniquePairs,
    store: ScoreCache,
    before: dict[str, Any] | None,
    details: dict[str, Any],
    todo: list[int],
    values: np.ndarray,
) -> None:
    """Store the computed scores under the metric's identity now that it is set up (it then knows its
    assets for certain); not when that differs from the identity looked up before set-up."""
    now = _identity(metric, pairs)
    if now is None:
        return
    if before is not None and now != before:
        warnings.warn(
            f"{metric.name}: its assets are not the ones its identity named before set-up; its scores "
            "are not cached",
            stacklevel=4,
        )
        return
    store.store(json_digest(now, length=None), now, details, [pairs.pairs[i] for i in todo], values)


def _score_pairs(metric: SampleMetric, pairs: list[tuple[str, str]], bar: ScoringProgress) -> np.ndarray:
    """``metric.score`` over ``pairs`` in batches of its ``batch_size``: one row of outputs per pair."""
    out = np.empty((len(pairs), len(metric.outputs)), dtype=np.float64)
    for start in range(0, len(pairs), metric.batch_size):
        chunk = pairs[start : start + metric.batch_size]
        scores = metric.score([p for p, _ in chunk], [r for _, r in chunk])
        for k, col in enumerate(metric.outputs):
            values = np.asarray(scores[col], dtype=np.float64)
            if values.shape != (len(chunk),):
                raise VlmbenchError(
                    f"metric {metric.name!r} returned {values.shape} scores for {len(chunk)} pairs"
                )
            out[start : start + len(chunk), k] = values
        bar.advance(len(chunk))
    return out


def _level_name(level: int) -> str:
    return "unknown" if level == UNKNOWN_DIFFICULTY else str(level)


def _reason(exc: Exception) -> str:
    if isinstance(exc, (AssetMissingError, VlmbenchError)):
        return str(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"
