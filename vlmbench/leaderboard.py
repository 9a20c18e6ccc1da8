"""Leaderboards: one row per run (results.json), one column per metric, as Markdown and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vlmbench.artifacts import ArtifactError, scan_results, write_text
from vlmbench.errors import VlmbenchError, unknown_message


@dataclass
class Row:
    task: str
    model: str
    checkpoint: str | None
    parameters: int | None
    n: int | None
    status: str
    metrics: dict[str, dict]
    notes: list[str] = field(default_factory=list)
    path: str = ""


def collect(
    runs_dir: str | Path, task: str | None = None, unreadable: list[ArtifactError] | None = None
) -> list[Row]:
    """One row per readable results.json under ``runs_dir`` (of ``task`` when given).

    A file that cannot be read is appended to ``unreadable`` when a list is given, and the other runs
    are tabulated; without one, the first such file is an error. Finding no readable file is an error.
    """
    rows = []
    for path, data in load_runs(runs_dir, unreadable):
        if task and (data.get("task") or {}).get("name") != task:
            continue
        rows.append(row_from_results(data, path.parent))
    return rows


def load_runs(runs_dir: str | Path, unreadable: list[ArtifactError] | None = None) -> list[tuple[Path, dict]]:
    """The readable results.json files under ``runs_dir`` with their data; the problems of the others
    are appended to ``unreadable`` when a list is given, else the first is raised."""
    loaded, bad = scan_results(Path(runs_dir))
    if unreadable is None and bad:
        raise bad[0]
    if unreadable is not None:
        unreadable.extend(bad)
    if not loaded:
        if bad:
            raise VlmbenchError(f"none of the {len(bad)} results.json files under {runs_dir} can be read")
        raise VlmbenchError(f"no results.json found under {runs_dir}")
    return loaded


def row_from_results(data: dict, run_dir: Path) -> Row:
    """The leaderboard row of one run's results.json data."""
    model = data.get("model") or {}
    task = data.get("task") or {}
    notes = [str(n) for n in data.get("notes") or []]
    if data.get("status") != "ok":
        notes.append(f"skipped: {data.get('reason') or 'unknown reason'}")
    for name, reason in (data.get("skipped_metrics") or {}).items():
        notes.append(f"{name} skipped: {_headline(reason)}")
    skipped_samples = data.get("skipped_samples") or {}
    if skipped_samples:
        detail = ", ".join(f"{k} {v}" for k, v in sorted(skipped_samples.items()))
        notes.append(f"{sum(skipped_samples.values())} samples skipped ({detail})")
    vocabulary = model.get("vocabulary")
    if vocabulary:
        notes.append(
            f"{vocabulary['reference_outside_share']:.0%} of references outside the model's answer vocabulary"
        )
    for reason, count in sorted((data.get("warnings") or {}).items()):
        notes.append(f"{count} {reason.replace('_', ' ')}")
    return Row(
        task=task.get("name") or "?",
        model=model.get("label") or model.get("name", "?"),
        checkpoint=model.get("checkpoint") or model.get("default_checkpoint"),
        parameters=model.get("parameters"),
        n=task.get("n_scored"),
        status=data.get("status", "?"),
        metrics=data.get("metrics") or {},
        notes=notes,
        path=str(run_dir),
    )


def _headline(reason: str, limit: int = 90) -> str:
    """The first clause of a long reason (results.json keeps it whole)."""
    head = reason.split(": (", 1)[0].split("; ", 1)[0]
    return head if len(head) <= limit else head[: limit - 1] + "…"


def metric_columns(rows: Sequence[Row]) -> list[str]:
    """Every metric of the rows: Exact Match and Average Mark first, the rest in order of appearance."""
    cols: list[str] = []
    for row in rows:
        for name in row.metrics:
            if name not in cols:
                cols.append(name)
    first = [c for c in ("exact_match", "average_mark") if c in cols]
    return first + [c for c in cols if c not in first]


def sort_rows(rows: Sequence[Row], sort_by: str | None) -> list[Row]:
    cols = metric_columns(rows)
    if sort_by is None:
        sort_by = "exact_match" if "exact_match" in cols else (cols[0] if cols else None)
    elif sort_by not in cols:
        raise VlmbenchError(unknown_message("metric to sort by", sort_by, cols))

    def key(row: Row):
        m = row.metrics.get(sort_by) if sort_by else None
        value = m.get("value") if m else None
        if value is None:
            return (1, 0.0, row.task, row.model)
        sign = -1.0 if m.get("higher_is_better", True) else 1.0
        return (0, sign * value, row.task, row.model)

    return sorted(rows, key=key)


def format_parameters(n: int | None) -> str:
    if n is None:
        return "?"
    if n == 0:
        return "0"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def format_cell(metric: dict | None) -> str:
    """``0.4123 [0.380, 0.441]``: a metric's value and its 95% interval."""
    if not metric or metric.get("value") is None:
        return "–"
    text = f"{metric['value']:.4f}"
    if metric.get("ci95"):
        lo, hi = metric["ci95"]
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def to_markdown(rows: Sequence[Row], sort_by: str | None = None) -> str:
    rows = sort_rows(rows, sort_by)
    cols = metric_columns(rows)
    header = ["task", "model", "parameters", "n", *cols, "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        cells = [r.task, r.model, format_parameters(r.parameters), "–" if r.n is None else str(r.n)]
        cells += [format_cell(r.metrics.get(c)) for c in cols]
        cells.append("; ".join(r.notes).replace("|", "/").replace("\n", " "))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Values are means with bootstrap 95% confidence intervals in brackets.")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Row], sort_by: str | None = None) -> str:
    rows = sort_rows(rows, sort_by)
    cols = metric_columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf)
    header = ["task", "model", "checkpoint", "parameters", "n", "status"]
    for c in cols:
        header += [c, f"{c}_ci_low", f"{c}_ci_high"]
    writer.writerow([*header, "notes", "run_dir"])
    for r in rows:
        line: list = [
            r.task,
            r.model,
            r.checkpoint or "",
            "" if r.parameters is None else r.parameters,
            r.n,
            r.status,
        ]
        for c in cols:
            m = r.metrics.get(c) or {}
            ci = m.get("ci95") or [None, None]
            line += [m.get("value"), ci[0], ci[1]]
        writer.writerow([*line, "; ".join(r.notes), r.path])
    return buf.getvalue()


def write(rows: Sequence[Row], out_dir: Path, sort_by: str | None = None) -> tuple[Path, Path]:
    md, cs = out_dir / "leaderboard.md", out_dir / "leaderboard.csv"
    write_text(md, to_markdown(rows, sort_by))
    write_text(cs, to_csv(rows, sort_by))
    return md, cs
