"""Figures that compare variants of a model with other models: one bar per model and variant in a panel
per metric (fine-tuned variants hatched, as the study's Figure 3 draws LoRA configurations beside the
base model and other baselines), and weight memory against score (quantised against full precision).

Both take plain labelled values, so any report can draw them, and write ``NAME.png`` and ``NAME.svg``
in the house style of ``vlmbench plot`` (returning the figure and both paths). Missing values leave a gap
marked "n/a", never a zero bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench.analysis.figures import (
    LABEL_WIDTH,
    RC,
    add_legend,
    figure_text,
    grid,
    new_figure,
    save,
    suptitle,
)


@dataclass(frozen=True)
class Bar:
    """One model or variant: its label, its value per metric column, and whether it is a variant."""

    label: str
    values: dict[str, float | None]
    variant: bool = False


@dataclass(frozen=True)
class Point:
    """One model at one precision: weight memory (MB), value per metric column, and its group (the
    points of one group, e.g. a model in full precision and in 8 bits, are joined by a line)."""

    label: str
    memory_mb: float | None
    values: dict[str, float | None] = field(default_factory=dict)
    group: str = ""


def variant_bars(
    bars: Sequence[Bar], metrics: Sequence[tuple[str, str]], title: str, out_dir: Path, name: str
) -> tuple[Any, Path, Path]:
    """A panel per (title, column) of ``metrics``: one bar per entry of ``bars`` in order, variants
    hatched, a zero drawn flat; the labels in a legend below (long labels would not fit under bars)."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = _variant_bars(bars, metrics, title)
        return (fig, *save(fig, out_dir, name))


def memory_vs_score(
    points: Sequence[Point], metrics: Sequence[tuple[str, str]], title: str, out_dir: Path, name: str
) -> tuple[Any, Path, Path]:
    """A panel per (title, column) of ``metrics``: each point at (weight memory, value); the points of a
    group joined by a line, in the order given."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = _memory_vs_score(points, metrics, title)
        return (fig, *save(fig, out_dir, name))


def _variant_bars(bars: Sequence[Bar], metrics: Sequence[tuple[str, str]], title: str) -> Any:
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    rows, cols = grid(len(metrics), max_cols=2)
    fig = new_figure(max(7.0, 0.55 * len(bars) * cols + 2.5), 3.6 * rows + 0.6)
    suptitle(fig, title)
    cmap = colormaps["tab10" if len(bars) <= 10 else "tab20"]
    colours = [cmap(i % cmap.N) for i in range(len(bars))]
    hatch = ["//" if b.variant else "" for b in bars]
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, column) in zip(axes, metrics, strict=False):
        values = [b.values.get(column) for b in bars]
        for i, value in enumerate(values):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                ax.text(i, 0.0, "n/a", ha="center", va="bottom", fontsize=8, color="#666", rotation=90)
                continue
            ax.bar(i, value, 0.8, color=colours[i], hatch=hatch[i], edgecolor="#333", linewidth=0.6)
            if value == 0:  # a flat bar, so that a zero is not read as a missing value
                ax.plot([i], [0], linestyle="none", marker="_", markersize=14, markeredgewidth=3,
                        color=colours[i], clip_on=False)  # fmt: skip
        ax.set_title(figure_text(name, LABEL_WIDTH))
        ax.set_xticks([])
        seen = [v for v in values if v is not None]
        if seen and all(0 <= v <= 1 for v in seen):
            ax.set_ylim(0, 1.05)
        ax.set_xlim(-0.6, len(bars) - 0.4)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    handles = [Patch(facecolor=c, hatch=h, edgecolor="#333") for c, h in zip(colours, hatch, strict=True)]
    add_legend(
        fig, handles, [figure_text(b.label, LABEL_WIDTH) for b in bars], title="model (hatched: variant)"
    )
    return fig


def _memory_vs_score(points: Sequence[Point], metrics: Sequence[tuple[str, str]], title: str) -> Any:
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    groups = list(dict.fromkeys(p.group or p.label for p in points))
    cmap = colormaps["tab10"]
    colour = {g: cmap(i % cmap.N) for i, g in enumerate(groups)}
    markers = ("o", "s", "D", "^", "v", "P")
    rows, cols = grid(len(metrics), max_cols=2)
    fig = new_figure(6.2 * cols, 3.8 * rows + 0.6)
    suptitle(fig, title)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    labels = list(dict.fromkeys(p.label for p in points))
    for ax, (name, column) in zip(axes, metrics, strict=False):
        for g in groups:
            mine = [p for p in points if (p.group or p.label) == g]
            xy = [(p.memory_mb, p.values.get(column)) for p in mine]
            drawn = [(x, y) for x, y in xy if x is not None and y is not None]
            if len(drawn) > 1:
                ax.plot(*zip(*drawn, strict=True), color=colour[g], linewidth=1, alpha=0.6)
            for p, (x, y) in zip(mine, xy, strict=True):
                if x is not None and y is not None:
                    ax.plot([x], [y], linestyle="none", marker=markers[labels.index(p.label) % len(markers)],
                            markersize=8, color=colour[g])  # fmt: skip
        ax.set_title(figure_text(name, LABEL_WIDTH))
        ax.set_xlabel("Weight memory (MB)")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    handles = [
        Line2D([], [], linestyle="none", marker=markers[i % len(markers)], markersize=8,
               color=colour[next(p.group or p.label for p in points if p.label == label)])
        for i, label in enumerate(labels)
    ]  # fmt: skip
    add_legend(fig, handles, [figure_text(label, LABEL_WIDTH) for label in labels])
    return fig
