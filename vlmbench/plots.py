"""Figures from a folder of runs: metrics against parameter count, per-difficulty scores with
confidence intervals, top confusions, and an HTML report that embeds them with the leaderboard.

matplotlib is imported only here, and only when a figure is drawn; figures are built as
``matplotlib.figure.Figure`` objects on the Agg canvas, so no GUI backend or global pyplot state is
involved. Every figure is written as PNG and SVG.
"""

from __future__ import annotations

import base64
import html
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench import artifacts, leaderboard
from vlmbench.errors import VlmbenchError, unknown_message
from vlmbench.normalize import vqa_normalize

#: The study's headline metrics (``wups`` matches every WUPS threshold column, e.g. ``wups_0.9``).
CORE_METRICS = ("exact_match", "average_mark", "wups")
#: Embedding- and alignment-based similarity metrics, drawn in a figure of their own.
SEMANTIC_METRICS = ("sbert", "bertscore", "bartscore", "meteor")

_RC = {
    "font.size": 11,
    "axes.titlesize": 12.5,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "figure.titlesize": 14,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "vlmbench",  # stable element ids: the same runs give the same SVG
    "svg.fonttype": "none",  # text stays text: searchable, selectable, smaller
}
_DPI = 130


@dataclass
class PlotRun:
    label: str
    parameters: int | None
    results: dict
    path: Path
    predictions: list[dict] | None = None  # None: the run folder has no predictions.jsonl

    @property
    def metrics(self) -> dict[str, dict]:
        return self.results.get("metrics") or {}


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


# --------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------
def collect_runs(
    runs_dir: str | Path, task: str | None = None, unreadable: list[artifacts.ArtifactError] | None = None
) -> tuple[str, list[PlotRun], list[str]]:
    """The finished runs of one task under ``runs_dir``: (task name, runs, notes on what was left out).

    A run whose results.json or predictions.jsonl cannot be read is left out and its problem appended to
    ``unreadable`` when a list is given (without one, it is an error)."""
    loaded = leaderboard.load_runs(runs_dir, unreadable)
    tasks = sorted({(d.get("task") or {}).get("name") or "?" for _, d in loaded})
    if task is None:
        if len(tasks) > 1:
            raise VlmbenchError(
                f"{runs_dir} holds runs of several tasks ({', '.join(tasks)}); choose one with --task"
            )
        task = tasks[0]
    elif task not in tasks:
        raise VlmbenchError(unknown_message("task (among the runs)", task, tasks))
    runs, notes = [], []
    for path, data in loaded:
        if ((data.get("task") or {}).get("name") or "?") != task:
            continue
        model = data.get("model") or {}
        label = model.get("label") or model.get("name") or path.parent.name
        if data.get("status") != "ok":
            notes.append(f"{label}: skipped ({data.get('reason', 'no reason recorded')}); not plotted")
            continue
        predictions = None
        if (path.parent / artifacts.PREDICTIONS).exists():
            try:
                predictions = artifacts.read_predictions(path.parent / artifacts.PREDICTIONS)
            except artifacts.ArtifactError as exc:
                if unreadable is None:
                    raise
                unreadable.append(exc)
                continue
        params = model.get("parameters")
        runs.append(PlotRun(label, params, data, path.parent, predictions))
    if not runs:
        raise VlmbenchError(f"no finished runs of task {task!r} under {runs_dir}")
    counts = Counter(r.label for r in runs)
    for r in runs:
        if counts[r.label] > 1:
            fp = (r.results.get("model") or {}).get("fingerprint") or r.path.name
            r.label = f"{r.label} ({fp[:8]})"
    # Smallest models first: legends and bar groups then read in order of size.
    runs.sort(key=lambda r: (r.parameters is None, r.parameters or 0, r.label))
    return task, runs, notes


def _family(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + "_") or name.startswith(p + "-") for p in prefixes)


def metrics_in(runs: Sequence[PlotRun], prefixes: Sequence[str]) -> list[str]:
    """Metric names present in any run that belong to a family, in the family order given."""
    names: list[str] = []
    for prefix in prefixes:
        found = sorted({m for r in runs for m in r.metrics if _family(m, (prefix,))})
        names += [m for m in found if m not in names]
    return names


def confusions(run: PlotRun, top: int) -> tuple[list[tuple[str, str, int]], int, int]:
    """The ``top`` most frequent (reference -> wrong answer) pairs of a run, with the number of wrong
    and of answered samples. A sample is wrong when its Exact Match is 0 (or, without per-sample
    Exact Match, when its normalised answer matches no normalised reference)."""
    pairs: Counter[tuple[str, str]] = Counter()
    wrong = answered = 0
    for row in run.predictions or []:
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


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------
def _colours(runs: Sequence[PlotRun]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(runs) <= 10 else "tab20"]
    return {r.label: cmap(i % cmap.N) for i, r in enumerate(runs)}


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_dir: Path, name: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
    fig.savefig(png, format="png", dpi=_DPI)
    fig.savefig(svg, format="svg", metadata={"Date": None})
    return png, svg


def _params_text(n: float, _pos: Any = None) -> str:
    """Tick labels for parameter counts: 100M, 1B, 1.5B (no trailing .0)."""
    return leaderboard.format_parameters(round(n)).replace(".0", "")


_TITLES = {
    "exact_match": "Exact Match",
    "average_mark": "Average Mark",
    "wups": "WUPS",
    "sbert": "SBERT",
    "bertscore": "BERTScore",
    "bartscore": "BARTScore",
    "meteor": "METEOR",
}


def _metric_title(name: str) -> str:
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


def _error(metric: dict) -> tuple[float, float]:
    value, ci = metric.get("value"), metric.get("ci95")
    if value is None or not ci:
        return (0.0, 0.0)
    return (max(0.0, value - ci[0]), max(0.0, ci[1] - value))


def _grid(k: int, max_cols: int = 3) -> tuple[int, int]:
    cols = 2 if k == 4 and max_cols >= 2 else min(max_cols, k)
    return math.ceil(k / cols), cols


def metric_vs_parameters(
    runs: Sequence[PlotRun], metrics: Sequence[str], task: str, title: str, *, from_zero: bool = True
) -> tuple[Any, list[str]]:
    """One panel per metric: value (with 95% CI) against parameter count on a log axis, points
    labelled with the model. Runs without a parameter count (0, e.g. blind baselines, or unknown)
    cannot sit on a log axis: they are drawn as dashed horizontal reference lines, labelled."""
    from matplotlib.ticker import FuncFormatter

    colours = _colours(runs)
    rows, cols = _grid(len(metrics))
    fig = _new_figure(5.2 * cols, 4.2 * rows)
    fig.suptitle(f"{title} — {task}")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    sized = [r for r in runs if r.parameters]
    unsized = [r for r in runs if not r.parameters]
    notes = []
    if unsized:
        notes.append(
            "Runs without a parameter count are drawn as dashed horizontal lines: "
            + ", ".join(f"{r.label} ({'0' if r.parameters == 0 else 'unknown'})" for r in unsized)
        )
    if sized:
        lo = min(r.parameters for r in sized) / 2.5
        hi = max(r.parameters for r in sized) * 2.5
    else:
        lo, hi = 1e6, 1e10
    for ax, metric in zip(axes, metrics, strict=False):
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        for r in sized:
            m = r.metrics.get(metric)
            if not m or m.get("value") is None:
                continue
            err = _error(m)
            ax.errorbar(
                [r.parameters],
                [m["value"]],
                yerr=[[err[0]], [err[1]]],
                fmt="o",
                markersize=7,
                capsize=4,
                color=colours[r.label],
            )
            ax.annotate(
                r.label,
                (r.parameters, m["value"]),
                xytext=(6, 5),
                textcoords="offset points",
                fontsize=9.5,
                color="#222",
            )
        for j, r in enumerate(unsized):
            m = r.metrics.get(metric)
            if not m or m.get("value") is None:
                continue
            ax.axhline(m["value"], color=colours[r.label], linestyle="--", linewidth=1.4)
            note = "no parameters" if r.parameters == 0 else "parameters unknown"
            # Left, centre, right in turn: baselines often score alike and their labels would overlap.
            where, align = [(0.01, "left"), (0.5, "center"), (0.99, "right")][j % 3]
            ax.annotate(
                f"{r.label} ({note})",
                (where, m["value"]),
                xycoords=("axes fraction", "data"),
                xytext=(0, 3),
                textcoords="offset points",
                ha=align,
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
                fontsize=9,
                color=colours[r.label],
            )
        if not sized:
            ax.text(0.5, 0.97, "no run has a parameter count", transform=ax.transAxes, ha="center",
                    va="top", color="#666")  # fmt: skip
        ax.xaxis.set_major_formatter(FuncFormatter(_params_text))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
        ax.set_xlabel("Parameters (log scale)")
        ax.set_ylabel(f"{_metric_title(metric)} (95% CI)")
        ax.set_title(_metric_title(metric))
        ax.grid(True, which="major", alpha=0.3)
        if from_zero:
            _fraction_ylim(ax, [r.metrics.get(metric) for r in runs])
        else:  # similarity scores live in a narrow band: zoom to it
            ax.margins(y=0.2)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    return fig, notes


def _fraction_ylim(ax, metrics: Sequence[dict | None]) -> None:
    """Scores in [0, 1] start at 0 (points are then read against zero), with headroom above the
    highest interval for the labels."""
    values = [m["value"] for m in metrics if m and m.get("value") is not None]
    if not values or not all(0 <= v <= 1 for v in values):
        return
    tops = [(m.get("ci95") or [m["value"]] * 2)[1] for m in metrics if m and m.get("value") is not None]
    ax.set_ylim(0, min(1.05, max(0.05, max(tops)) * 1.15 + 0.02))


def _level_key(level: str) -> tuple[int, float]:
    try:
        return (0, float(level))
    except ValueError:
        return (1, 0.0)


def difficulty_bars(runs: Sequence[PlotRun], metric: str, task: str) -> Any:
    """Grouped bars: one group per difficulty level, one bar per run, 95% CI error bars."""
    import numpy as np

    colours = _colours(runs)
    levels = sorted({lvl for r in runs for lvl in (r.results.get("by_difficulty") or {})}, key=_level_key)
    width = max(6.5, 1.1 * len(levels) * max(1, len(runs)) * 0.45 + 3)
    fig = _new_figure(min(width, 16), 4.8)
    ax = fig.subplots()
    x = np.arange(len(levels))
    bar_w = 0.8 / max(1, len(runs))
    values_seen = []
    for i, r in enumerate(runs):
        by = r.results.get("by_difficulty") or {}
        heights, errs_lo, errs_hi = [], [], []
        for lvl in levels:
            m = ((by.get(lvl) or {}).get("metrics") or {}).get(metric) or {}
            v = m.get("value")
            heights.append(np.nan if v is None else v)
            lo, hi = _error(m)
            errs_lo.append(lo)
            errs_hi.append(hi)
            if v is not None:
                values_seen.append(v)
        centres = x - 0.4 + bar_w * (i + 0.5)
        ax.bar(
            centres,
            heights,
            bar_w * 0.92,
            yerr=[errs_lo, errs_hi],
            capsize=3,
            color=colours[r.label],
            label=r.label,
            error_kw={"elinewidth": 1, "ecolor": "#333"},
        )
        for cx, h in zip(centres, heights, strict=True):
            if h == 0:  # a zero-height bar is invisible: say it is a zero, not a missing value
                ax.annotate("0", (cx, 0), xytext=(0, 2), textcoords="offset points", ha="center",
                            fontsize=8.5, color=colours[r.label])  # fmt: skip
    counts = []
    for lvl in levels:
        n = next(((r.results.get("by_difficulty") or {}).get(lvl, {}).get("n") for r in runs
                  if lvl in (r.results.get("by_difficulty") or {})), None)  # fmt: skip
        counts.append(f"{lvl}\n(n={n})" if n is not None else lvl)
    ax.set_xticks(x, counts)
    ax.set_xlabel("Difficulty level (number of questions)")
    ax.set_ylabel(f"{_metric_title(metric)} (mean, 95% CI)")
    ax.set_title(f"{_metric_title(metric)} by difficulty — {task}")
    if values_seen and all(0 <= v <= 1 for v in values_seen):
        ax.set_ylim(0, 1.05)
    ax.grid(True, axis="y", alpha=0.3)
    fig.legend(title="model", loc="outside right upper", frameon=False)
    return fig


def confusion_bars(runs: Sequence[PlotRun], top: int, task: str) -> Any:
    """Per run, the ``top`` most frequent (reference → wrong answer) pairs as horizontal bars."""
    colours = _colours(runs)
    rows, cols = _grid(len(runs), max_cols=2)
    fig = _new_figure(6.4 * cols, (0.32 * top + 1.4) * rows)
    fig.suptitle(f"Top confusions (reference → wrong answer) — {task}")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, r in zip(axes, runs, strict=False):
        pairs, wrong, answered = confusions(r, top)
        ax.set_title(f"{r.label}: {wrong} wrong of {answered}")
        if not pairs:
            ax.text(0.5, 0.5, "no wrong answers", transform=ax.transAxes, ha="center", color="#666")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        labels = [f"{ref} → {ans}" for ref, ans, _ in pairs]
        counts = [n for _, _, n in pairs]
        ax.barh(range(len(pairs)), counts, color=colours[r.label])
        ax.set_yticks(range(len(pairs)), labels)
        ax.invert_yaxis()  # most frequent at the top
        ax.set_xlabel("Count")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    return fig


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
def render(
    runs_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    task: str | None = None,
    metric: str = "exact_match",
    metrics: Sequence[str] | None = None,
    top: int = 10,
    unreadable: list[artifacts.ArtifactError] | None = None,
) -> PlotReport:
    """Draw every figure for the runs of one task under ``runs_dir`` into ``output_dir`` (default
    ``RUNS_DIR/plots``) as PNG and SVG, and write ``report.html`` embedding them with the leaderboard.

    ``metric`` is the one shown per difficulty; ``metrics`` restricts the metric-vs-parameters
    figures to these names (default: every core and semantic-similarity metric present). Runs whose
    artifacts cannot be read are left out and listed in ``unreadable`` (see :func:`collect_runs`).
    """
    import matplotlib

    if top < 1:
        raise VlmbenchError("--top must be at least 1")
    task, runs, notes = collect_runs(runs_dir, task, unreadable)
    out = Path(output_dir) if output_dir is not None else Path(runs_dir) / "plots"
    report = PlotReport(task, out, notes=list(notes))
    present = sorted({m for r in runs for m in r.metrics})
    for name in [metric, *(metrics or [])]:
        if name not in present:
            raise VlmbenchError(unknown_message("metric (in these runs)", name, present))

    with matplotlib.rc_context(_RC):
        core = metrics_in(runs, CORE_METRICS)
        semantic = metrics_in(runs, SEMANTIC_METRICS)
        if metrics:
            core = [m for m in metrics if m in core or not _family(m, SEMANTIC_METRICS)]
            semantic = [m for m in metrics if _family(m, SEMANTIC_METRICS)]
        groups = [
            ("metrics_vs_parameters", "Core metrics vs model size", core),
            ("semantic_vs_parameters", "Semantic-similarity metrics vs model size", semantic),
        ]
        for name, title, names in groups:
            if not names:
                if name == "semantic_vs_parameters":
                    report.notes.append(
                        "No semantic-similarity metric (SBERT, BERTScore, BARTScore, METEOR) in these runs."
                    )
                continue
            fig, fig_notes = metric_vs_parameters(
                runs, names, task, title, from_zero=name == "metrics_vs_parameters"
            )
            for n in fig_notes:
                if n not in report.notes:
                    report.notes.append(n)
            png, svg = _save(fig, out, name)
            report.figures.append(
                Figure(
                    name,
                    title,
                    f"{', '.join(names)} against parameter count (log scale); error bars are 95% CIs.",
                    png,
                    svg,
                )
            )
        fig = difficulty_bars(runs, metric, task)
        name = f"difficulty_{metric}"
        png, svg = _save(fig, out, name)
        report.figures.append(
            Figure(
                name,
                f"{_metric_title(metric)} by difficulty",
                "Per difficulty level, one bar per run; error bars are bootstrap 95% CIs.",
                png,
                svg,
            )
        )
        fig = confusion_bars(runs, top, task)
        png, svg = _save(fig, out, "confusions")
        report.figures.append(
            Figure(
                "confusions",
                "Top confusions",
                f"The {top} most frequent (reference → wrong answer) pairs per run, after VQA normalisation.",
                png,
                svg,
            )
        )
    report.report = out / "report.html"
    artifacts.write_text(report.report, to_html(report, runs_dir))
    return report


def _h(text: Any) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def leaderboard_html(runs_dir: str | Path, task: str, sort_by: str | None = None) -> str:
    """The leaderboard of one task as an HTML table (the rows of :mod:`vlmbench.leaderboard`); files
    that cannot be read are left out (:func:`collect_runs` reports them)."""
    rows = leaderboard.collect(runs_dir, task=task, unreadable=[])
    rows = leaderboard.sort_rows(rows, sort_by)
    cols = leaderboard.metric_columns(rows)
    header = ["model", "parameters", "n", *cols, "notes"]
    out = ["<table>", "<tr>" + "".join(f"<th>{_h(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = [
            f"<td>{_h(r.model)}</td>",
            f'<td class="num">{_h(leaderboard.format_parameters(r.parameters))}</td>',
            f'<td class="num">{"–" if r.n is None else r.n}</td>',
            *(f'<td class="num">{_h(leaderboard.format_cell(r.metrics.get(c)))}</td>' for c in cols),
            f"<td>{_h('; '.join(r.notes))}</td>",
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 80em;
       color: #222; line-height: 1.45; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.8em 0 1.4em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; }
.notes { color: #555; }
"""


def to_html(report: PlotReport, runs_dir: str | Path) -> str:
    """``report.html``: leaderboard table and every figure, the PNGs embedded (base64) so the file
    stands alone; each figure links to its SVG next to it."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>vlmbench report — {_h(report.task)}</title><style>{_CSS}</style></head><body>",
        f"<h1>vlmbench report — {_h(report.task)}</h1>",
        "<h2>Leaderboard</h2>",
        leaderboard_html(runs_dir, report.task),
        '<p class="notes">Values are means with bootstrap 95% confidence intervals in brackets.</p>',
    ]
    if report.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_h(n)}</li>" for n in report.notes) + "</ul>")
    parts.append("<h2>Figures</h2>")
    for f in report.figures:
        data = base64.b64encode(f.png.read_bytes()).decode("ascii")
        parts.append(
            f'<figure id="{_h(f.name)}"><h3>{_h(f.title)}</h3>'
            f'<img src="data:image/png;base64,{data}" alt="{_h(f.title)}">'
            f"<figcaption>{_h(f.caption)} "
            f'Files: <a href="{_h(f.png.name)}">{_h(f.png.name)}</a>, '
            f'<a href="{_h(f.svg.name)}">{_h(f.svg.name)}</a>.</figcaption></figure>'
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
