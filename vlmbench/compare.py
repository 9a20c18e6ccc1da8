"""Paired comparison of runs on the same task: per-metric deltas with paired bootstrap intervals,
McNemar's exact test on Exact Match, per-difficulty deltas, flipped samples and regression gates.

Two runs are compared on the samples both answered (status ``ok`` in both ``predictions.jsonl``),
matched by ``sample_id``. Deltas are always B − A, where A is the baseline (the first run given).
The bootstrap resamples *sample indices* and applies the same indices to both runs, so the
interval reflects the paired design: per-sample differences, not two independent means.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench import artifacts
from vlmbench.errors import VlmbenchError, unknown_message

COMPARE_SCHEMA = "vlmbench.compare/1"
#: The per-sample score that defines "right" for McNemar's test and for flipped samples.
CORRECTNESS = "exact_match"
UNKNOWN_DIFFICULTY = "unknown"
# Resamples are drawn in chunks so that B x n indices never sit in memory at once.
_CHUNK_CELLS = 10_000_000


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One run folder: its results.json and its predictions keyed by sample id (file order kept)."""

    path: Path
    results: dict
    predictions: dict[str, dict]
    label: str = ""

    @property
    def task(self) -> dict:
        return self.results.get("task") or {}

    def describe(self) -> dict:
        model = self.results.get("model") or {}
        return {
            "label": self.label,
            "model": model.get("name"),
            "checkpoint": model.get("checkpoint") or model.get("default_checkpoint"),
            "fingerprint": model.get("fingerprint"),
            "parameters": model.get("parameters"),
            "path": str(self.path),
            "n_ok": sum(1 for p in self.predictions.values() if p.get("status") == "ok"),
        }


def load_run(path: str | Path) -> Run:
    """A run from its folder (or its results.json); both artifacts must be there."""
    path = Path(path)
    if path.is_dir():
        if not (path / artifacts.RESULTS).exists():
            found = artifacts.find_results(path)
            if len(found) > 1:
                raise VlmbenchError(
                    f"{path} holds {len(found)} runs; name one run folder (e.g. {found[0].parent})"
                )
            if not found:
                raise VlmbenchError(f"{path}: no {artifacts.RESULTS} found; is this a run folder?")
            path = found[0].parent
        folder = path
    elif path.name == artifacts.RESULTS:
        folder = path.parent
    elif path.exists():
        raise VlmbenchError(f"{path}: expected a run folder or its {artifacts.RESULTS}")
    else:
        raise VlmbenchError(f"{path}: no such run folder")
    results = artifacts.load_results(folder / artifacts.RESULTS)
    if results.get("status") != "ok":
        reason = results.get("reason", "no reason recorded")
        raise VlmbenchError(f"{folder}: this run was skipped ({reason}); it has no predictions to compare")
    preds_path = folder / artifacts.PREDICTIONS
    if not preds_path.exists():
        raise VlmbenchError(f"{folder}: {artifacts.PREDICTIONS} is missing; per-sample comparison needs it")
    predictions: dict[str, dict] = {}
    for row in artifacts.read_predictions(preds_path):
        sid = str(row.get("sample_id"))
        if sid in predictions:
            raise VlmbenchError(f"{preds_path}: sample_id {sid!r} appears more than once")
        predictions[sid] = row
    model = results.get("model") or {}
    label = model.get("label") or model.get("name") or folder.name
    return Run(folder, results, predictions, label)


def _unique_labels(runs: Sequence[Run]) -> None:
    """Two runs of the same model (e.g. different checkpoints) get their fingerprint appended."""
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
    for run in runs:
        if seen[run.label] > 1:
            fp = (run.results.get("model") or {}).get("fingerprint") or run.path.name
            run.label = f"{run.label} ({fp[:8]})"
    labels = [r.label for r in runs]
    for i, run in enumerate(runs):
        if labels.count(run.label) > 1:  # same fingerprint twice: fall back to the position
            run.label = f"{run.label} #{i + 1}"


def task_mismatches(a: Run, b: Run) -> list[str]:
    """The task identity fields (name, version, hash) on which two runs differ."""
    out = []
    for key in ("name", "version", "hash"):
        va, vb = a.task.get(key), b.task.get(key)
        if str(va) != str(vb):
            out.append(f"task {key}: {va!r} vs {vb!r}")
    return out


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test on the discordant pairs (binomial test of b vs c at p = 0.5).

    p = min(1, 2 * P[X <= min(b, c)]) with X ~ Binomial(b + c, 1/2); p = 1 when there are no
    discordant pairs. Computed with integer arithmetic, so it is exact for any count.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    # C(n, k+1) = C(n, k) * (n - k) / (k + 1), exactly in integers: one step per term instead of
    # a fresh math.comb each (which is slow when thousands of samples flipped).
    term = tail = 1
    for k in range(min(b, c)):
        term = term * (n - k) // (k + 1)
        tail += term
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


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


def _corpus_metric(name: str, run: Run, plugins):
    """Rebuild a corpus metric (e.g. Average Mark) with the options and difficulty weights the run used."""
    from vlmbench.metric import CorpusMetric, MetricContext
    from vlmbench.registry import load_target

    if plugins is None:
        from vlmbench.plugins import load_plugins

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
    from vlmbench.metric import ScoreTable

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
                metric = _corpus_metric(name, run, plugins)
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
def compare_pair(
    a: Run,
    b: Run,
    *,
    metrics: Sequence[str] | None = None,
    bootstrap_samples: int = 1000,
    seed: int = 0,
    allow_task_mismatch: bool = False,
    plugins=None,
) -> dict:
    """Compare run ``b`` against baseline ``a`` on the samples both answered. Returns a JSON-able dict."""
    mismatch = task_mismatches(a, b)
    if mismatch and not allow_task_mismatch:
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

    available = [m for m in (a.results.get("metrics") or {}) if m in (b.results.get("metrics") or {})]
    if metrics:
        for m in metrics:
            if m not in available:
                raise VlmbenchError(
                    unknown_message(f"metric (in both {a.label} and {b.label})", m, available)
                )
        names = list(metrics)
    else:
        names = available

    paired = _paired_metrics(names, a, b, rows_a, rows_b, plugins)
    everything = np.arange(len(common))
    metric_report: dict[str, dict] = {}
    for pm in paired:
        if pm.unpaired_reason is not None:
            va = ((a.results.get("metrics") or {}).get(pm.name) or {}).get("value")
            vb = ((b.results.get("metrics") or {}).get(pm.name) or {}).get("value")
            metric_report[pm.name] = {
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
            continue
        metric_report[pm.name] = {**_evaluate(pm, everything, bootstrap_samples, seed), "paired": True}

    correct_a = _sample_column(rows_a, CORRECTNESS)
    correct_b = _sample_column(rows_b, CORRECTNESS)
    mcnemar = None
    flips: dict[str, list[dict]] = {"right_to_wrong": [], "wrong_to_right": []}
    if correct_a is not None and correct_b is not None:
        ra, rb = correct_a >= 0.5, correct_b >= 0.5
        mcnemar = _mcnemar_block(ra, rb)
        for i, sid in enumerate(common):
            if ra[i] != rb[i]:
                key = "right_to_wrong" if ra[i] else "wrong_to_right"
                flips[key].append(_flip(sid, rows_a[i], rows_b[i]))

    levels: dict[str, list[int]] = {}
    for i, row in enumerate(rows_a):
        d = row.get("difficulty")
        levels.setdefault(UNKNOWN_DIFFICULTY if d is None else str(d), []).append(i)
    by_difficulty: dict[str, dict] = {}
    for level in sorted(levels, key=_level_order):
        index = np.asarray(levels[level], dtype=np.int64)
        entry: dict[str, Any] = {"n": len(index), "metrics": {}}
        for pm in paired:
            if pm.unpaired_reason is None and pm.per_difficulty:
                entry["metrics"][pm.name] = _evaluate(pm, index, bootstrap_samples, seed)
        if mcnemar is not None:
            entry["mcnemar"] = _mcnemar_block(ra[index], rb[index])
        by_difficulty[level] = entry

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
        "by_difficulty": by_difficulty,
        "flips": flips,
    }


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


def _level_order(level: str) -> tuple[int, float]:
    try:
        return (0, float(level))
    except ValueError:
        return (1, 0.0)


def compare_runs(
    paths: Sequence[str | Path],
    *,
    metrics: Sequence[str] | None = None,
    bootstrap_samples: int = 1000,
    seed: int = 0,
    allow_task_mismatch: bool = False,
    plugins=None,
) -> dict:
    """Compare every run against the first (the baseline). Returns the report (see :data:`COMPARE_SCHEMA`)."""
    if len(paths) < 2:
        raise VlmbenchError("compare needs at least two runs (the first is the baseline)")
    if bootstrap_samples < 0:
        raise VlmbenchError("--bootstrap-samples must be 0 or more")
    runs = [load_run(p) for p in paths]
    _unique_labels(runs)
    base = runs[0]
    comparisons = [
        compare_pair(
            base,
            other,
            metrics=metrics,
            bootstrap_samples=bootstrap_samples,
            seed=seed,
            allow_task_mismatch=allow_task_mismatch,
            plugins=plugins,
        )
        for other in runs[1:]
    ]
    return {
        "schema": COMPARE_SCHEMA,
        "task": {k: base.task.get(k) for k in ("name", "version", "hash")},
        "baseline": base.describe(),
        "settings": {
            "bootstrap_samples": bootstrap_samples,
            "seed": seed,
            "ci": "paired percentile bootstrap, 95%",
            "delta": "run - baseline",
            "correctness": CORRECTNESS,
            "allow_task_mismatch": allow_task_mismatch,
        },
        "comparisons": comparisons,
    }


# --------------------------------------------------------------------------------------------------
# Regression gates
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gate:
    metric: str
    tolerance: float


def parse_gate(text: str) -> Gate:
    """``METRIC:TOL`` (e.g. ``exact_match:0.01``); the tolerance is an absolute change in the metric."""
    name, sep, tol = text.rpartition(":")
    if not sep or not name:
        raise VlmbenchError(
            f"--fail-on-regression {text!r}: expected METRIC:TOLERANCE, e.g. exact_match:0.01"
        )
    try:
        tolerance = float(tol)
    except ValueError:
        raise VlmbenchError(f"--fail-on-regression {text!r}: tolerance {tol!r} is not a number") from None
    if not math.isfinite(tolerance) or tolerance < 0:
        raise VlmbenchError(f"--fail-on-regression {text!r}: tolerance must be a non-negative number")
    return Gate(name, tolerance)


def regressions(report: dict, gates: Sequence[Gate]) -> list[str]:
    """One message per (run, gate) whose delta goes the wrong way by more than the tolerance."""
    failures = []
    for gate in gates:
        for comp in report["comparisons"]:
            m = comp["metrics"].get(gate.metric)
            if m is None:
                raise VlmbenchError(unknown_message("metric to gate on", gate.metric, list(comp["metrics"])))
            delta = m.get("delta")
            if delta is None:
                raise VlmbenchError(f"cannot gate on {gate.metric}: no value for {comp['run']['label']}")
            worse = -delta if m.get("higher_is_better", True) else delta
            if worse > gate.tolerance:
                direction = "fell" if m.get("higher_is_better", True) else "rose"
                failures.append(
                    f"regression: {gate.metric} {direction} by {abs(delta):.4f} "
                    f"({m['a']:.4f} -> {m['b']:.4f}, delta {delta:+.4f}) for {comp['run']['label']} "
                    f"vs baseline {comp['baseline']['label']}, beyond the tolerance {gate.tolerance:g}"
                )
    return failures


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------
def _num(x: float | None, digits: int = 4, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _ci_text(ci: list[float] | None) -> str:
    return "–" if not ci else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _p_text(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.2e}"


def _limit(items: list, top: int | None) -> list:
    return items if not top else items[:top]


def _md(text: Any) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened."""
    s = "" if text is None else str(text)
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _refs(refs: list[str]) -> str:
    return " / ".join(refs)


def _mcnemar_sentence(m: dict) -> str:
    return (
        f"{m['right_to_wrong']} right→wrong, {m['wrong_to_right']} wrong→right "
        f"({m['both_right']} both right, {m['both_wrong']} both wrong); "
        f"McNemar exact p = {_p_text(m['p_value'])}"
    )


def _difficulty_columns(comp: dict) -> list[str]:
    cols: list[str] = []
    for entry in comp["by_difficulty"].values():
        for name in entry["metrics"]:
            if name not in cols:
                cols.append(name)
    return cols


def to_markdown(report: dict, top: int | None = 20) -> str:
    task = report["task"]
    s = report["settings"]
    lines = [
        f"# Comparison on {task['name']} (version {task['version']}, hash {task['hash']})",
        "",
        f"Baseline: **{_md(report['baseline']['label'])}** ({_md(report['baseline']['path'])}). "
        f"Deltas are run − baseline on the samples both answered; 95% intervals from a paired bootstrap "
        f"({s['bootstrap_samples']} resamples, seed {s['seed']}).",
    ]
    for comp in report["comparisons"]:
        run, smp = comp["run"], comp["samples"]
        lines += ["", f"## {_md(run['label'])} vs {_md(comp['baseline']['label'])}", ""]
        if comp["task_mismatch"]:
            lines.append(
                f"**Warning: different tasks, compared on request** ({_md('; '.join(comp['task_mismatch']))})."
            )
            if smp["reference_mismatches"]:
                lines.append(f"{smp['reference_mismatches']} paired samples have different references.")
            lines.append("")
        lines.append(
            f"{smp['paired']} paired samples ({_md(run['label'])} answered {smp['run_ok']}, "
            f"baseline {smp['baseline_ok']}; {smp['only_baseline']} only in the baseline, "
            f"{smp['only_run']} only in the run). Run folder: {_md(run['path'])}."
        )
        lines += ["", "| metric | baseline | run | Δ | 95% CI | verdict |", "|---|---|---|---|---|---|"]
        for name, m in comp["metrics"].items():
            arrow = "↑" if m["higher_is_better"] else "↓"
            lines.append(
                f"| {_md(name)} {arrow} | {_num(m['a'])} | {_num(m['b'])} | {_num(m['delta'], signed=True)} "
                f"| {_ci_text(m['ci95'])} | {m['verdict']} |"
            )
        notes = [f"{name}: {m['note']}" for name, m in comp["metrics"].items() if m.get("note")]
        for note in notes:
            lines.append(f"\nNote: {_md(note)}")
        if comp["mcnemar"]:
            lines += ["", f"Exact Match: {_mcnemar_sentence(comp['mcnemar'])}."]
        cols = _difficulty_columns(comp)
        if comp["by_difficulty"]:
            header = ["difficulty", "n", *(f"Δ {c} [95% CI]" for c in cols)]
            if comp["mcnemar"]:
                header += ["right→wrong", "wrong→right", "McNemar p"]
            lines += [
                "",
                "### By difficulty",
                "",
                "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header),
            ]
            for level, entry in comp["by_difficulty"].items():
                cells = [level, str(entry["n"])]
                for c in cols:
                    m = entry["metrics"].get(c)
                    cells.append(
                        "–" if m is None else f"{_num(m['delta'], signed=True)} {_ci_text(m['ci95'])}"
                    )
                if comp["mcnemar"]:
                    mc = entry["mcnemar"]
                    cells += [str(mc["right_to_wrong"]), str(mc["wrong_to_right"]), _p_text(mc["p_value"])]
                lines.append("| " + " | ".join(cells) + " |")
        for key, title in (("right_to_wrong", "Right → wrong"), ("wrong_to_right", "Wrong → right")):
            flips = comp["flips"][key]
            if not comp["mcnemar"]:
                continue
            shown = _limit(flips, top)
            more = f", first {len(shown)} shown" if len(shown) < len(flips) else ""
            lines += ["", f"### {title} ({len(flips)}{more})", ""]
            if not flips:
                lines.append("None.")
                continue
            lines += [
                "| sample | difficulty | question | reference | baseline answer | run answer |",
                "|---|---|---|---|---|---|",
            ]
            for f in shown:
                lines.append(
                    f"| {_md(f['sample_id'])} | {_md(f['difficulty'])} | {_md(f['question'])} | "
                    f"{_md(_refs(f['references']))} | {_md(f['answer_baseline'])} | {_md(f['answer_run'])} |"
                )
    return "\n".join(lines) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em;
       color: #222; line-height: 1.45; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.8em 0 1.4em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.better { color: #0a7d2c; font-weight: 600; } .worse { color: #b3261e; font-weight: 600; }
.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 1em; }
.muted { color: #666; }
"""


def _h(text: Any) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]]) -> str:
    """``rows`` hold (already escaped html, css class) cells."""
    out = ["<table>", "<tr>" + "".join(f"<th>{_h(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = "".join(
            f'<td class="{cls}">{content}</td>' if cls else f"<td>{content}</td>" for content, cls in row
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def to_html(report: dict, top: int | None = 20) -> str:
    """A self-contained HTML page (inline CSS, no scripts); every value from the runs is escaped."""
    task = report["task"]
    s = report["settings"]
    title = f"Comparison on {task['name']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_h(title)}</h1>",
        f'<p class="muted">Task version {_h(task["version"])}, hash {_h(task["hash"])}. '
        f"Baseline: <b>{_h(report['baseline']['label'])}</b> ({_h(report['baseline']['path'])}). "
        f"Deltas are run − baseline on the samples both answered; 95% intervals from a paired bootstrap "
        f"({_h(s['bootstrap_samples'])} resamples, seed {_h(s['seed'])}).</p>",
    ]
    for comp in report["comparisons"]:
        run, smp = comp["run"], comp["samples"]
        parts.append(f"<h2>{_h(run['label'])} vs {_h(comp['baseline']['label'])}</h2>")
        if comp["task_mismatch"]:
            extra = (
                f" {smp['reference_mismatches']} paired samples have different references."
                if smp["reference_mismatches"]
                else ""
            )
            parts.append(
                f'<p class="warning">Different tasks, compared on request: '
                f"{_h('; '.join(comp['task_mismatch']))}.{_h(extra)}</p>"
            )
        parts.append(
            f"<p>{smp['paired']} paired samples ({_h(run['label'])} answered {smp['run_ok']}, baseline "
            f"{smp['baseline_ok']}; {smp['only_baseline']} only in the baseline, {smp['only_run']} only in "
            f'the run). <span class="muted">{_h(run["path"])}</span></p>'
        )
        rows = []
        for name, m in comp["metrics"].items():
            arrow = "↑" if m["higher_is_better"] else "↓"
            cls = m["verdict"] if m["verdict"] in ("better", "worse") else ""
            rows.append(
                [
                    (f"{_h(name)} {arrow}", ""),
                    (_num(m["a"]), "num"),
                    (_num(m["b"]), "num"),
                    (_num(m["delta"], signed=True), "num"),
                    (_ci_text(m["ci95"]), "num"),
                    (_h(m["verdict"]), cls),
                ]
            )
        parts.append(_html_table(["metric", "baseline", "run", "Δ", "95% CI", "verdict"], rows))
        for name, m in comp["metrics"].items():
            if m.get("note"):
                parts.append(f'<p class="muted">{_h(name)}: {_h(m["note"])}</p>')
        if comp["mcnemar"]:
            parts.append(f"<p>Exact Match: {_h(_mcnemar_sentence(comp['mcnemar']))}.</p>")
        cols = _difficulty_columns(comp)
        if comp["by_difficulty"]:
            header = ["difficulty", "n", *(f"Δ {c} [95% CI]" for c in cols)]
            if comp["mcnemar"]:
                header += ["right→wrong", "wrong→right", "McNemar p"]
            rows = []
            for level, entry in comp["by_difficulty"].items():
                cells = [(_h(level), ""), (str(entry["n"]), "num")]
                for c in cols:
                    m = entry["metrics"].get(c)
                    text = "–" if m is None else f"{_num(m['delta'], signed=True)} {_ci_text(m['ci95'])}"
                    cells.append((text, "num"))
                if comp["mcnemar"]:
                    mc = entry["mcnemar"]
                    cells += [
                        (str(mc["right_to_wrong"]), "num"),
                        (str(mc["wrong_to_right"]), "num"),
                        (_p_text(mc["p_value"]), "num"),
                    ]
                rows.append(cells)
            parts += ["<h3>By difficulty</h3>", _html_table(header, rows)]
        if comp["mcnemar"]:
            for key, title in (("right_to_wrong", "Right → wrong"), ("wrong_to_right", "Wrong → right")):
                flips = comp["flips"][key]
                shown = _limit(flips, top)
                more = f", first {len(shown)} shown" if len(shown) < len(flips) else ""
                parts.append(f"<h3>{title} ({len(flips)}{more})</h3>")
                if not flips:
                    parts.append("<p>None.</p>")
                    continue
                rows = [
                    [
                        (_h(f["sample_id"]), ""),
                        (_h(f["difficulty"]), "num"),
                        (_h(f["question"]), ""),
                        (_h(_refs(f["references"])), ""),
                        (_h(f["answer_baseline"]), ""),
                        (_h(f["answer_run"]), ""),
                    ]
                    for f in shown
                ]
                parts.append(
                    _html_table(
                        ["sample", "difficulty", "question", "reference", "baseline answer", "run answer"],
                        rows,
                    )
                )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def to_json(report: dict, top: int | None = None) -> str:
    """The report as JSON; ``top`` limits the flipped-sample lists (their counts stay in ``mcnemar``)."""
    if top:
        report = json.loads(json.dumps(report))
        for comp in report["comparisons"]:
            for key in comp["flips"]:
                comp["flips"][key] = comp["flips"][key][:top]
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


RENDERERS = {"markdown": to_markdown, "html": to_html, "json": to_json}
