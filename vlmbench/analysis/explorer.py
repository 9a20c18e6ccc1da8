"""The per-sample table behind ``vlmbench view``: runs of each task as columns over their samples, the
filters of the page, metrics recomputed on a filtered selection, and two runs paired as ``compare`` pairs them.

Runs are read with the checked readers (:func:`vlmbench.analysis.runs.load_run`); a task's samples become
arrays (difficulty, per-model scores, right/wrong, answer codes) so that a filter over 80,000 samples and
8 models is a few vectorised operations, and a page renders only its own rows."""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from vlmbench.analysis.compare import CORRECTNESS, compare_pair, corpus_metric
from vlmbench.analysis.display import level_order
from vlmbench.analysis.runs import Run, load_run, unique_labels
from vlmbench.artifacts import run_files
from vlmbench.errors import VlmbenchError, unknown_message
from vlmbench.tasks.images import ImageProblem, confined_path

UNKNOWN_LEVEL = -1
PAGE_SIZE = 50
OUTCOMES = ("right", "wrong", "skipped")
# "sample 1a2b (11/x.jpg): why" as the runner words a skipped sample in skipped_sample_examples
_EXAMPLE = re.compile(r"^sample (\S+) (?:\([^)]*\))?:? ?(.*)$", re.S)


@dataclass
class ModelColumn:
    """One run's answers over its task's samples, aligned with :attr:`TaskTable.sample_ids`."""

    label: str
    run: Run
    answers: list[str | None]
    ok: np.ndarray  # answered (status ok)
    present: np.ndarray  # the run has a row for the sample at all
    right: np.ndarray  # ok and exact_match >= 0.5
    codes: np.ndarray  # the answer as an integer (same answer, same code, across models); -1 unanswered
    scores: dict[str, np.ndarray]  # per-sample scores, NaN where there is none
    reasons: dict[int, str]  # why a sample was skipped, where the run recorded it
    _corpus: dict = field(default_factory=dict, repr=False)

    def whole_run(self, metric: str) -> float | None:
        value = ((self.run.results.get("metrics") or {}).get(metric) or {}).get("value")
        return float(value) if isinstance(value, (int, float)) else None

    def corpus_value(self, name: str, mask: np.ndarray, difficulty: np.ndarray) -> tuple[float | None, str]:
        """Corpus metric ``name`` (e.g. Average Mark) on the answered samples of ``mask``, rebuilt as
        ``compare`` rebuilds it (the run's options and difficulty weights, its per-sample columns); None and
        the reason where that cannot be done."""
        if name not in self._corpus:
            try:
                metric = corpus_metric(name, self.run, None)
                missing = [c for c in metric.required_columns() if c not in self.scores]
                if missing:
                    raise VlmbenchError(f"needs per-sample {missing[0]!r} scores, which this run lacks")
                self._corpus[name] = metric
            except VlmbenchError as exc:
                self._corpus[name] = f"cannot be recomputed on a selection: {exc}"
        metric = self._corpus[name]
        if isinstance(metric, str):
            return None, metric
        columns = {c: self.scores[c] for c in metric.required_columns()}
        keep = mask & self.ok
        for values in columns.values():
            keep &= ~np.isnan(values)
        index = np.flatnonzero(keep)
        if not len(index):
            return None, "no answered samples in the selection"
        from vlmbench.plugin.metric import ScoreTable

        value = finite(
            metric.compute(ScoreTable({c: v[index] for c, v in columns.items()}, difficulty[index]))
        )
        return value, "" if value is not None else "undefined on this selection (e.g. no level with a weight)"


@dataclass
class TaskTable:
    """The samples of one task (every run's, in the first run's order) and a column per run."""

    name: str
    index: int
    image_root: Path | None
    sample_ids: list[str]
    questions: list[str]
    references: list[list[str]]
    images: list[str | None]
    difficulty: np.ndarray
    models: list[ModelColumn] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)  # per-sample scores, in the runs' order
    corpus_metrics: list[str] = field(default_factory=list)  # results.json metrics without them
    _pairs: dict = field(default_factory=dict, repr=False)

    @property
    def labels(self) -> list[str]:
        return [m.label for m in self.models]

    def model(self, label: str) -> ModelColumn:
        for m in self.models:
            if m.label == label:
                return m
        raise VlmbenchError(unknown_message(f"model of task {self.name}", label, self.labels))

    def levels(self) -> list[int]:
        return sorted({int(d) for d in np.unique(self.difficulty)}, key=lambda d: level_order(level_name(d)))

    @cached_property
    def haystack(self) -> list[str]:
        """Per sample, its question, references and every answer in lower case: what text search reads."""
        parts = [self.questions, ["\n".join(r) for r in self.references]]
        parts += [[a or "" for a in m.answers] for m in self.models]
        return ["\n".join(texts).lower() for texts in zip(*parts, strict=True)]

    def pair(self, a: str, b: str) -> dict:
        """``compare``'s pairing of run ``b`` against baseline ``a`` (flipped questions first), computed once."""
        if (a, b) not in self._pairs:
            run_a, run_b = self.model(a).run, self.model(b).run
            if not all(CORRECTNESS in (r.results.get("metrics") or {}) for r in (run_a, run_b)):
                raise VlmbenchError(f"pairing {a} and {b} needs {CORRECTNESS} in both runs, as compare does")
            # only the metric that defines right and wrong: the flips are what the page shows
            report = compare_pair(run_a, run_b, metrics=[CORRECTNESS], bootstrap_samples=0)
            self._pairs[(a, b)] = report
        return self._pairs[(a, b)]


def level_name(level: int) -> str:
    return "unknown" if level == UNKNOWN_LEVEL else str(level)


@dataclass
class Explorer:
    """Every task found under the paths given, and what could not be read (shown as notes)."""

    tasks: list[TaskTable]
    notes: list[str]

    def task(self, name: str | None) -> TaskTable:
        if name is None:
            return self.tasks[0]
        for t in self.tasks:
            if t.name == name:
                return t
        raise VlmbenchError(unknown_message("task", name, [t.name for t in self.tasks]))


def run_folders(paths: list[Path]) -> list[Path]:
    """The run folders named by ``paths``: run folders themselves, or folders holding runs at any depth."""
    out: list[Path] = []
    for path in paths:
        if path.is_file() and path.name == run_files.RESULTS:
            path = path.parent
        found = (
            [path]
            if (path / run_files.RESULTS).is_file()
            else [p.parent for p in run_files.find_results(path)]
        )
        if not found:
            raise VlmbenchError(
                f"{path}: no {run_files.RESULTS} found; is this a run folder or a folder of runs?"
            )
        out += [f for f in found if f not in out]
    return out


def load_explorer(paths: list[Path]) -> Explorer:
    """Read every run under ``paths``; runs that were skipped or cannot be read become notes."""
    by_task: dict[str, list[Run]] = {}
    notes: list[str] = []
    for folder in run_folders(paths):
        try:
            results = run_files.load_results(folder / run_files.RESULTS)
            if results.get("status") != "ok":  # a model that could not run: nothing to show, say why
                model = (results.get("model") or {}).get("label") or folder.name
                notes.append(f"{folder}: {model} was skipped ({results.get('reason', 'no reason recorded')})")
                continue
            run = load_run(folder)
        except VlmbenchError as exc:
            notes.append(str(exc))
            continue
        by_task.setdefault(str(run.task.get("name")), []).append(run)
    if not by_task:
        raise VlmbenchError("none of the runs given has predictions to show: " + "; ".join(notes))
    tasks = [_task_table(name, i, runs) for i, (name, runs) in enumerate(sorted(by_task.items()))]
    return Explorer(tasks, notes)


def image_root(results: dict) -> Path | None:
    """The folder a run's image paths are relative to: recorded in results.json (task.image_root), or for
    runs written before it was, the image_root of the task file the run names as its source."""
    task = results.get("task") or {}
    if task.get("image_root"):
        return Path(task["image_root"])
    source = task.get("source")
    if not source or not Path(source).is_file():
        return None
    from vlmbench.tasks.spec import load_spec

    try:
        root = load_spec(source).dataset.image_root
    except VlmbenchError:
        return None
    return Path(root) if root else None


def _task_table(name: str, index: int, runs: list[Run]) -> TaskTable:
    labels = unique_labels(
        [r.label for r in runs], [(r.results.get("model") or {}).get("fingerprint") for r in runs]
    )
    rows: dict[str, dict] = {}
    for run in runs:
        for sid, row in run.predictions.items():
            rows.setdefault(sid, row)
    sample_ids = list(rows)
    table = TaskTable(
        name=name,
        index=index,
        image_root=next((root for r in runs if (root := image_root(r.results)) is not None), None),
        sample_ids=sample_ids,
        questions=[str(rows[s].get("question") or "") for s in sample_ids],
        references=[[str(x) for x in rows[s].get("references") or []] for s in sample_ids],
        images=[rows[s].get("image") for s in sample_ids],
        difficulty=np.array(
            [
                UNKNOWN_LEVEL if rows[s].get("difficulty") is None else int(rows[s]["difficulty"])
                for s in sample_ids
            ],
            dtype=np.int64,
        ),
    )
    vocabulary: dict[str, int] = {}
    for run, label in zip(runs, labels, strict=True):
        run.label = label
        table.models.append(_column(run, sample_ids, vocabulary))
    for m in table.models:
        table.metrics += [k for k in m.scores if k not in table.metrics]
    for m in table.models:
        table.corpus_metrics += [
            k
            for k in m.run.results.get("metrics") or {}
            if k not in table.metrics and k not in table.corpus_metrics
        ]
    return table


def _column(run: Run, sample_ids: list[str], vocabulary: dict[str, int]) -> ModelColumn:
    n = len(sample_ids)
    answers: list[str | None] = [None] * n
    ok, present = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    codes = np.full(n, -1, dtype=np.int64)
    scores: dict[str, list[float]] = {}
    nan = float("nan")
    for i, sid in enumerate(sample_ids):
        row = run.predictions.get(sid)
        if row is None:
            continue
        present[i] = True
        if row.get("status") != "ok":
            continue
        ok[i] = True
        answer = "" if row.get("answer") is None else str(row["answer"])
        answers[i] = answer
        codes[i] = vocabulary.setdefault(answer.strip().lower(), len(vocabulary))
        for metric, value in (row.get("scores") or {}).items():
            if isinstance(value, (int, float)):
                column = scores.get(metric)
                if column is None:
                    column = scores[metric] = [nan] * n
                column[i] = float(value)
    arrays = {metric: np.asarray(values, dtype=np.float64) for metric, values in scores.items()}
    correct = arrays.get(CORRECTNESS)
    right = ok & (correct >= 0.5) if correct is not None else np.zeros(n, dtype=bool)
    return ModelColumn(run.label, run, answers, ok, present, right, codes, arrays, _reasons(run, sample_ids))


def _reasons(run: Run, sample_ids: list[str]) -> dict[int, str]:
    """Why samples were skipped: a row's own ``reason`` where it has one, else the run's example messages
    (which name the sample), else the run's counts of skip reasons."""
    examples = {}
    for text in run.results.get("skipped_sample_examples") or []:
        match = _EXAMPLE.match(str(text))
        if match:
            examples[match.group(1)] = match.group(2)
    counts = run.results.get("skipped_samples") or {}
    fallback = "skipped (this run's reasons: " + ", ".join(f"{k} ×{v}" for k, v in counts.items()) + ")"
    out = {}
    for i, sid in enumerate(sample_ids):
        row = run.predictions.get(sid)
        if row is None:
            out[i] = "not in this run"
        elif row.get("status") != "ok":
            out[i] = str(row.get("reason") or examples.get(sid) or (fallback if counts else "skipped"))
    return out


def resolve_image(root: Path | None, rel: str) -> Path | None:
    """The image file ``rel`` under ``root``, or None: confined to the root as a run reads its images
    (:func:`~vlmbench.tasks.images.confined_path`), a regular file, and no backslash (a URL path means
    ``/``). Anything else is not served."""
    if root is None or not rel or "\\" in rel:
        return None
    try:
        path = confined_path(Path(root), rel)
        return path if stat.S_ISREG(os.stat(path).st_mode) else None
    except (ImageProblem, OSError):
        return None


def mean_of(values: np.ndarray, mask: np.ndarray) -> float | None:
    """The mean of ``values`` where ``mask`` holds and a value exists (NaN is "no score"); None if none."""
    chosen = values[mask]
    chosen = chosen[~np.isnan(chosen)]
    return float(chosen.mean()) if len(chosen) else None


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
