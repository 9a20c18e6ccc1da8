"""Figures from a folder of runs: metrics against parameter count, per-difficulty scores with
confidence intervals, top confusions, and an HTML report that embeds them with the leaderboard.

Every model of a task is drawn in the same figures, whatever request type it answered (a model that
ranks candidates beside models that generate). A folder holding several tasks gives one sub-folder per
task. Every figure is written as PNG and SVG. The drawing is :mod:`vlmbench.analysis.figures` and the data
it draws :mod:`vlmbench.analysis.figure_data`; ``report.html`` (below) says when, by which vlmbench and by
which command it was made, and per run when, by which version and by which command it was run.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench import __version__
from vlmbench.analysis import leaderboard
from vlmbench.analysis.figure_data import (
    CORE_METRICS,
    MAX_RUNS_SHOWN,
    SEMANTIC_METRICS,
    PlotRun,
    family,
    metric_title,
    metrics_in,
    run_confusions,
    shown_runs,
    task_name,
    task_runs,
    tasks_of,
)
from vlmbench.analysis.figures import confusion_bars, difficulty_bars, metric_vs_parameters
from vlmbench.analysis.html import render_page
from vlmbench.artifacts import run_files
from vlmbench.artifacts.provenance import command_line, now
from vlmbench.errors import VlmbenchError, unknown_message


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    png: Path
    svg: Path


@dataclass
class PlotReport:
    task: str
    output_dir: Path
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report: Path | None = None
    #: Where each run of the task came from (see :func:`vlmbench.analysis.run_source`).
    sources: list[dict] = field(default_factory=list)
    #: When, by which version and by which command this report was made.
    made: dict = field(default_factory=dict)


def render(
    runs_dir: str | Path, output_dir: str | Path | None = None, *, task: str | None = None, **options: Any
) -> PlotReport:
    """Draw every figure for the runs of one task under ``runs_dir`` into ``output_dir`` (default
    ``RUNS_DIR/plots``) as PNG and SVG, and write ``report.html`` embedding them with the leaderboard.
    A folder holding several tasks needs ``task`` here; :func:`render_tasks` draws each, and takes the
    same ``options``.
    """
    tasks = tasks_of(leaderboard.load_runs(runs_dir, []))
    if task is None and len(tasks) > 1:
        raise VlmbenchError(
            f"{runs_dir} holds runs of several tasks ({', '.join(tasks)}); choose one with --task"
        )
    (report,) = render_tasks(runs_dir, output_dir, task=task, **options)
    return report


def render_tasks(
    runs_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    task: str | None = None,
    metric: str = "exact_match",
    metrics: Sequence[str] | None = None,
    top: int = 10,
    unreadable: list[run_files.ArtifactError] | None = None,
    command: str | None = None,
    max_runs: int = MAX_RUNS_SHOWN,
) -> list[PlotReport]:
    """Draw every figure of every task under ``runs_dir`` (or only ``task``) as PNG and SVG, with a
    ``report.html`` each: one task into ``output_dir`` (default ``RUNS_DIR/plots``) itself, several
    into one sub-folder per task. A task whose runs were all skipped gets a report without figures.

    ``metric`` is the one shown per difficulty; ``metrics`` restricts the metric-vs-parameters
    figures to these names (default: every core and semantic-similarity metric present); both are
    checked for every task before anything is drawn. Runs whose artifacts cannot be read are left out
    and listed in ``unreadable``. ``command`` is the command line report.html names (default: this
    process's). ``max_runs`` bounds the runs drawn one by one (a bar, a label, a confusion panel each):
    beyond it the best by ``metric`` are, the size figures show the others as grey points, and only
    the drawn runs' predictions.jsonl are read.
    """
    if top < 1 or max_runs < 1:
        raise VlmbenchError("--top must be at least 1" if top < 1 else "max_runs must be at least 1")
    loaded = leaderboard.load_runs(runs_dir, unreadable)
    tasks = tasks_of(loaded)
    if task is not None and task not in tasks:
        raise VlmbenchError(unknown_message("task (among the runs)", task, tasks))
    chosen = [task] if task is not None else tasks
    out = Path(output_dir) if output_dir is not None else Path(runs_dir) / "plots"
    made = {"created": now(), "version": __version__, "command": command or command_line()}
    plans = []
    for name in chosen:
        runs, notes = task_runs(loaded, name)
        if not runs and len(chosen) == 1:
            raise VlmbenchError(f"no finished runs of task {name!r} under {runs_dir}")
        _check_metrics(runs, name, metric, metrics, several=len(chosen) > 1)
        folder = out if len(chosen) == 1 else out / run_files.safe_name(name)
        sources = [run_source(path, data) for path, data in loaded if task_name(data) == name]
        plans.append((PlotReport(name, folder, notes=notes, sources=sources, made=made), runs))
    for report, runs in plans:
        if not runs:
            report.notes.append(f"no finished runs of task {report.task!r}: nothing drawn")
            continue
        _draw(report, runs, metric, metrics, top, unreadable, max_runs)
        report.report = report.output_dir / "report.html"
        rows = [leaderboard.row_from_results(data, path.parent) for path, data in loaded
                if task_name(data) == report.task]  # fmt: skip
        run_files.write_text(report.report, to_html(report, rows))
    return [report for report, _ in plans]


def _check_metrics(
    runs: Sequence[PlotRun], task: str, metric: str, metrics: Sequence[str] | None, several: bool
) -> None:
    if not runs:
        return
    present = sorted({m for r in runs for m in r.metrics})
    where = f"in the runs of task {task!r}" if several else "in these runs"
    for name in [metric, *(metrics or [])]:
        if name not in present:
            raise VlmbenchError(unknown_message(f"metric ({where})", name, present))


def _metric_groups(
    runs: Sequence[PlotRun], metrics: Sequence[str] | None
) -> list[tuple[str, str, list[str]]]:
    core = metrics_in(runs, CORE_METRICS)
    semantic = metrics_in(runs, SEMANTIC_METRICS)
    if metrics:
        core = [m for m in metrics if m in core or not family(m, SEMANTIC_METRICS)]
        semantic = [m for m in metrics if family(m, SEMANTIC_METRICS)]
    return [
        ("metrics_vs_parameters", "Core metrics vs model size", core),
        ("semantic_vs_parameters", "Semantic-similarity metrics vs model size", semantic),
    ]


def _draw(
    report: PlotReport,
    runs: list[PlotRun],
    metric: str,
    metrics: Sequence[str] | None,
    top: int,
    unreadable: list[run_files.ArtifactError] | None,
    max_runs: int,
) -> None:
    import matplotlib

    from vlmbench.analysis import figures

    out, task = report.output_dir, report.task
    shown = shown_runs(runs, metric, max_runs)
    others = [r for r in runs if r not in shown]
    if others:
        report.notes.append(
            f"{len(runs)} runs: the figures show the {len(shown)} best by {metric} one by one; the size "
            f"figures draw the other {len(others)} as grey points (every run is in the leaderboard below)"
        )
    with matplotlib.rc_context(figures.RC):
        for name, title, names in _metric_groups(runs, metrics):
            if not names:
                if name == "semantic_vs_parameters":
                    report.notes.append(
                        "No semantic-similarity metric (SBERT, BERTScore, BARTScore, METEOR) in these runs."
                    )
                continue
            fig, fig_notes = metric_vs_parameters(
                shown, names, task, title, from_zero=name == "metrics_vs_parameters", others=others
            )
            report.notes += [n for n in fig_notes if n not in report.notes]
            caption = f"{', '.join(names)} against parameter count (log scale); error bars are 95% CIs."
            report.figures.append(Figure(name, title, caption, *figures.save(fig, out, name)))
        name = f"difficulty_{metric}"
        fig = difficulty_bars(shown, metric, task)
        caption = (
            "Per difficulty level, one bar per run; error bars are bootstrap 95% CIs; a flat bar is a zero."
        )
        report.figures.append(
            Figure(name, f"{metric_title(metric)} by difficulty", caption, *figures.save(fig, out, name))
        )
        found = run_confusions(shown, top, unreadable)
        drawn = [r for r in shown if r.label in found]
        if drawn:
            fig = confusion_bars(drawn, found, top, task)
            caption = (
                f"The {top} most frequent (reference → wrong answer) pairs per run, after VQA normalisation."
            )
            report.figures.append(
                Figure("confusions", "Top confusions", caption, *figures.save(fig, out, "confusions"))
            )
        else:
            report.notes.append("No confusions drawn: no predictions.jsonl of the runs shown could be read.")


# ----------------------------------------------------------------------------------------- report.html


def run_source(path: Path, data: dict) -> dict:
    """Where one run came from, as report.html lists it (from its results.json data)."""
    model = data.get("model") or {}
    prov = data.get("provenance") if isinstance(data.get("provenance"), dict) else {}
    timing = data.get("timing") if isinstance(data.get("timing"), dict) else {}
    return {
        "label": model.get("label") or model.get("name") or path.parent.name,
        "status": data.get("status"),
        "created": prov.get("created"),
        "version": prov.get("vlmbench_version"),
        "command": prov.get("command"),
        "cached_rerun": timing.get("cached_rerun") is True,
        "rescored": isinstance(data.get("rescored"), dict),
        "path": str(path.parent),
    }


def _leaderboard(rows: Sequence[leaderboard.Row], sort_by: str | None = None) -> dict[str, Any]:
    """The leaderboard of one task as report.html shows it (the rows of :mod:`vlmbench.analysis.leaderboard`),
    its notes numbered below it."""
    rows = leaderboard.sort_rows(rows, sort_by)
    cols = leaderboard.metric_columns(rows)
    refs, notes = leaderboard.footnotes(rows)
    cells = [
        [
            (r.model, ""),
            (leaderboard.parameters_text(r), "num"),
            ("–" if r.n is None else str(r.n), "num"),
            *((leaderboard.format_cell(r.metrics.get(c)), "num") for c in cols),
            (" ".join(f"[{i}]" for i in ids), ""),
        ]
        for r, ids in zip(rows, refs, strict=True)
    ]
    return {
        "header": ["model", "parameters", "n", *cols, "notes"],
        "rows": cells,
        "ci_line": leaderboard.CI_LINE,
        "notes": notes,
    }


def _when(source: dict) -> str:
    text = (source["created"] or "unknown").replace("T", " ")
    if source["cached_rerun"]:
        text += " (every answer from the cache: no model timings)"
    if source["rescored"]:
        text += " (scored again since)"
    return text


def _run_row(source: dict) -> dict[str, Any]:
    return {
        "label": source["label"],
        "skipped": source["status"] != "ok",
        "when": _when(source),
        "version": source["version"] or "unknown",
        "command": source["command"],
        "path": source["path"],
    }


def _figure(f: Figure) -> dict[str, Any]:
    return {
        "name": f.name,
        "title": f.title,
        "caption": f.caption,
        # embedded, so that the page shows its figures wherever it is copied to
        "png_base64": base64.b64encode(f.png.read_bytes()).decode("ascii"),
        "png": f.png.name,
        "svg": f.svg.name,
    }


def to_html(report: PlotReport, rows: Sequence[leaderboard.Row]) -> str:
    """``report.html``: how it was made, the leaderboard of ``rows`` (the task's runs), every figure (PNG
    embedded as base64, linking to its SVG next to it) and where each run came from
    (``templates/plot_report.html``)."""
    made = report.made or {}
    return render_page(
        "plot_report.html",
        title=f"vlmbench report — {report.task}",
        made={
            "created": (made.get("created") or "").replace("T", " "),
            "version": made.get("version"),
            "command": made.get("command"),
        },
        leaderboard=_leaderboard(rows),
        notes=report.notes,
        figures=[_figure(f) for f in report.figures],
        runs=[_run_row(s) for s in report.sources],
    )
