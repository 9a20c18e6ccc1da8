"""One run folder read for per-sample analysis: its results.json and its predictions by sample id."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlmbench.artifacts import run_files
from vlmbench.errors import VlmbenchError


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
        if not (path / run_files.RESULTS).exists():
            found = run_files.find_results(path)
            if len(found) > 1:
                raise VlmbenchError(
                    f"{path} holds {len(found)} runs; name one run folder (e.g. {found[0].parent})"
                )
            if not found:
                raise VlmbenchError(f"{path}: no {run_files.RESULTS} found; is this a run folder?")
            path = found[0].parent
        folder = path
    elif path.name == run_files.RESULTS:
        folder = path.parent
    elif path.exists():
        raise VlmbenchError(f"{path}: expected a run folder or its {run_files.RESULTS}")
    else:
        raise VlmbenchError(f"{path}: no such run folder")
    results = run_files.load_results(folder / run_files.RESULTS)
    if results.get("status") != "ok":
        reason = results.get("reason", "no reason recorded")
        raise VlmbenchError(f"{folder}: this run was skipped ({reason}); it has no predictions to compare")
    preds_path = folder / run_files.PREDICTIONS
    if not preds_path.exists():
        raise VlmbenchError(f"{folder}: {run_files.PREDICTIONS} is missing; per-sample comparison needs it")
    predictions: dict[str, dict] = {}
    for row in run_files.read_predictions(preds_path):  # each sample id once: checked there
        predictions[str(row.get("sample_id"))] = row
    model = results.get("model") or {}
    label = model.get("label") or model.get("name") or folder.name
    return Run(folder, results, predictions, label)


def unique_labels(labels: Sequence[str], fingerprints: Sequence[str | None]) -> list[str]:
    """``labels`` made distinct: a label given to several runs (e.g. two checkpoints of one model) gets
    the first 8 characters of each run's fingerprint, and one still repeated (the same fingerprint
    twice) its position."""
    # Counted once, not per label: a plot over a thousand runs makes this call.
    given = Counter(labels)
    out = [
        f"{label} ({(fp or str(i))[:8]})" if given[label] > 1 else label
        for i, (label, fp) in enumerate(zip(labels, fingerprints, strict=True))
    ]
    again = Counter(out)
    return [f"{label} #{i + 1}" if again[label] > 1 else label for i, label in enumerate(out)]


def task_mismatches(a: Run, b: Run) -> list[str]:
    """The task identity fields (name, version, hash) on which two runs differ."""
    out = []
    for key in ("name", "version", "hash"):
        va, vb = a.task.get(key), b.task.get(key)
        if str(va) != str(vb):
            out.append(f"task {key}: {va!r} vs {vb!r}")
    return out
