"""Paired comparison of runs on the same task: per-metric deltas with paired bootstrap intervals,
McNemar's exact test on Exact Match, per-difficulty deltas, flipped samples and regression gates.

Two runs are compared on the samples both answered (status ``ok`` in both ``predictions.jsonl``),
matched by ``sample_id``. Deltas are always B − A, where A is the baseline (the first run given).
The bootstrap resamples *sample indices* and applies the same indices to both runs, so the
interval reflects the paired design: per-sample differences, not two independent means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench.analysis.compare_report import RENDERERS, to_html, to_json, to_markdown
from vlmbench.analysis.display import level_order
from vlmbench.analysis.gates import Gate, parse_gate, regressions
from vlmbench.analysis.runs import Run, load_run, task_mismatches, unique_labels
from vlmbench.errors import VlmbenchError, unknown_message
from vlmbench.scoring.stats import check_statistics

#: Names kept importable from here: rendering, gates and run loading have modules of their own.
__all__ = [
    "RENDERERS", "Gate", "Run", "compare_pair", "compare_runs", "load_run", "mcnemar_exact",
    "paired_bootstrap", "parse_gate", "regressions", "task_mismatches", "to_html", "to_json", "to_markdown",
]  # fmt: skip

COMPARE_SCHEMA = "vlmbench.compare/1"
#: The per-sample score that defines "right" for McNemar's test and for flipped samples.
CORRECTNESS = "exact_match"
UNKNOWN_DIFFICULTY = "unknown"
# Resamples are drawn in chunks so that B x n indices never sit in memory at once.
_CHUNK_CELLS = 10_000_000


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test on the discordant pairs (binomial test of b vs c at p = 0.5).

    p = min(1, 2 * P[X <= min(b, c)]) with X ~ Binomial(b + c, 1/2); p = 1 when there are no
    discordant pairs.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    if b + c == 0:
        return 1.0  # binomtest needs at least one trial; with none, nothing speaks against equality
    # Imported here: scipy.stats takes a while to load, and the commands that import this module
    # without comparing anything should not pay for it.
    from scipy.stats import binomtest

    return float(binomtest(b, b + c, p=0.5, alternative="two-sided").pvalue)


def paired_bootstrap(statistic, n: int, samples: int, seed: int) -> np.ndarray:
    """``statistic(index_matrix)`` -> one value per row, over ``samples`` resamples of ``n`` indices.

    Resample ``i`` is ``default_rng(seed).integers(0, n, size=n)`` drawn in order: the same indices
    serve both runs (the pairing) and every metric (the same seed gives the same resamples).
    """
    rng = np.random.default_rng(seed)
    out = np.empty(samples, dtype=np.float64)
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = statistic(idx)
    return out


def _ci(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------------------------------
# Metrics that can be computed on aligned rows
# --------------------------------------------------------------------------------------------------
@dataclass
class _PairedMetric:
    """How to evaluate one metric on aligned rows: a per-sample column or a corpus statistic."""

    name: str
    higher_is_better: bool
    a: np.ndarray | None = None  # per-sample values (sample-level metrics)
    b: np.ndarray | None = None
    corpus_a: Any = None  # (metric, table) for corpus metrics
    corpus_b: Any = None
    per_difficulty: bool = True
    unpaired_reason: str | None = None


def _sample_column(rows: Sequence[dict], name: str) -> np.ndarray | None:
    values = []
    for row in rows:
        v = (row.get("scores") or {}).get(name)
        if v is None:
            return None
        values.append(float(v))
    return np.asarray(values, dtype=np.float64)


def corpus_metric(name: str, run: Run, plugins):
    """Rebuild a corpus metric (e.g. Average Mark) with the options and difficulty weights the run used."""
    from vlmbench.plugin.metric import CorpusMetric, MetricContext
    from vlmbench.plugin.registry import load_target

    if plugins is None:
        from vlmbench.plugin.loading import load_plugins

        plugins = load_plugins()
    entry = plugins.metrics.get(name)
    if entry.level != "corpus":
        raise VlmbenchError(f"metric {name!r} has no per-sample scores in the predictions")
    cls = load_target(entry.target)
    if not (isinstance(cls, type) and issubclass(cls, CorpusMetric)):
        raise VlmbenchError(f"metric {name!r}: {entry.target} is not a CorpusMetric")
    config = run.results.get("config") or {}
    weights = {int(k): float(v) for k, v in (config.get("difficulty_weights") or {}).items()}
    options = ((run.results.get("metric_details") or {}).get(name) or {}).get("options") or {}
    context = MetricContext(difficulty_weights=weights, seed=int(config.get("seed") or 0))
    return cls.create(entry, options, context)


def _difficulty_codes(rows: Sequence[dict]) -> np.ndarray:
    return np.array(
        [-1 if r.get("difficulty") is None else int(r["difficulty"]) for r in rows], dtype=np.int64
    )


def _paired_metrics(
    names: Sequence[str], a: Run, b: Run, rows_a: list[dict], rows_b: list[dict], plugins
) -> list[_PairedMetric]:
    from vlmbench.plugin.metric import ScoreTable

    out = []
    for name in names:
        meta = (a.results.get("metrics") or {}).get(name) or (b.results.get("metrics") or {}).get(name) or {}
        pm = _PairedMetric(name, bool(meta.get("higher_is_better", True)))
        col_a, col_b = _sample_column(rows_a, name), _sample_column(rows_b, name)
        if col_a is not None and col_b is not None:
            pm.a, pm.b = col_a, col_b
            out.append(pm)
            continue
        try:
            metrics = []
            for run, rows in ((a, rows_a), (b, rows_b)):
                metric = corpus_metric(name, run, plugins)
                columns = {}
                for col in metric.required_columns():
                    values = _sample_column(rows, col)
                    if values is None:
                        raise VlmbenchError(f"needs per-sample {col!r} scores, which {run.label} lacks")
                    columns[col] = values
                metrics.append((metric, ScoreTable(columns, _difficulty_codes(rows))))
            pm.corpus_a, pm.corpus_b = metrics
            pm.per_difficulty = bool(metrics[0][0].by_difficulty)
        except VlmbenchError as exc:
            pm.unpaired_reason = str(exc)
        out.append(pm)
    return out


def _evaluate(pm: _PairedMetric, index: np.ndarray, samples: int, seed: int) -> dict:
    """Values of A and B, delta and paired-bootstrap CI on the rows in ``index``."""
    n = len(index)
    if pm.a is not None:
        a, b = pm.a[index], pm.b[index]
        diff = b - a
        value_a, value_b = (float(a.mean()), float(b.mean())) if n else (None, None)
        delta = float(diff.mean()) if n else None
        ci = None
        if samples > 0 and n >= 2:
            ci = _ci(paired_bootstrap(lambda idx: diff[idx].mean(axis=1), n, samples, seed))
    else:
        (ma, ta), (mb, tb) = pm.corpus_a, pm.corpus_b
        ta, tb = ta.take(index), tb.take(index)
        value_a = _finite(ma.compute(ta)) if n else None
        value_b = _finite(mb.compute(tb)) if n else None
        delta = value_b - value_a if value_a is not None and value_b is not None else None
        ci = None
        if samples > 0 and n >= 2:

            def stat(idx: np.ndarray) -> np.ndarray:
                return np.array([mb.compute(tb.take(i)) - ma.compute(ta.take(i)) for i in idx])

            ci = _ci(paired_bootstrap(stat, n, samples, seed))
    return {
        "n": n,
        "a": value_a,
        "b": value_b,
        "delta": delta,
        "ci95": ci,
        "higher_is_better": pm.higher_is_better,
        "verdict": _verdict(delta, ci, pm.higher_is_better),
    }


def _verdict(delta: float | None, ci: list[float] | None, higher_is_better: bool) -> str:
    """'better' / 'worse' when the 95% interval excludes zero, else 'no clear change'."""
    if delta is None or ci is None:
        return "n/a"
    if ci[0] > 0 or ci[1] < 0:
        improved = (ci[0] > 0) == higher_is_better
        return "better" if improved else "worse"
    return "no clear change"


# --------------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Options:
    """The keyword options of :func:`compare_runs` (where they are described) and :func:`compare_pair`,
    defined once so that both take the same names with the same defaults; an unknown one is a
    TypeError."""

    metrics: Sequence[str] | None = None
    bootstrap_samples: int = 1000
    seed: int = 0
    allow_task_mismatch: bool = False
    plugins: Any = None


def compare_pair(a: Run, b: Run, **options: Any) -> dict:
    """Compare run ``b`` against baseline ``a`` on the samples both answered. Returns a JSON-able dict.
    ``options``: those of :func:`compare_runs`."""
    opts = _Options(**options)
    bootstrap_samples, seed = opts.bootstrap_samples, opts.seed
    mismatch = task_mismatches(a, b)
    if mismatch and not opts.allow_task_mismatch:
        raise VlmbenchError(
            f"{b.label} and {a.label} were run on different tasks ({'; '.join(mismatch)}); "
            "their samples are not comparable. Pass --allow-task-mismatch to compare them anyway."
        )
    ok_a = [sid for sid, row in a.predictions.items() if row.get("status") == "ok"]
    ok_b = {sid for sid, row in b.predictions.items() if row.get("status") == "ok"}
    common = [sid for sid in ok_a if sid in ok_b]
    if not common:
        raise VlmbenchError(f"{a.label} and {b.label} have no answered samples in common")
    rows_a = [a.predictions[s] for s in common]
    rows_b = [b.predictions[s] for s in common]
    reference_mismatches = sum(
        1
        for ra, rb in zip(rows_a, rows_b, strict=True)
        if list(ra.get("references") or []) != list(rb.get("references") or [])
    )
    paired = _paired_metrics(_metric_names(a, b, opts.metrics), a, b, rows_a, rows_b, opts.plugins)
    everything = np.arange(len(common))
    metric_report = {
        pm.name: _unpaired_entry(pm, a, b)
        if pm.unpaired_reason is not None
        else {**_evaluate(pm, everything, bootstrap_samples, seed), "paired": True}
        for pm in paired
    }
    correct_a = _sample_column(rows_a, CORRECTNESS)
    correct_b = _sample_column(rows_b, CORRECTNESS)
    mcnemar = None
    flips: dict[str, list[dict]] = {"right_to_wrong": [], "wrong_to_right": []}
    right = None
    if correct_a is not None and correct_b is not None:
        right = (correct_a >= 0.5, correct_b >= 0.5)
        mcnemar = _mcnemar_block(*right)
        for i, sid in enumerate(common):
            if right[0][i] != right[1][i]:
                key = "right_to_wrong" if right[0][i] else "wrong_to_right"
                flips[key].append(_flip(sid, rows_a[i], rows_b[i]))
    return {
        "baseline": a.describe(),
        "run": b.describe(),
        "task_mismatch": mismatch,
        "samples": {
            "paired": len(common),
            "baseline_ok": len(ok_a),
            "run_ok": len(ok_b),
            "only_baseline": len(ok_a) - len(common),
            "only_run": len(ok_b) - len(common),
            "reference_mismatches": reference_mismatches,
        },
        "metrics": metric_report,
        "mcnemar": mcnemar,
        "by_difficulty": _by_difficulty(rows_a, paired, right, bootstrap_samples, seed),
        "flips": flips,
    }


def _metric_names(a: Run, b: Run, metrics: Sequence[str] | None) -> list[str]:
    """The metrics to compare: those asked for (each must be in both runs), else every shared one."""
    available = [m for m in (a.results.get("metrics") or {}) if m in (b.results.get("metrics") or {})]
    for m in metrics or ():
        if m not in available:
            raise VlmbenchError(unknown_message(f"metric (in both {a.label} and {b.label})", m, available))
    return list(metrics) if metrics else available


def _unpaired_entry(pm: _PairedMetric, a: Run, b: Run) -> dict:
    """A metric that cannot be recomputed on the paired samples: the runs' own values, marked unpaired."""
    va = ((a.results.get("metrics") or {}).get(pm.name) or {}).get("value")
    vb = ((b.results.get("metrics") or {}).get(pm.name) or {}).get("value")
    return {
        "n": None,
        "a": va,
        "b": vb,
        "delta": vb - va if va is not None and vb is not None else None,
        "ci95": None,
        "higher_is_better": pm.higher_is_better,
        "verdict": "n/a",
        "paired": False,
        "note": f"not paired (values from results.json, all samples of each run): {pm.unpaired_reason}",
    }


def _by_difficulty(
    rows: list[dict],
    paired: list[_PairedMetric],
    right: tuple[np.ndarray, np.ndarray] | None,
    bootstrap_samples: int,
    seed: int,
) -> dict[str, dict]:
    """Per difficulty level of the paired samples: their number, every metric's delta and McNemar."""
    levels: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        d = row.get("difficulty")
        levels.setdefault(UNKNOWN_DIFFICULTY if d is None else str(d), []).append(i)
    out: dict[str, dict] = {}
    for level in sorted(levels, key=level_order):
        index = np.asarray(levels[level], dtype=np.int64)
        entry: dict[str, Any] = {"n": len(index), "metrics": {}}
        for pm in paired:
            if pm.unpaired_reason is None and pm.per_difficulty:
                entry["metrics"][pm.name] = _evaluate(pm, index, bootstrap_samples, seed)
        if right is not None:
            entry["mcnemar"] = _mcnemar_block(right[0][index], right[1][index])
        out[level] = entry
    return out


def _mcnemar_block(ra: np.ndarray, rb: np.ndarray) -> dict:
    b = int(np.sum(ra & ~rb))
    c = int(np.sum(~ra & rb))
    return {
        "metric": CORRECTNESS,
        "both_right": int(np.sum(ra & rb)),
        "both_wrong": int(np.sum(~ra & ~rb)),
        "right_to_wrong": b,
        "wrong_to_right": c,
        "p_value": mcnemar_exact(b, c),
    }


def _flip(sid: str, ra: dict, rb: dict) -> dict:
    return {
        "sample_id": sid,
        "difficulty": ra.get("difficulty"),
        "question": ra.get("question"),
        "references": list(ra.get("references") or []),
        "answer_baseline": ra.get("answer"),
        "answer_run": rb.get("answer"),
    }


def compare_runs(paths: Sequence[str | Path], **options: Any) -> dict:
    """Compare every run against the first (the baseline). Returns the report (see :data:`COMPARE_SCHEMA`).

    ``options`` (keywords): ``metrics`` (default: every metric both runs have),
    ``bootstrap_samples=1000``, ``seed=0``, ``allow_task_mismatch=False`` and ``plugins`` (the loaded
    plugins, for corpus-level metrics; default: loaded when needed)."""
    opts = _Options(**options)
    if len(paths) < 2:
        raise VlmbenchError("compare needs at least two runs (the first is the baseline)")
    check_statistics(opts.bootstrap_samples, opts.seed)  # before any run is read
    runs = [load_run(p) for p in paths]
    labels = unique_labels(
        [r.label for r in runs],
        [(r.results.get("model") or {}).get("fingerprint") or r.path.name for r in runs],
    )
    for run, label in zip(runs, labels, strict=True):
        run.label = label
    base = runs[0]
    comparisons = [compare_pair(base, other, **options) for other in runs[1:]]
    return {
        "schema": COMPARE_SCHEMA,
        "task": {k: base.task.get(k) for k in ("name", "version", "hash")},
        "baseline": base.describe(),
        "settings": {
            "bootstrap_samples": opts.bootstrap_samples,
            "seed": opts.seed,
            "ci": "paired percentile bootstrap, 95%",
            "delta": "run - baseline",
            "correctness": CORRECTNESS,
            "allow_task_mismatch": opts.allow_task_mismatch,
        },
        "comparisons": comparisons,
    }
