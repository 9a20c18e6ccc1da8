"""``score``: compute metrics for predictions that already exist, without running a model.

Two kinds of input:

- a **stored run** (its folder, or its ``predictions.jsonl``): the stored answers are scored again with any
  metric set; the model block, task block and configuration of the run are kept, so the result compares
  with every other run. By default the run's own ``results.json`` and ``predictions.jsonl`` are rewritten
  (model outputs are never changed; only the scores are).
- an **external file** (CSV or JSONL) with one prediction and one reference per row, named by a column
  mapping (``prediction="generated_answer"``, ``reference="answer"``...). Predictions go through the answer
  filters (the standard chain by default) and lose surrounding whitespace, as reference cells do, then
  are scored. The results' model block says the predictions
  come from an external file and carries the file's sha256.

Both write ``predictions.jsonl`` and ``results.json`` in the same schema as a run (status ``ok``), so
``leaderboard`` and ``compare`` treat them like any run. Scoring itself is :func:`vlmbench.scoring.scorer.score`.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vlmbench.artifacts import run_files
from vlmbench.artifacts.provenance import provenance
from vlmbench.errors import DataError, VlmbenchError
from vlmbench.files import open_regular
from vlmbench.plugin.loading import Plugins, load_plugins
from vlmbench.plugin.metric import MetricContext
from vlmbench.scoring.external import Columns, read_external
from vlmbench.scoring.records import merge_metric_blocks, metric_blocks, score_records, scored_answer
from vlmbench.scoring.score_cache import default_score_cache_path
from vlmbench.scoring.scorer import build_metrics
from vlmbench.scoring.stats import check_statistics
from vlmbench.tasks.filters import check_filters
from vlmbench.tasks.protocol import ProtocolSpec, protocol_record
from vlmbench.tasks.spec import DEFAULT_WEIGHTS, MetricSpec, TaskSpec

#: Metrics used when none are named: the task defaults plus the whole suite.
DEFAULT_METRICS = ("exact_match", "average_mark", "wups", "meteor", "sbert", "bertscore", "bartscore")
#: The answer filters of a task that does not name its own.
DEFAULT_FILTERS: tuple[str, ...] = tuple(TaskSpec.__dataclass_fields__["filters"].default_factory())


@dataclass(frozen=True)
class _ScoreOptions:
    path: Path | None  # the score cache, None: off
    progress: bool
    protocol: dict | None = None  # the protocol the scores follow, as results.json records it


@dataclass
class RescoreResult:
    run_dir: Path
    results: dict
    kind: str  # "run" or "external"
    skipped_samples: Counter = field(default_factory=Counter)


def rescore(
    source: str | Path,
    *,
    metrics: Sequence[str | MetricSpec] | None = None,
    output_dir: str | Path | None = None,
    name: str | None = None,
    task_name: str | None = None,
    filters: Sequence[str] | None = None,
    columns: Columns | None = None,
    reference_separator: str | None = None,
    difficulty_weights: dict[int, float] | None = None,
    bootstrap_samples: int | None = None,
    seed: int | None = None,
    device: str = "auto",
    runs_root: str | Path = "runs",
    plugins: Plugins | None = None,
    keep_others: bool = True,
    cache: bool = True,
    progress: bool = True,
    replace: bool = False,
    protocol: ProtocolSpec | None = None,
) -> RescoreResult:
    """Score ``source`` (a run folder, a run's predictions.jsonl, or an external CSV/JSONL file).

    Re-scoring a stored run adds or updates the metrics named and keeps the run's other results, unless
    ``keep_others`` is false. When ``filters`` re-derive the answers, the run's other metrics are
    computed again too (their stored values belong to the old answers).

    ``filters=None`` keeps a run's stored answers and applies :data:`DEFAULT_FILTERS` to an external file;
    a list (possibly empty) re-derives every answer from the raw output with those filters.
    ``bootstrap_samples``, ``seed`` and ``difficulty_weights`` default to the run's own (1000, 0 and the
    study's weights for external files). An external file's results go to
    ``runs_root/<task_name>/<name>-<sha8>`` unless ``output_dir`` is given. ``cache=False`` neither
    reads nor stores metric scores in the score cache (``vlmbench score --no-cache``); ``progress=False``
    prints no progress lines. A folder other than the scored run's own that already holds a result is
    written into only under the rule ``run`` follows (:func:`~vlmbench.artifacts.run_files.check_replaceable`:
    the same data and predictions again), unless ``replace``.
    A ``protocol`` gives the metrics (with its options) and the filters where ``metrics`` and
    ``filters`` are not given, and is recorded in results.json.
    """
    check_statistics(1000 if bootstrap_samples is None else bootstrap_samples, 0 if seed is None else seed)
    plugins = plugins or load_plugins()
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    if not (source.is_dir() or source.is_file()):  # a FIFO or a device would block or never end
        raise DataError(f"{source}: not a regular file or folder")
    if protocol is not None:
        filters = protocol.filters if filters is None else filters
        metrics = metrics or protocol.metrics
    if filters is not None:
        check_filters(list(filters), where="--filters")
    specs = [m if isinstance(m, MetricSpec) else MetricSpec(m) for m in (metrics or DEFAULT_METRICS)]
    score_cache = _ScoreOptions(
        default_score_cache_path() if cache else None, progress, protocol_record(protocol)
    )
    run_file = _stored_run(source)
    if run_file is not None:
        return _rescore_run(
            run_file, specs, output_dir, filters, difficulty_weights, bootstrap_samples, seed, device, plugins,
            keep_others, score_cache, replace,
        )  # fmt: skip
    return _rescore_external(
        source,
        specs,
        output_dir=output_dir,
        name=name,
        task_name=task_name,
        filters=DEFAULT_FILTERS if filters is None else tuple(filters),
        columns=columns or Columns(),
        separator=reference_separator,
        weights=dict(DEFAULT_WEIGHTS) if difficulty_weights is None else difficulty_weights,
        bootstrap_samples=1000 if bootstrap_samples is None else bootstrap_samples,
        seed=0 if seed is None else seed,
        device=device,
        runs_root=Path(runs_root),
        plugins=plugins,
        score_cache=score_cache,
        replace=replace,
    )


# ------------------------------------------------------------------------------------------ stored runs


def _stored_run(source: Path) -> Path | None:
    """The predictions.jsonl of a stored run, if ``source`` is one (a run folder or that file)."""
    if source.is_dir():
        path = source / run_files.PREDICTIONS
        if path.is_file():
            return path
        raise DataError(f"{source}: a folder to score must hold a run's {run_files.PREDICTIONS}")
    if source.name != run_files.PREDICTIONS:
        return None
    if (source.parent / run_files.RESULTS).is_file():
        return source
    # Without its results.json, a file that merely shares the name but holds other rows is scored as
    # an external file.
    with open_regular(source) as fh:
        first = next((line for line in fh if line.strip()), b"")
    try:
        row = run_files.parse_json(first)
    except ValueError:
        return None
    if isinstance(row, dict) and {"sample_id", "references", "status"} <= row.keys():
        return source
    return None


def _rescore_run(
    path: Path,
    specs: list[MetricSpec],
    output_dir: str | Path | None,
    filters: Sequence[str] | None,
    weights: dict[int, float] | None,
    bootstrap_samples: int | None,
    seed: int | None,
    device: str,
    plugins: Plugins,
    keep_others: bool = True,
    score_cache: _ScoreOptions | None = None,
    replace: bool = False,
) -> RescoreResult:
    records = run_files.read_predictions(path)
    if not records:
        raise DataError(f"{path}: no prediction records")
    results_path = path.parent / run_files.RESULTS
    # Whatever stands at results.json must be a readable one: it is about to be replaced.
    old = run_files.load_results(results_path) if os.path.lexists(results_path) else {}
    old.pop("_path", None)
    config = dict(old.get("config") or {})
    if weights is None:
        stored = config.get("difficulty_weights")
        weights = {int(k): float(v) for k, v in stored.items()} if stored else dict(DEFAULT_WEIGHTS)
    bootstrap_samples = (
        config.get("bootstrap_samples", 1000) if bootstrap_samples is None else bootstrap_samples
    )
    seed = config.get("seed", 0) if seed is None else seed
    check_statistics(bootstrap_samples, seed, source=f"{results_path}: config")
    kept = old if keep_others else None
    if filters is not None:
        for row in records:
            if row["status"] == "ok" and row.get("raw") is not None:
                row["answer"] = scored_answer(row["raw"], filters)
        config["filters"] = list(filters)
        if keep_others:  # new answers: the run's other metrics are scored again, not kept stale
            named = {s.name for s in specs}
            specs = specs + [MetricSpec(n, (d or {}).get("options") or {}) for n, d in
                             (old.get("metric_details") or {}).items() if n not in named and n in plugins.metrics]  # fmt: skip
            kept = None

    out_dir = Path(output_dir) if output_dir is not None else path.parent
    if not _same_folder(out_dir, path.parent):  # the run itself is rescored in place, by definition
        old_task, old_model = old.get("task") or {}, old.get("model") or {}
        run_files.check_replaceable(
            out_dir, data=old_task.get("hash"), fingerprint=old_model.get("fingerprint"),
            n_samples=old_task.get("n_samples") or len(records), replace=replace,
        )  # fmt: skip
    stats = _Statistics(weights, bootstrap_samples, seed, device, plugins, score_cache)
    results = _score_and_write(records, specs, stats, out_dir, base=old, keep=kept)
    results["status"] = "ok"
    results["config"] = {
        **config,
        "scoring_device": results["config"]["scoring_device"],
        "difficulty_weights": {str(k): v for k, v in weights.items()},
        "bootstrap_samples": bootstrap_samples,
        "seed": seed,
    }
    results["task"] = {**(old.get("task") or {"name": path.parent.name}), "n_scored": _n_ok(records)}
    results["model"] = old.get("model") or {"name": path.parent.name, "label": path.parent.name}
    results["rescored"] = {
        "at": _now(),
        "from": str(path),
        "metrics": [s.name for s in specs],
        "run_provenance": old.get("provenance"),
    }
    run_files.write_json(out_dir / run_files.RESULTS, results)
    return RescoreResult(out_dir, results, "run")


# ------------------------------------------------------------------------------------------ external


def _rescore_external(
    path: Path,
    specs: list[MetricSpec],
    *,
    output_dir: str | Path | None,
    name: str | None,
    task_name: str | None,
    filters: tuple[str, ...],
    columns: Columns,
    separator: str | None,
    weights: dict[int, float],
    bootstrap_samples: int,
    seed: int,
    device: str,
    runs_root: Path,
    plugins: Plugins,
    score_cache: _ScoreOptions | None = None,
    replace: bool = False,
) -> RescoreResult:
    found = read_external(path, columns, separator, filters)
    label = name or path.stem
    task = task_name or "external"
    out_dir = (
        Path(output_dir)
        if output_dir is not None
        else runs_root / run_files.safe_name(task) / f"{run_files.safe_name(label)}-{found.sha256[:8]}"
    )
    run_files.check_replaceable(
        out_dir, data=None, fingerprint=found.sha256[:16], n_samples=len(found.records), replace=replace
    )
    stats = _Statistics(weights, bootstrap_samples, seed, device, plugins, score_cache)
    results = _score_and_write(found.records, specs, stats, out_dir)
    results.update(
        status="ok",
        task={
            "name": task,
            "source": str(path),
            "columns": found.columns,
            "reference_separator": separator,
            "n_samples": len(found.records),
            "n_scored": _n_ok(found.records),
        },
        model={
            "name": label,
            "label": label,
            "kind": "external",
            "source": "external predictions file (no model was run)",
            "file": str(path),
            "sha256": found.sha256,
            "fingerprint": found.sha256[:16],
            "checkpoint": None,
            "parameters": None,
        },
        skipped_samples=dict(sorted(found.skipped.items())),
        skipped_sample_examples=found.examples[:20],
        config={
            "scoring_device": results["config"]["scoring_device"],
            "filters": list(filters),
            "difficulty_weights": {str(k): v for k, v in weights.items()},
            "bootstrap_samples": bootstrap_samples,
            "seed": seed,
        },
    )
    run_files.write_json(out_dir / run_files.RESULTS, _ordered(results))
    return RescoreResult(out_dir, results, "external", found.skipped)


# ------------------------------------------------------------------------------------------ shared


@dataclass(frozen=True)
class _Statistics:
    """How scores are aggregated, where metrics compute, and with which plugins and score cache."""

    weights: dict[int, float]
    bootstrap_samples: int
    seed: int
    device: str
    plugins: Plugins
    score_cache: _ScoreOptions | None


def _score_and_write(
    records: list[dict], specs: list[MetricSpec], stats: _Statistics, out_dir: Path, *,
    base: dict | None = None, keep: dict | None = None,
) -> dict:  # fmt: skip
    """Score ``records`` with ``specs`` and write predictions.jsonl; ``keep``: earlier results whose
    other metrics (and per-sample scores) stay beside the new ones."""
    from vlmbench.devices import resolve_device

    weights, bootstrap_samples, seed = stats.weights, stats.bootstrap_samples, stats.seed
    device = resolve_device(stats.device)
    context = MetricContext(difficulty_weights=weights, seed=seed, device=device)
    metrics = build_metrics(specs, stats.plugins, context)
    if not any(r["status"] == "ok" for r in records):
        raise DataError("no predictions to score (every row was skipped)")
    earlier = {id(r): dict(r.get("scores") or {}) for r in records} if keep else {}
    started = time.perf_counter()
    scored = score_records(
        records,
        metrics,
        weights=weights,
        bootstrap_samples=bootstrap_samples,
        seed=seed,
        cache=stats.score_cache.path if stats.score_cache else None,
        progress=stats.score_cache.progress if stats.score_cache else False,
    )
    seconds = time.perf_counter() - started
    blocks = metric_blocks(scored)
    if keep:
        blocks = merge_metric_blocks(keep, blocks)
        for row in records:
            row["scores"] = {**earlier[id(row)], **row["scores"]}
    run_files.write_jsonl(out_dir / run_files.PREDICTIONS, records)
    results = dict(base or {})
    # A stored run's own warnings stay; counts from an earlier scoring are replaced by this one's.
    warnings = {k: v for k, v in (results.get("warnings") or {}).items() if not k.startswith("left_out_of_")}
    results.update(
        schema=run_files.RESULTS_SCHEMA,
        **blocks,
        warnings=dict(sorted({**warnings, **scored.warnings}.items())),
        timing={
            **(results.get("timing") or {}),
            "scoring_seconds": seconds,
            "scoring_by_metric": scored.seconds,
        },
        provenance=provenance(),
    )
    results["config"] = {**(results.get("config") or {}), "scoring_device": device}
    if stats.score_cache is not None and stats.score_cache.protocol is not None:
        results["protocol"] = stats.score_cache.protocol
    return results


def _ordered(results: dict) -> dict:
    """results.json keys in the order a run writes them."""
    order = ("schema", "status", "task", "model", "metrics", "by_difficulty", "metric_details",
             "skipped_metrics", "skipped_samples", "skipped_sample_examples", "warnings", "config",
             "timing")  # fmt: skip
    return {**{k: results[k] for k in order if k in results}, **results}


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _n_ok(records: list[dict]) -> int:
    return sum(1 for r in records if r["status"] == "ok")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def parse_metric_args(values: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["wups:mode=reference", "sbert:batch_size=64,device=cpu"]`` -> options per metric name."""
    from vlmbench.plugin.args import parse_kv

    joined: dict[str, list[str]] = {}
    for value in values:
        metric, sep, rest = value.partition(":")
        if not sep or not metric.strip():
            raise VlmbenchError(f"--metric-args {value!r}: expected METRIC:key=value,...")
        joined.setdefault(metric.strip(), []).append(rest)
    out: dict[str, dict[str, str]] = {}
    for metric, parts in joined.items():
        try:  # one option given twice, in one flag or in two, is an error, not the last one winning
            out[metric] = parse_kv(",".join(parts))
        except VlmbenchError as exc:
            raise VlmbenchError(f"--metric-args of {metric}: {exc}") from None
    return out
