"""Figure 3 and memory against score at the study's size: eleven bars (six models, five LoRA variants)
with long labels and missing values, every text inside the figure, none overlapping another, no
warning, valid SVG, and a missing value drawn as "n/a", never as a zero bar."""

from __future__ import annotations

import itertools
import warnings
import xml.etree.ElementTree as ET

from vlmbench.analysis.comparison_figures import Bar, Point, memory_vs_score, variant_bars

METRICS = (("F1 (BERTScore)", "f1"), ("SBERT", "sbert"), ("Exact Match", "em"), ("Weighted WUPS", "wups"))


def _texts(fig):
    found = list(fig.texts)
    for legend in fig.legends:
        found += [*legend.get_texts(), legend.get_title()]
    for ax in fig.axes:
        if ax.get_visible():
            lo, hi = sorted(ax.get_ylim())
            ticks = [t for t in ax.get_yticklabels() if lo - 1e-9 <= t.get_position()[1] <= hi + 1e-9]
            found += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts, *ticks]
    return [t for t in found if t.get_visible() and t.get_text().strip()]


def _inside_and_apart(fig) -> None:
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in _texts(fig)]
    outside = [text for text, b in boxes if b.x0 < frame.x0 - 1 or b.y0 < frame.y0 - 1
               or b.x1 > frame.x1 + 1 or b.y1 > frame.y1 + 1]  # fmt: skip
    assert outside == []
    overlapping = [(a, b) for (a, one), (b, two) in itertools.combinations(boxes, 2)
                   if one.overlaps(two) and a != "n/a" and b != "n/a"]  # fmt: skip
    assert overlapping == [], overlapping


def test_figure3_and_memory_against_score_at_the_study_size(tmp_path):
    models = ["CLIP", "BLIP", "OFA", "BLIP-2", "Qwen2.5-VL-3B-Instruct with a long label", "SmolVLM"]
    bars = [Bar(m, {"f1": 0.5 + i / 20, "sbert": None if m == "OFA" else 0.6, "em": 0.1 * i, "wups": 0.8})
            for i, m in enumerate(models)]  # fmt: skip
    bars += [Bar(f"LoRA r{r}-query_value_dense_and_more", {"f1": 0.66, "em": 0.2, "wups": 0.85}, variant=True)
             for r in (8, 16, 32, 64, 128)]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, png, svg = variant_bars(bars, METRICS, "Figure 3: LoRA configurations against the baselines",
                                     tmp_path, "figure3")  # fmt: skip
        points = [Point("blip full precision", 900.0, {"f1": 0.66, "em": 0.19}, "study"),
                  Point("blip 8-bit", 360.0, {"f1": 0.655, "em": 0.18}, "study"),
                  Point("adapter full precision", 910.0, {"f1": 0.67, "em": None}, "tool"),
                  Point("adapter 8-bit", 400.0, {"f1": 0.66}, "tool")]  # fmt: skip
        fig2, png2, svg2 = memory_vs_score(points, METRICS, "8-bit: memory against score", tmp_path, "memory")
    assert [str(w.message) for w in caught] == []
    for path in (png, svg, png2, svg2):
        assert path.is_file()
    ET.parse(svg)
    ET.parse(svg2)
    sbert = fig.axes[1]
    assert len(sbert.patches) == len(bars) - 6 and [t.get_text() for t in sbert.texts].count("n/a") == 6
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == len(bars)
    assert sum(1 for p in fig.axes[0].patches if p.get_hatch() == "//") == 5  # the variants are hatched
    _inside_and_apart(fig)
    _inside_and_apart(fig2)
