"""Leaderboards: one row per run (results.json), one column per metric, as Markdown and CSV; and the
per-difficulty view, one row per run and difficulty level.

Notes (skipped models, metrics and samples, limits, how a model answered) are numbered footnotes in
Markdown, so that a long reason shared by several runs is written once. Text from the runs (labels,
task names, notes) is escaped: inert Markdown (:func:`~vlmbench.analysis.display.markdown_text`) and
CSV cells no spreadsheet reads as a formula (:func:`~vlmbench.analysis.display.csv_cell`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench.analysis.display import csv_cell, level_order, markdown_text
from vlmbench.artifacts.run_files import ArtifactError, scan_results, write_text
from vlmbench.errors import VlmbenchError, unknown_message

#: The study's metric columns, in its order: BERTScore P/R/F1, BARTScore, SBERT, METEOR, Exact Match,
#: Average Mark, WUPS@0.0, WUPS@0.9 and weighted WUPS.
STUDY_COLUMNS = (
    "bertscore_precision", "bertscore_recall", "bertscore_f1", "bartscore_f", "sbert", "meteor",
    "exact_match", "average_mark", "wups_0.0", "wups_0.9", "wups_weighted",
)  # fmt: skip
#: Named column sets for ``--columns`` (``all``: every metric of the runs).
COLUMN_SETS = {"study": STUDY_COLUMNS}
CI_LINE = "Values are means with bootstrap 95% confidence intervals in brackets."


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
    #: The plugin's registered size (e.g. "385M") when the run did not record its own count.
    parameters_registered: str | None = None
    #: results.json's ``by_difficulty``: per level, ``n`` and ``metrics``.
    by_difficulty: dict[str, dict] = field(default_factory=dict)


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


def texts(value: Any) -> list[str]:
    """A list of texts from results.json (``notes``), whatever an edited file holds instead."""
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def registered_parameters(model: dict) -> str | None:
    """The plugin's registered size of a run's model (``385M``) when the run recorded no count."""
    value = model.get("parameters_registered")
    return str(value) if model.get("parameters") is None and value not in (None, "") else None


def row_from_results(data: dict, run_dir: Path) -> Row:
    """The leaderboard row of one run's results.json data."""
    model = data.get("model") or {}
    task = data.get("task") or {}
    notes = texts(data.get("notes"))
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
        parameters_registered=registered_parameters(model),
        by_difficulty=data.get("by_difficulty") or {},
    )


def _headline(reason: str, limit: int = 90) -> str:
    """The first clause of a long reason (results.json keeps it whole)."""
    head = reason.split(": (", 1)[0].split("; ", 1)[0]
    return head if len(head) <= limit else head[: limit - 1] + "…"


# -- columns and order ------------------------------------------------------------------------------
def _in_order(names: list[str]) -> list[str]:
    first = [c for c in ("exact_match", "average_mark") if c in names]
    return first + [c for c in names if c not in first]


def study_order(names: Sequence[str]) -> list[str]:
    """``names`` with the study's columns first, in the study's order (:data:`STUDY_COLUMNS`), then
    the others as given."""
    return [c for c in STUDY_COLUMNS if c in names] + [c for c in names if c not in STUDY_COLUMNS]


def metric_columns(rows: Sequence[Row]) -> list[str]:
    """Every metric of the rows: Exact Match and Average Mark first, the rest in order of appearance."""
    cols: list[str] = []
    for row in rows:
        for name in row.metrics:
            if name not in cols:
                cols.append(name)
    return _in_order(cols)


def difficulty_columns(rows: Sequence[Row]) -> list[str]:
    """Every metric reported per difficulty level by any of the rows, in :func:`metric_columns` order."""
    cols: list[str] = []
    for row in rows:
        for entry in row.by_difficulty.values():
            cols += [name for name in (entry.get("metrics") or {}) if name not in cols]
    return _in_order(cols)


def resolve_columns(rows: Sequence[Row], spec: str | None, *, by_difficulty: bool = False) -> list[str]:
    """The metric columns ``--columns`` asks for: ``all`` (default, every metric of the rows), a named
    set such as ``study`` (its columns in its order, shown even where no run has them), or metric names
    separated by commas."""
    present = difficulty_columns(rows) if by_difficulty else metric_columns(rows)
    if spec is None or spec.strip() in ("", "all"):
        return present
    if spec.strip() in COLUMN_SETS:
        return list(COLUMN_SETS[spec.strip()])
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        if name not in present:
            raise VlmbenchError(
                unknown_message("metric (for --columns)", name, [*COLUMN_SETS, "all", *present])
            )
    return names


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


# -- cells --------------------------------------------------------------------------------------------
def format_parameters(n: int | None) -> str:
    if n is None:
        return "?"
    if n == 0:
        return "0"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def parameters_text(row: Row) -> str:
    """The parameter count of a row; the plugin's registered size, marked so, when the run has none."""
    if row.parameters is None and row.parameters_registered:
        return f"{row.parameters_registered} (registered)"
    return format_parameters(row.parameters)


def format_cell(metric: dict | None) -> str:
    """``0.4123 [0.380, 0.441]``: a metric's value and its 95% interval."""
    if not metric or metric.get("value") is None:
        return "–"
    text = f"{metric['value']:.4f}"
    if metric.get("ci95"):
        lo, hi = metric["ci95"]
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def footnotes(rows: Sequence[Row]) -> tuple[list[list[int]], list[str]]:
    """Numbered notes: per row the numbers of its notes, and the texts (number i is ``texts[i - 1]``).
    A note shared by several rows gets one number."""
    found: list[str] = []
    refs = []
    for row in rows:
        ids = []
        for note in row.notes:
            if note not in found:
                found.append(note)
            ids.append(found.index(note) + 1)
        refs.append(ids)
    return refs, found


def _md_table(header: list[str], lines: list[list[str]]) -> list[str]:
    """A Markdown table; the header is escaped here, the cells by their makers (numbers and footnote
    marks are written as they are, text from the runs through :func:`markdown_text`)."""
    header = [markdown_text(h) for h in header]
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + [
        "| " + " | ".join(cells) + " |" for cells in lines
    ]


def _md_footnotes(found: list[str]) -> list[str]:
    return (
        ["", "Notes:", ""] + [f"{i}. {markdown_text(text)}" for i, text in enumerate(found, start=1)]
        if found
        else []
    )


# -- the leaderboard ----------------------------------------------------------------------------------
def to_markdown(rows: Sequence[Row], sort_by: str | None = None, columns: Sequence[str] | None = None) -> str:
    """The leaderboard; ``columns`` (default: every metric) chooses and orders the metric columns.
    Notes are numbered: the notes cell holds ``[1] [2]`` and the texts follow the table."""
    rows = sort_rows(rows, sort_by)
    cols = list(columns) if columns is not None else metric_columns(rows)
    refs, found = footnotes(rows)
    lines = []
    for r, ids in zip(rows, refs, strict=True):
        cells = [markdown_text(r.task), markdown_text(r.model), markdown_text(parameters_text(r)),
                 "–" if r.n is None else markdown_text(r.n)]  # fmt: skip
        cells += [format_cell(r.metrics.get(c)) for c in cols]
        lines.append([*cells, " ".join(f"[{i}]" for i in ids)])
    out = _md_table(["task", "model", "parameters", "n", *cols, "notes"], lines)
    out += ["", CI_LINE, *_md_footnotes(found)]
    return "\n".join(out) + "\n"


class _CsvWriter:
    """``csv.writer`` whose every cell goes through :func:`csv_cell`: no label, note or path from a run
    is read as a formula by the spreadsheet that opens the file."""

    def __init__(self, buf: io.StringIO) -> None:
        self._writer = csv.writer(buf)

    def writerow(self, cells: Sequence[Any]) -> None:
        self._writer.writerow([csv_cell(c) for c in cells])


def _metric_cells(metric: dict | None) -> list[Any]:
    m = metric or {}
    ci = m.get("ci95") or [None, None]
    return [m.get("value"), ci[0], ci[1]]


def _metric_header(cols: Sequence[str]) -> list[str]:
    return [h for c in cols for h in (c, f"{c}_ci_low", f"{c}_ci_high")]


def to_csv(rows: Sequence[Row], sort_by: str | None = None, columns: Sequence[str] | None = None) -> str:
    """The leaderboard as CSV. Each row keeps its notes in full (a CSV row stands alone when sorted or
    filtered); ``footnotes`` gives their numbers in the Markdown leaderboard."""
    rows = sort_rows(rows, sort_by)
    cols = list(columns) if columns is not None else metric_columns(rows)
    refs, _ = footnotes(rows)
    buf = io.StringIO()
    writer = _CsvWriter(buf)
    header = ["task", "model", "checkpoint", "parameters", "n", "status", *_metric_header(cols)]
    writer.writerow([*header, "notes", "run_dir", "footnotes", "parameters_registered"])
    for r, ids in zip(rows, refs, strict=True):
        line: list = [
            r.task,
            r.model,
            r.checkpoint or "",
            "" if r.parameters is None else r.parameters,
            r.n,
            r.status,
        ]
        for c in cols:
            line += _metric_cells(r.metrics.get(c))
        footnote_ids = " ".join(str(i) for i in ids)
        writer.writerow([*line, "; ".join(r.notes), r.path, footnote_ids, r.parameters_registered or ""])
    return buf.getvalue()


# -- per difficulty -------------------------------------------------------------------------------------
def difficulty_lines(rows: Sequence[Row], sort_by: str | None = None) -> list[tuple[Row, str, dict]]:
    """(row, level, that level's entry) for every run with per-difficulty results, runs in leaderboard
    order and levels in order."""
    return [
        (r, level, r.by_difficulty[level] or {})
        for r in sort_rows(rows, sort_by)
        for level in sorted(r.by_difficulty, key=level_order)
    ]


def _without_levels(rows: Sequence[Row]) -> list[str]:
    return [f"{r.model} ({'skipped' if r.status != 'ok' else 'no per-difficulty results'})" for r in rows
            if not r.by_difficulty]  # fmt: skip


def difficulty_markdown(
    rows: Sequence[Row], sort_by: str | None = None, columns: Sequence[str] | None = None
) -> str:
    """Per run and difficulty level: the number of scored samples and every metric (value and 95%
    interval) on that level's samples."""
    cols = list(columns) if columns is not None else difficulty_columns(rows)
    lines = [
        [
            markdown_text(r.task),
            markdown_text(r.model),
            markdown_text(level),
            markdown_text(entry.get("n", "–")),
            *(format_cell((entry.get("metrics") or {}).get(c)) for c in cols),
        ]
        for r, level, entry in difficulty_lines(rows, sort_by)
    ]
    out = [*_md_table(["task", "model", "difficulty", "n", *cols], lines), "", CI_LINE]
    missing = _without_levels(rows)
    if missing:
        out += ["", "Not shown: " + "; ".join(markdown_text(m) for m in missing) + "."]
    return "\n".join(out) + "\n"


def difficulty_csv(
    rows: Sequence[Row], sort_by: str | None = None, columns: Sequence[str] | None = None
) -> str:
    cols = list(columns) if columns is not None else difficulty_columns(rows)
    buf = io.StringIO()
    writer = _CsvWriter(buf)
    writer.writerow(["task", "model", "checkpoint", "difficulty", "n", *_metric_header(cols), "run_dir"])
    for r, level, entry in difficulty_lines(rows, sort_by):
        line: list = [r.task, r.model, r.checkpoint or "", level, entry.get("n")]
        for c in cols:
            line += _metric_cells((entry.get("metrics") or {}).get(c))
        writer.writerow([*line, r.path])
    return buf.getvalue()


def write(
    rows: Sequence[Row],
    out_dir: Path,
    sort_by: str | None = None,
    *,
    columns: Sequence[str] | None = None,
    by_difficulty: bool = False,
) -> tuple[Path, Path]:
    """leaderboard.md and leaderboard.csv in ``out_dir`` (``leaderboard_by_difficulty.*`` for the
    per-difficulty view)."""
    stem = "leaderboard_by_difficulty" if by_difficulty else "leaderboard"
    md, cs = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
    if by_difficulty:
        write_text(md, difficulty_markdown(rows, sort_by, columns))
        write_text(cs, difficulty_csv(rows, sort_by, columns))
    else:
        write_text(md, to_markdown(rows, sort_by, columns))
        write_text(cs, to_csv(rows, sort_by, columns))
    return md, cs
