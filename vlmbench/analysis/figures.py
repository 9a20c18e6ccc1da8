"""The figures of ``vlmbench plot``: metrics against parameter count, per-difficulty bars and top
confusions, built so that they read well with many models.

matplotlib is imported only when a figure is drawn; figures are ``matplotlib.figure.Figure`` objects on
the Agg canvas (no GUI backend, no global pyplot state), laid out by constrained layout. Text from the
runs goes through :func:`figure_text`: characters no font draws (control characters, NUL bytes,
glyphs the font lacks) become escapes, dollar signs stay dollar signs, long labels are shortened.
Points are labelled in place when their labels fit; where labels would collide or leave their panel,
a legend below the panels names the models instead.
"""

from __future__ import annotations

import functools
import itertools
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmbench.analysis import leaderboard
from vlmbench.analysis.display import escape_char, level_order, shorten, visible
from vlmbench.analysis.figure_data import Confusions, PlotRun, metric_title

RC = {
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
DPI = 130
#: Characters of a model label in a legend or a panel title, and beside a point.
LABEL_WIDTH = 40
POINT_LABEL_WIDTH = 28
#: Sizes closer than this factor are drawn this factor apart (on the log axis).
DODGE = 1.15
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "h", "<", ">", "p", "*")
_CHAR_INCHES = 0.58 / 72  # average width of a character per point of font size (DejaVu Sans)


# -- text -----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _glyphs(family: str) -> frozenset[int]:
    from matplotlib import font_manager

    font = font_manager.get_font(font_manager.findfont(font_manager.FontProperties(family=[family])))
    return frozenset(font.get_charmap())


def figure_text(text: Any, width: int | None = None) -> str:
    """``text`` (from a run) as a figure may draw it: every character the font cannot draw as its
    escape, shortened to ``width`` characters, and ``$`` kept literal (matplotlib reads ``$...$`` as
    mathematics)."""
    from matplotlib import rcParams

    glyphs = _glyphs(rcParams["font.family"][0])
    s = "".join(ch if ord(ch) in glyphs or ch == " " else escape_char(ch) for ch in visible(text))
    if width:
        s = shorten(s, width)
    return s.replace("$", r"\$")


def _wrapped(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_inches`` at ``fontsize``."""
    chars = max(20, int(width_inches / (fontsize * _CHAR_INCHES)))
    return "\n".join(textwrap.wrap(text, chars)) or text


def params_text(n: float, _pos: Any = None) -> str:
    """Tick labels for parameter counts: 100M, 1B, 1.5B (no trailing .0)."""
    return leaderboard.format_parameters(round(n)).replace(".0", "")


# -- figure plumbing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Look:
    """How one run is drawn in every figure: its colour, its marker and its shown label."""

    colour: Any
    marker: str
    label: str


def looks(runs: Sequence[PlotRun]) -> dict[str, Look]:
    """One look per run (keyed by its label), labels shortened and still distinct."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(runs) <= 10 else "tab20"]
    shown = [figure_text(r.label, LABEL_WIDTH) for r in runs]
    shown = [f"{s} #{i + 1}" if shown.count(s) > 1 else s for i, s in enumerate(shown)]
    return {
        r.label: Look(cmap(i % cmap.N), _MARKERS[i % len(_MARKERS)], s)
        for i, (r, s) in enumerate(zip(runs, shown, strict=True))
    }


def new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def suptitle(fig: Any, text: str) -> None:
    from matplotlib import rcParams

    fig.suptitle(_wrapped(text, fig.get_figwidth() - 0.4, rcParams["figure.titlesize"]))


def save(fig: Any, out_dir: Path, name: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
    fig.savefig(png, format="png", dpi=DPI)
    fig.savefig(svg, format="svg", metadata={"Date": None})
    return png, svg


def grid(k: int, max_cols: int = 3) -> tuple[int, int]:
    cols = 2 if k == 4 and max_cols >= 2 else min(max_cols, k)
    return math.ceil(k / cols), cols


def add_legend(fig: Any, handles: Sequence[Any], labels: Sequence[str], title: str = "model") -> None:
    """A legend below the panels, in as many columns as the figure's width holds; the figure grows
    by the legend's height so that the panels keep theirs."""
    from matplotlib import rcParams

    longest = max((len(label) for label in labels), default=10)
    column = longest * rcParams["legend.fontsize"] * _CHAR_INCHES + 0.9
    ncols = max(1, min(len(labels), int((fig.get_figwidth() - 0.3) // column)))
    lines = math.ceil(len(labels) / ncols) + 1
    fig.set_size_inches(fig.get_figwidth(), fig.get_figheight() + lines * 0.3 + 0.2)
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, frameon=False, title=title)


def _collides(fig: Any, placed: Sequence[tuple[Any, Any]]) -> bool:
    """Whether any of the texts placed in panels (axes, text) leaves its panel or overlaps another
    text of the same panel, once the figure is laid out."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    boxes = [(ax, text.get_window_extent(renderer)) for ax, text in placed]
    for ax, box in boxes:
        frame = ax.get_window_extent(renderer)
        if box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1:
            return True
    return any(a is b and one.overlaps(two) for (a, one), (b, two) in itertools.combinations(boxes, 2))


def label_or_legend(
    fig: Any, placed: Sequence[tuple[Any, Any]], handles: Sequence[Any], labels: Sequence[str]
) -> bool:
    """Keep the in-place labels when none collides; else remove them all and add a legend. Returns
    whether a legend was added."""
    if not placed or not _collides(fig, placed):
        return False
    for _, text in placed:
        text.remove()
    add_legend(fig, handles, labels)
    return True


def _error(metric: dict) -> tuple[float, float]:
    value, ci = metric.get("value"), metric.get("ci95")
    if value is None or not ci:
        return (0.0, 0.0)
    return (max(0.0, value - ci[0]), max(0.0, ci[1] - value))


def _value(run: PlotRun, metric: str) -> dict | None:
    m = run.metrics.get(metric)
    return m if m and m.get("value") is not None else None


# -- metrics against model size -------------------------------------------------------------------------
def _no_size_note(run: PlotRun) -> str:
    return "no parameters" if run.size == 0 else "parameters unknown"


def size_notes(runs: Sequence[PlotRun]) -> list[str]:
    """What the size figures' reader must know about runs drawn without, or with a registered, size."""
    unsized = [r for r in runs if not r.size]
    registered = [r for r in runs if r.size_is_registered]
    notes = []
    if unsized:
        notes.append(
            "Runs without a parameter count are drawn as dashed horizontal lines: "
            + ", ".join(f"{r.label} ({'0' if r.size == 0 else 'unknown'})" for r in unsized)
        )
    if registered:
        notes.append(
            "Hollow markers: the model's registered size, as the run recorded no parameter count of its own: "
            + ", ".join(f"{r.label} ({r.parameters_registered})" for r in registered)
        )
    return notes


def _dodged(runs: Sequence[PlotRun]) -> dict[str, float]:
    """x positions: runs of (nearly) equal size, such as two checkpoints of one model, are set a little
    apart around their sizes' geometric mean, so that their points and intervals do not hide each other."""
    groups: list[list[PlotRun]] = []
    for r in sorted(runs, key=lambda r: r.size):
        if groups and r.size / groups[-1][-1].size < DODGE:
            groups[-1].append(r)
        else:
            groups.append([r])
    out = {}
    for group in groups:
        centre = math.prod(r.size for r in group) ** (1 / len(group))
        for j, r in enumerate(group):
            out[r.label] = centre * DODGE ** (j - (len(group) - 1) / 2)
    return out


def _draw_sized(
    ax: Any, runs: Sequence[PlotRun], metric: str, look: dict[str, Look], xlim: tuple[float, float]
) -> list[tuple[Any, Any]]:
    placed = []
    xs = _dodged(runs)
    span = math.log(xlim[1] / xlim[0])
    for r in runs:
        m = _value(r, metric)
        if m is None:
            continue
        lk = look[r.label]
        err = _error(m)
        ax.errorbar([xs[r.label]], [m["value"]], yerr=[[err[0]], [err[1]]], fmt=lk.marker, markersize=7, capsize=4,
                    color=lk.colour, markerfacecolor="white" if r.size_is_registered else lk.colour)  # fmt: skip
        # Labels of points in the right part of the panel go to their left, towards the free space.
        left = math.log(xs[r.label] / xlim[0]) > 0.6 * span
        text = ax.annotate(figure_text(r.label, POINT_LABEL_WIDTH), (xs[r.label], m["value"]),
                           xytext=(-6 if left else 6, 5), ha="right" if left else "left",
                           textcoords="offset points", fontsize=9.5, color="#222")  # fmt: skip
        placed.append((ax, text))
    return placed


def _draw_unsized(
    ax: Any, runs: Sequence[PlotRun], metric: str, look: dict[str, Look]
) -> list[tuple[Any, Any]]:
    placed = []
    for j, r in enumerate(runs):
        m = _value(r, metric)
        if m is None:
            continue
        lk = look[r.label]
        ax.axhline(m["value"], color=lk.colour, linestyle="--", linewidth=1.4)
        # Left, centre, right in turn: baselines often score alike and their labels would overlap.
        where, align = [(0.01, "left"), (0.5, "center"), (0.99, "right")][j % 3]
        text = ax.annotate(f"{figure_text(r.label, POINT_LABEL_WIDTH)} ({_no_size_note(r)})", (where, m["value"]),
                           xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points", ha=align,
                           bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
                           fontsize=9, color=lk.colour)  # fmt: skip
        placed.append((ax, text))
    return placed


def _dress_panel(
    ax: Any, metric: str, xlim: tuple[float, float], runs: Sequence[PlotRun], from_zero: bool
) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    ax.set_xlim(*xlim)
    ax.xaxis.set_major_formatter(FuncFormatter(params_text))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    ax.set_xlabel("Parameters (log scale)")
    ax.set_ylabel(f"{metric_title(metric)} (95% CI)")
    ax.set_title(
        metric_title(metric) + ("" if any(r.size for r in runs) else "\n(no run has a parameter count)")
    )
    ax.grid(True, which="major", alpha=0.3)
    if from_zero:
        _fraction_ylim(ax, [r.metrics.get(metric) for r in runs])
    else:  # similarity scores live in a narrow band: zoom to it
        ax.margins(y=0.2)


def _size_legend(runs: Sequence[PlotRun], look: dict[str, Look]) -> tuple[list[Any], list[str]]:
    from matplotlib.lines import Line2D

    handles, labels = [], []
    for r in runs:
        lk = look[r.label]
        if r.size:
            face = "white" if r.size_is_registered else lk.colour
            handles.append(
                Line2D([], [], color=lk.colour, marker=lk.marker, markerfacecolor=face, linestyle="none")
            )
            labels.append(lk.label)
        else:
            handles.append(Line2D([], [], color=lk.colour, linestyle="--", linewidth=1.4))
            labels.append(f"{lk.label} ({_no_size_note(r)})")
    return handles, labels


def _draw_others(ax: Any, others: Sequence[PlotRun], metric: str) -> None:
    """The runs not drawn one by one, as small grey points behind the others (one artist for all)."""
    points = [(r.size, m["value"]) for r in others if r.size and (m := _value(r, metric)) is not None]
    if points:
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, s=9, color="#b0b0b0", linewidths=0, zorder=0.5)


def metric_vs_parameters(
    runs: Sequence[PlotRun],
    metrics: Sequence[str],
    task: str,
    title: str,
    *,
    from_zero: bool = True,
    others: Sequence[PlotRun] = (),
) -> tuple[Any, list[str]]:
    """One panel per metric: value (with 95% CI) against parameter count on a log axis. Runs without a
    parameter count (0, e.g. blind baselines, or unknown) cannot sit on a log axis: they are drawn as
    dashed horizontal reference lines. Points and lines are labelled in place, or by a legend when
    labels would collide. ``others`` (runs beyond those shown one by one) are grey points, unlabelled."""
    look = looks(runs)
    rows, cols = grid(len(metrics))
    fig = new_figure(max(5.4 * cols, 8.0), 4.3 * rows)
    suptitle(fig, f"{title} — {task}")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    sized = [r for r in runs if r.size]
    unsized = [r for r in runs if not r.size]
    every = [r.size for r in (*sized, *others) if r.size]
    xlim = (min(every) / 2.5, max(every) * 2.5) if every else (1e6, 1e10)
    placed = []
    for ax, metric in zip(axes, metrics, strict=False):
        _draw_others(ax, others, metric)
        placed += _draw_sized(ax, sized, metric, look, xlim)
        placed += _draw_unsized(ax, unsized, metric, look)
        _dress_panel(ax, metric, xlim, [*runs, *others], from_zero)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    label_or_legend(fig, placed, *_size_legend(runs, look))
    return fig, size_notes(runs)


def _fraction_ylim(ax: Any, metrics: Sequence[dict | None]) -> None:
    """Scores in [0, 1] start at 0 (points are then read against zero), with headroom above the
    highest interval for the labels."""
    values = [m["value"] for m in metrics if m and m.get("value") is not None]
    if not values or not all(0 <= v <= 1 for v in values):
        return
    tops = [(m.get("ci95") or [m["value"]] * 2)[1] for m in metrics if m and m.get("value") is not None]
    ax.set_ylim(0, min(1.05, max(0.05, max(tops)) * 1.15 + 0.02))


# -- per difficulty -------------------------------------------------------------------------------------
def _level_counts(runs: Sequence[PlotRun], levels: Sequence[str]) -> list[str]:
    """Tick labels: the level and its number of questions (a range when runs scored different numbers)."""
    out = []
    for lvl in levels:
        ns = sorted({(r.results.get("by_difficulty") or {}).get(lvl, {}).get("n") for r in runs} - {None})
        count = "" if not ns else f"\n(n={ns[0]})" if len(ns) == 1 else f"\n(n={ns[0]}–{ns[-1]})"
        out.append(f"{figure_text(lvl, 12)}{count}")
    return out


def difficulty_bars(runs: Sequence[PlotRun], metric: str, task: str) -> Any:
    """Grouped bars: one group per difficulty level, one bar per run, 95% CI error bars; a zero is
    drawn as a flat bar so that it is not read as a missing value."""
    import numpy as np

    look = looks(runs)
    levels = sorted({lvl for r in runs for lvl in (r.results.get("by_difficulty") or {})}, key=level_order)
    fig = new_figure(min(16.0, max(8.0, 0.2 * len(levels) * len(runs) + 3)), 4.8)
    ax = fig.subplots()
    x = np.arange(len(levels))
    bar_w = 0.8 / max(1, len(runs))
    values_seen, handles = [], []
    for i, r in enumerate(runs):
        by = r.results.get("by_difficulty") or {}
        found = [((by.get(lvl) or {}).get("metrics") or {}).get(metric) or {} for lvl in levels]
        heights = [np.nan if m.get("value") is None else m["value"] for m in found]
        errs = np.array([_error(m) for m in found]).T.reshape(2, len(levels))
        values_seen += [m["value"] for m in found if m.get("value") is not None]
        centres = x - 0.4 + bar_w * (i + 0.5)
        handles.append(ax.bar(centres, heights, bar_w * 0.92, yerr=errs, capsize=3, color=look[r.label].colour,
                              error_kw={"elinewidth": 1, "ecolor": "#333"}))  # fmt: skip
        zeros = [c for c, h in zip(centres, heights, strict=True) if h == 0]
        if zeros:
            ax.plot(zeros, [0] * len(zeros), linestyle="none", marker="_", markersize=max(3.0, bar_w * 50),
                    markeredgewidth=3, color=look[r.label].colour, clip_on=False)  # fmt: skip
    ax.set_xticks(x, _level_counts(runs, levels))
    ax.set_xlabel("Difficulty level (number of questions)")
    ax.set_ylabel(f"{metric_title(metric)} (mean, 95% CI)")
    ax.set_title(_wrapped(f"{metric_title(metric)} by difficulty — {task}", fig.get_figwidth() - 1.2, 12.5))
    if values_seen and all(0 <= v <= 1 for v in values_seen):
        ax.set_ylim(0, 1.05)
    ax.grid(True, axis="y", alpha=0.3)
    add_legend(fig, handles, [look[r.label].label for r in runs])
    return fig


# -- confusions -------------------------------------------------------------------------------------------
def confusion_bars(runs: Sequence[PlotRun], found: dict[str, Confusions], top: int, task: str) -> Any:
    """Per run, the ``top`` most frequent (reference → wrong answer) pairs as horizontal bars (``found``:
    :func:`~vlmbench.analysis.figure_data.run_confusions` of the runs)."""
    look = looks(runs)
    rows, cols = grid(len(runs), max_cols=2 if len(runs) <= 4 else 3)
    fig = new_figure(max(6.4, 5.8 * cols), (0.3 * top + 1.8) * rows + 0.6)
    suptitle(fig, f"Top confusions (reference → wrong answer) — {task}")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, r in zip(axes, runs, strict=False):
        pairs, wrong, answered = found[r.label]
        ax.set_title(f"{figure_text(r.label, POINT_LABEL_WIDTH + 4)}\n{wrong} wrong of {answered}")
        if not pairs:
            ax.text(0.5, 0.5, "no wrong answers", transform=ax.transAxes, ha="center", color="#666")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        labels = [f"{figure_text(ref, 16)} → {figure_text(ans, 16)}" for ref, ans, _ in pairs]
        ax.barh(range(len(pairs)), [n for _, _, n in pairs], color=look[r.label].colour)
        ax.set_yticks(range(len(pairs)), labels)
        ax.invert_yaxis()  # most frequent at the top
        ax.set_xlabel("Count")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    return fig
