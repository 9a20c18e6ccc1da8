"""``report.html`` of ``vlmbench plot``: when, by which vlmbench and by which command it was made, the
leaderboard of the task, every figure (the PNGs embedded, so that the file stands alone) and, per run,
when, by which version and by which command it was run."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vlmbench import leaderboard
from vlmbench.htmlpage import Cell, bullets, esc, page, table

if TYPE_CHECKING:
    from vlmbench.plots import PlotReport


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


def leaderboard_html(runs_dir: str | Path, task: str, sort_by: str | None = None) -> str:
    """The leaderboard of one task as an HTML table (the rows of :mod:`vlmbench.leaderboard`), its notes
    numbered below it; files that cannot be read are left out (the plot command reports them)."""
    rows = leaderboard.sort_rows(leaderboard.collect(runs_dir, task=task, unreadable=[]), sort_by)
    cols = leaderboard.metric_columns(rows)
    refs, notes = leaderboard.footnotes(rows)
    cells: list[list[Cell]] = [
        [
            (esc(r.model), ""),
            (esc(leaderboard.parameters_text(r)), "num"),
            ("–" if r.n is None else str(r.n), "num"),
            *((esc(leaderboard.format_cell(r.metrics.get(c))), "num") for c in cols),
            (" ".join(f"[{i}]" for i in ids), ""),
        ]
        for r, ids in zip(rows, refs, strict=True)
    ]
    out = [
        table(["model", "parameters", "n", *cols, "notes"], cells),
        f'<p class="notes">{esc(leaderboard.CI_LINE)}</p>',
    ]
    return "\n".join(out + ([bullets(notes, ordered=True)] if notes else []))


def _when(source: dict) -> str:
    text = (source["created"] or "unknown").replace("T", " ")
    if source["cached_rerun"]:
        text += " (every answer from the cache: no model timings)"
    if source["rescored"]:
        text += " (scored again since)"
    return text


def _runs_table(sources: Sequence[dict]) -> str:
    rows: list[list[Cell]] = [
        [
            (esc(s["label"]) + ("" if s["status"] == "ok" else " (skipped)"), ""),
            (esc(_when(s)), ""),
            (esc(s["version"] or "unknown"), ""),
            (f"<code>{esc(s['command'])}</code>" if s["command"] else "unknown", ""),
            (esc(s["path"]), "muted"),
        ]
        for s in sources
    ]
    return table(["run", "date", "vlmbench", "command", "folder"], rows)


def _figure(f) -> str:
    data = base64.b64encode(f.png.read_bytes()).decode("ascii")
    return (
        f'<figure id="{esc(f.name)}"><h3>{esc(f.title)}</h3>'
        f'<img src="data:image/png;base64,{data}" alt="{esc(f.title)}">'
        f"<figcaption>{esc(f.caption)} "
        f'Files: <a href="{esc(f.png.name)}">{esc(f.png.name)}</a>, '
        f'<a href="{esc(f.svg.name)}">{esc(f.svg.name)}</a>.</figcaption></figure>'
    )


def to_html(report: PlotReport, runs_dir: str | Path) -> str:
    """``report.html``: how it was made, the leaderboard, every figure (PNG embedded as base64, linking
    to its SVG next to it) and where each run came from."""
    made = report.made or {}
    parts = [
        f'<p class="muted">Made {esc((made.get("created") or "").replace("T", " "))} by vlmbench '
        f"{esc(made.get('version'))}: <code>{esc(made.get('command'))}</code></p>",
        "<h2>Leaderboard</h2>",
        leaderboard_html(runs_dir, report.task),
    ]
    if report.notes:
        parts.append(bullets(report.notes))
    parts.append("<h2>Figures</h2>")
    parts += [_figure(f) for f in report.figures]
    if report.sources:
        parts += ["<h2>Runs</h2>", _runs_table(report.sources)]
    return page(f"vlmbench report — {report.task}", parts)
