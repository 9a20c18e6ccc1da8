"""What ``vlmbench plot`` draws, before any drawing: the finished runs of each task under a folder,
their sizes, the runs each figure shows, the metric families and display names, and the confusions of
a run.

A folder may hold a thousand runs. What is read and drawn stays bounded by what a figure can show:
results.json of every run (a few kilobytes each) for the sizes and metrics, but per-sample answers
(predictions.jsonl) only of the runs whose confusions are drawn, one at a time, and no more than
:data:`MAX_RUNS_SHOWN` runs drawn one by one (bars, labels, legend entries, confusion panels)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vlmbench.analysis import leaderboard
from vlmbench.analysis.runs import unique_labels
from vlmbench.artifacts import run_files
from vlmbench.errors import VlmbenchError, unknown_message
from vlmbench.tasks.normalize import vqa_normalize

#: The study's headline metrics (``wups`` matches every WUPS threshold column, e.g. ``wups_0.9``).
CORE_METRICS = ("exact_match", "average_mark", "wups")
#: Embedding- and alignment-based similarity metrics, drawn in a figure of their own (in the study's order).
SEMANTIC_METRICS = ("bertscore", "bartscore", "sbert", "meteor")
UNKNOWN_TASK = "?"
#: Runs a figure draws one by one (a colour, a label, a bar, a confusion panel each): the best by the
#: chosen metric when there are more. The size figures draw the others as grey points.
MAX_RUNS_SHOWN = 12

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT]?)", re.I)
_UNITS = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


@dataclass
class PlotRun:
    label: str
    parameters: int | None
    results: dict
    path: Path
    predictions: Path | None = None  # its predictions.jsonl, read when its confusions are drawn
    #: The plugin's registered size ("385M") of a run that recorded no count (an older cached rerun).
    parameters_registered: str | None = None

    @property
    def metrics(self) -> dict[str, dict]:
        return self.results.get("metrics") or {}

    @property
    def size(self) -> float | None:
        """Where the run sits on a parameter axis: its count, else its registered size; 0 for a model
        without parameters, None when unknown."""
        if self.parameters is not None:
            return float(self.parameters)
        return parse_size(self.parameters_registered)

    @property
    def size_is_registered(self) -> bool:
        return self.parameters is None and self.size is not None


def parse_size(text: str | None) -> float | None:
    """``"385M"`` -> 385e6, ``"3.9B"`` -> 3.9e9, ``"385M + adapter"`` -> 385e6; None when not a size."""
    match = _SIZE.match(text or "")
    return float(match.group(1)) * _UNITS[match.group(2).upper()] if match else None


def task_name(data: dict) -> str:
    return (data.get("task") or {}).get("name") or UNKNOWN_TASK


def tasks_of(loaded: Sequence[tuple[Path, dict]]) -> list[str]:
    return sorted({task_name(d) for _, d in loaded})


def collect_runs(
    runs_dir: str | Path, task: str | None = None, unreadable: list[run_files.ArtifactError] | None = None
) -> tuple[str, list[PlotRun], list[str]]:
    """The finished runs of one task under ``runs_dir``: (task name, runs, notes on what was left out).

    A run whose results.json cannot be read is left out and its problem appended to ``unreadable`` when
    a list is given (without one, it is an error); predictions.jsonl is read when confusions are drawn
    (:func:`run_confusions`)."""
    loaded = leaderboard.load_runs(runs_dir, unreadable)
    tasks = tasks_of(loaded)
    if task is None:
        if len(tasks) > 1:
            raise VlmbenchError(
                f"{runs_dir} holds runs of several tasks ({', '.join(tasks)}); choose one with --task"
            )
        task = tasks[0]
    elif task not in tasks:
        raise VlmbenchError(unknown_message("task (among the runs)", task, tasks))
    runs, notes = task_runs(loaded, task)
    if not runs:
        raise VlmbenchError(f"no finished runs of task {task!r} under {runs_dir}")
    return task, runs, notes


def task_runs(loaded: Sequence[tuple[Path, dict]], task: str) -> tuple[list[PlotRun], list[str]]:
    """The finished runs of ``task`` among ``loaded`` (results.json paths and data), smallest model
    first, with distinct labels; and a note per run left out."""
    runs, notes = [], []
    for path, data in loaded:
        if task_name(data) != task:
            continue
        model = data.get("model") or {}
        label = model.get("label") or model.get("name") or path.parent.name
        if data.get("status") != "ok":
            notes.append(f"{label}: skipped ({data.get('reason', 'no reason recorded')}); not plotted")
            continue
        predictions = path.parent / run_files.PREDICTIONS
        registered = leaderboard.registered_parameters(model)
        found = predictions if predictions.exists() else None
        runs.append(PlotRun(label, model.get("parameters"), data, path.parent, found, registered))
    fingerprints = [(r.results.get("model") or {}).get("fingerprint") or r.path.name for r in runs]
    for run, label in zip(runs, unique_labels([r.label for r in runs], fingerprints), strict=True):
        run.label = label
    # Smallest models first: legends and bar groups then read in order of size.
    runs.sort(key=lambda r: (r.size is None, r.size or 0, r.label))
    return runs, notes


def family(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + "_") or name.startswith(p + "-") for p in prefixes)


def metrics_in(runs: Sequence[PlotRun], prefixes: Sequence[str]) -> list[str]:
    """Metric names present in any run that belong to a family, in the family order given; within a
    family in the study's column order, then by name."""
    study = {name: i for i, name in enumerate(leaderboard.STUDY_COLUMNS)}
    names: list[str] = []
    for prefix in prefixes:
        found = sorted(
            {m for r in runs for m in r.metrics if family(m, (prefix,))},
            key=lambda m: (study.get(m, len(study)), m),
        )
        names += [m for m in found if m not in names]
    return names


_TITLES = {
    "exact_match": "Exact Match",
    "average_mark": "Average Mark",
    "wups": "WUPS",
    "sbert": "SBERT",
    "bertscore": "BERTScore",
    "bartscore": "BARTScore",
    "meteor": "METEOR",
    "wups_weighted": "Weighted WUPS",
}


def metric_title(name: str) -> str:
    """Display names: exact_match -> Exact Match, wups_0.9 -> WUPS@0.9, bertscore_f1 -> BERTScore F1."""
    if name in _TITLES:
        return _TITLES[name]
    head, _, rest = name.partition("_")
    if head in _TITLES and rest:
        if head == "wups":
            return f"WUPS@{rest}"
        return (
            f"{_TITLES[head]} {rest.replace('_', ' ').upper() if len(rest) <= 3 else rest.replace('_', ' ')}"
        )
    return name.replace("_", " ")


def shown_runs(runs: Sequence[PlotRun], metric: str, limit: int = MAX_RUNS_SHOWN) -> list[PlotRun]:
    """The runs drawn one by one, in the order given: all of them, or the ``limit`` best by ``metric``
    (as the leaderboard sorts it; runs without it last)."""
    if len(runs) <= limit:
        return list(runs)

    def rank(run: PlotRun) -> tuple:
        m = run.metrics.get(metric) or {}
        value = m.get("value")
        if not isinstance(value, (int, float)):
            return (1, 0.0, run.label)
        return (0, -value if m.get("higher_is_better", True) else value, run.label)

    best = {id(r) for r in sorted(runs, key=rank)[:limit]}
    return [r for r in runs if id(r) in best]


Confusions = tuple[list[tuple[str, str, int]], int, int]


def run_confusions(
    runs: Sequence[PlotRun], top: int, unreadable: list[run_files.ArtifactError] | None = None
) -> dict[str, Confusions]:
    """Per run label, its :func:`confusions`, reading one predictions.jsonl at a time. A run whose file
    cannot be read is left out, its problem appended to ``unreadable`` (without a list, it is an error)."""
    out: dict[str, Confusions] = {}
    for run in runs:
        try:
            rows = run_files.read_predictions(run.predictions) if run.predictions else []
        except run_files.ArtifactError as exc:
            if unreadable is None:
                raise
            unreadable.append(exc)
            continue
        out[run.label] = confusions(rows, top)
    return out


def confusions(rows: Iterable[dict], top: int) -> Confusions:
    """The ``top`` most frequent (reference -> wrong answer) pairs of a run's prediction rows, with the
    number of wrong and of answered samples. A sample is wrong when its Exact Match is 0 (or, without
    per-sample Exact Match, when its normalised answer matches no normalised reference)."""
    pairs: Counter[tuple[str, str]] = Counter()
    wrong = answered = 0
    for row in rows:
        if row.get("status") != "ok":
            continue
        answered += 1
        refs = [str(r) for r in row.get("references") or []]
        answer = "" if row.get("answer") is None else str(row["answer"])
        em = (row.get("scores") or {}).get("exact_match")
        is_wrong = (
            em == 0 if em is not None else vqa_normalize(answer) not in {vqa_normalize(r) for r in refs}
        )
        if not is_wrong:
            continue
        wrong += 1
        reference = vqa_normalize(refs[0]) if refs else "?"
        pairs[(reference, vqa_normalize(answer) or "(empty)")] += 1
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [(ref, ans, n) for (ref, ans), n in ranked], wrong, answered
