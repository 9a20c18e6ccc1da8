"""Figures from a folder of runs: metrics against parameter count, per-difficulty scores with
confidence intervals, top confusions, and an HTML report that embeds them with the leaderboard.

Every model of a task is drawn in the same figures, whatever request type it answered (a model that
ranks candidates beside models that generate). A folder holding several tasks gives one sub-folder per
task. Every figure is written as PNG and SVG. The drawing is :mod:`vlmbench.figures`, the data it
draws :mod:`vlmbench.plotdata` and the page :mod:`vlmbench.plot_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vlmbench
from vlmbench import artifacts, leaderboard, plot_report
from vlmbench.errors import VlmbenchError, unknown_message
from vlmbench.figures import confusion_bars, difficulty_bars, metric_vs_parameters
from vlmbench.plotdata import (
    CORE_METRICS,
    SEMANTIC_METRICS,
    PlotRun,
    collect_runs,
    confusions,
    family,
    metric_title,
    metrics_in,
    task_name,
    task_runs,
    tasks_of,
)
from vlmbench.provenance import command_line, now

#: Names kept importable from here: the data, the figures and the page have modules of their own.
__all__ = [
    "CORE_METRICS", "SEMANTIC_METRICS", "Figure", "PlotReport", "PlotRun", "collect_runs", "confusion_bars",
    "confusions", "difficulty_bars", "metric_vs_parameters", "metrics_in", "render", "render_tasks",
]  # fmt: skip
_metric_title = metric_title  # the name older callers use


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
    #: Where each run of the task came from (see :func:`vlmbench.plot_report.run_source`).
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
    unreadable: list[artifacts.ArtifactError] | None = None,
    command: str | None = None,
) -> list[PlotReport]:
    """Draw every figure of every task under ``runs_dir`` (or only ``task``) as PNG and SVG, with a
    ``report.html`` each: one task into ``output_dir`` (default ``RUNS_DIR/plots``) itself, several
    into one sub-folder per task. A task whose runs were all skipped gets a report without figures.

    ``metric`` is the one shown per difficulty; ``metrics`` restricts the metric-vs-parameters
    figures to these names (default: every core and semantic-similarity metric present); both are
    checked for every task before anything is drawn. Runs whose artifacts cannot be read are left out
    and listed in ``unreadable``. ``command`` is the command line report.html names (default: this
    process's).
    """
    if top < 1:
        raise VlmbenchError("--top must be at least 1")
    loaded = leaderboard.load_runs(runs_dir, unreadable)
    tasks = tasks_of(loaded)
    if task is not None and task not in tasks:
        raise VlmbenchError(unknown_message("task (among the runs)", task, tasks))
    chosen = [task] if task is not None else tasks
    out = Path(output_dir) if output_dir is not None else Path(runs_dir) / "plots"
    made = {"created": now(), "version": vlmbench.__version__, "command": command or command_line()}
    plans = []
    for name in chosen:
        runs, notes = task_runs(loaded, name, unreadable)
        if not runs and len(chosen) == 1:
            raise VlmbenchError(f"no finished runs of task {name!r} under {runs_dir}")
        _check_metrics(runs, name, metric, metrics, several=len(chosen) > 1)
        folder = out if len(chosen) == 1 else out / artifacts.safe_name(name)
        sources = [plot_report.run_source(path, data) for path, data in loaded if task_name(data) == name]
        plans.append((PlotReport(name, folder, notes=notes, sources=sources, made=made), runs))
    for report, runs in plans:
        if runs:
            _draw(report, runs, runs_dir, metric, metrics, top)
        else:
            report.notes.append(f"no finished runs of task {report.task!r}: nothing drawn")
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
    runs_dir: str | Path,
    metric: str,
    metrics: Sequence[str] | None,
    top: int,
) -> None:
    import matplotlib

    from vlmbench import figures

    out, task = report.output_dir, report.task
    with matplotlib.rc_context(figures.RC):
        for name, title, names in _metric_groups(runs, metrics):
            if not names:
                if name == "semantic_vs_parameters":
                    report.notes.append(
                        "No semantic-similarity metric (SBERT, BERTScore, BARTScore, METEOR) in these runs."
                    )
                continue
            fig, fig_notes = metric_vs_parameters(
                runs, names, task, title, from_zero=name == "metrics_vs_parameters"
            )
            report.notes += [n for n in fig_notes if n not in report.notes]
            caption = f"{', '.join(names)} against parameter count (log scale); error bars are 95% CIs."
            report.figures.append(Figure(name, title, caption, *figures.save(fig, out, name)))
        name = f"difficulty_{metric}"
        fig = difficulty_bars(runs, metric, task)
        caption = (
            "Per difficulty level, one bar per run; error bars are bootstrap 95% CIs; a flat bar is a zero."
        )
        report.figures.append(
            Figure(name, f"{metric_title(metric)} by difficulty", caption, *figures.save(fig, out, name))
        )
        fig = confusion_bars(runs, top, task)
        caption = (
            f"The {top} most frequent (reference → wrong answer) pairs per run, after VQA normalisation."
        )
        report.figures.append(
            Figure("confusions", "Top confusions", caption, *figures.save(fig, out, "confusions"))
        )
    report.report = out / "report.html"
    artifacts.write_text(report.report, plot_report.to_html(report, runs_dir))
