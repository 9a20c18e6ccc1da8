"""``report.md`` and ``study.json``: the study's tables in the paper's layout, its figures, and where each
number came from. Every number is read from the results.json of the run that produced it
(:mod:`vlmbench_plugins.study.tables`); the per-difficulty view is the leaderboard's own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vlmbench.api import (
    VERSION,
    FigureBar,
    FigurePoint,
    command_line,
    difficulty_markdown,
    markdown_code,
    markdown_text,
    memory_vs_score,
    now,
    variant_bars,
    write_json,
    write_text,
)
from vlmbench_plugins.study import paper
from vlmbench_plugins.study.recipe import FIGURES, LORA, StudyPlan, StudyResult
from vlmbench_plugins.study.tables import (
    lora_table,
    quantization_table,
    renamed,
    study_rows,
    table1,
    table2,
)

#: The panels of Figure 3 and of the quantisation figure: the paper's four core comparisons.
FIGURE3_METRICS = (("F1 (BERTScore)", "bertscore_f1"), ("SBERT", "sbert"), ("Exact Match", "exact_match"),
                   ("Weighted WUPS", "wups_weighted"))  # fmt: skip
QUANT_METRICS = (("F1 (BERTScore)", "bertscore_f1"), ("Exact Match", "exact_match"),
                 ("Average_Mark", "average_mark"), ("Weighted WUPS", "wups_weighted"))  # fmt: skip


def write_report(plan: StudyPlan, result: StudyResult) -> Path:
    """Write OUT/report.md, the study's figures and OUT/study.json; returns the report's path."""
    out = plan.output_dir
    with_paper = plan.options.with_paper
    made = {"created": now(), "version": VERSION, "command": command_line()}
    rows = study_rows(plan, result)
    lora_runs, lora_base = _lora(result, out)
    pairs = (result.quantization or {}).get("pairs") or []
    result.study_figures = _study_figures(rows, lora_runs, pairs, out / FIGURES)
    quant_md, quant = quantization_table(pairs, with_paper) if result.quantization else (_no_quant(), None)
    parts = [
        f"# The study on {markdown_text(plan.task.name)}",
        "",
        f"Made {made['created']} by vlmbench {made['version']}: {markdown_code(made['command'])}  ",
        f"Models from the run file {markdown_code(plan.run_file.name)}; {len(plan.task.samples)} test samples in the "
        "task.  ",
        _protocol_line(plan),
        "",
        "## Table 1: Models",
        "",
        table1(rows, with_paper),
        "## Table 2: Average Mark ranking",
        "",
        table2(rows, with_paper),
        "## By difficulty",
        "",
        difficulty_markdown(renamed(rows)) if any(r.row is not None for r in rows) else "–\n",
        "## Table 3: LoRA configurations",
        "",
        _lora_section(result, lora_runs, lora_base, with_paper),
        "## 8-bit quantisation",
        "",
        quant_md,
        "## Figures",
        "",
        _figures_section(result, out),
    ]
    report = out / "report.md"
    write_text(report, "\n".join(parts).rstrip() + "\n")
    write_json(out / "study.json", {
        "task": plan.task.name,
        **made,
        "run_file": str(plan.run_file),
        "protocol": None if plan.protocol is None else plan.protocol.identity(),
        "models": [{"label": r.model, "status": r.status, "run_dir": str(d)} for r, d in result.models],
        "rows": [{"name": r.name, "plugin": r.plugin, "run_dir": str(r.run_dir) if r.run_dir else None,
                  "notes": r.notes} for r in rows],
        "not_run": [{"label": label, "reason": reason} for label, reason in result.skipped],
        "lora_skipped": result.sweep_skipped,
        "lora": None if result.sweep is None else {
            "summary": str(result.sweep.summary) if result.sweep.summary else None, "base": lora_base,
            "runs": result.sweep.runs,
        },
        "quantization": {"pairs": pairs, "table": quant} if result.quantization else None,
        "figures": [str(f.png) for r in result.figures for f in r.figures],
        "study_figures": [str(png) for png, _ in result.study_figures],
        "report": str(report),
    })  # fmt: skip
    return report


def _protocol_line(plan: StudyPlan) -> str:
    if plan.protocol is None:
        return "Protocol: none — vlmbench's own defaults (`--protocol none`)."
    p = plan.protocol
    return (f"Protocol: `{p.protocol}` v{p.version} (settings {p.hash[:8]}): how every step asks, scores, trains "
            "and quantises; docs/study.md compares each setting with the paper and the study's code.")  # fmt: skip


def _lora(result: StudyResult, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The sweep's runs and the base model's test metrics (from ``OUT/lora/sweep.json``)."""
    if result.sweep is None:
        return [], None
    try:
        base = json.loads((out / LORA / "sweep.json").read_text(encoding="utf-8")).get("base")
    except (OSError, ValueError):
        base = None
    return list(result.sweep.runs), base


def _lora_section(
    result: StudyResult, runs: list[dict[str, Any]], base: dict | None, with_paper: bool
) -> str:
    if result.sweep_skipped:
        return f"Skipped: {markdown_text(result.sweep_skipped)}\n"
    if result.sweep is None:
        return "Not run (`--no-lora`).\n"
    if result.sweep.summary is None:
        return "Trained; not evaluated.\n"
    return lora_table(runs, base, with_paper)


def _no_quant() -> str:
    return "Not run (`--no-quantization`).\n"


def _study_figures(
    rows: list, lora_runs: list[dict], pairs: list[dict], folder: Path
) -> list[tuple[Path, Path]]:
    """Figure 3 (LoRA configurations against the models of Table 1) and memory against score."""
    made = []
    bars = [FigureBar(r.name, {c: r.value(c) for _, c in paper.COLUMNS}) for r in rows if r.ok]
    bars += [FigureBar(f"LoRA {run['name']}", dict(run.get("test") or {}), variant=True)
             for run in lora_runs if run.get("test")]  # fmt: skip
    if any(b.variant for b in bars):
        title = "Figure 3: LoRA configurations of BLIP against the baselines"
        _, png, svg = variant_bars(bars, FIGURE3_METRICS, title, folder, "figure3_lora_vs_baselines")
        made.append((png, svg))
    points = []
    for pair in pairs:
        if pair.get("status") != "ok":
            continue
        for key, weights in (("full_precision", "full precision"), ("quantized", "8-bit")):
            data = json.loads((Path(pair[key]) / "results.json").read_text(encoding="utf-8"))
            values = {c: ((data.get("metrics") or {}).get(c) or {}).get("value") for _, c in paper.COLUMNS}
            memory = (data.get("model") or {}).get("memory_footprint_mb")
            points.append(
                FigurePoint(f"{pair['label']} {weights} ({pair['kind']})", memory, values, pair["kind"])
            )
    if points:
        title = "8-bit quantisation: weight memory against score"
        _, png, svg = memory_vs_score(points, QUANT_METRICS, title, folder, "quantization_memory_vs_score")
        made.append((png, svg))
    return made


def _figures_section(result: StudyResult, out: Path) -> str:
    lines = []
    for png, _ in result.study_figures:
        title = "Figure 3: LoRA configurations against the baselines" if "figure3" in png.name else (
            "8-bit quantisation: weight memory against score")  # fmt: skip
        lines += [f"### {title}", "", f"![{title}]({_rel(png, out)})", ""]
    figures = [f for r in result.figures for f in r.figures]
    for figure in figures:
        title = markdown_text(figure.title)
        lines += [f"### {title}", "", f"![{title}]({_rel(figure.png, out)})", ""]
    if not lines:
        return "No figures: no model of the table was evaluated.\n"
    html = [r.report for r in result.figures if r.report]
    if html:
        lines.append(
            f"All figures of the model table with the leaderboard: {markdown_code(_rel(html[0], out))} "
            f"(in `{FIGURES}/`)."
        )
    return "\n".join(lines) + "\n"


def _rel(path: Path, out: Path) -> str:
    return Path(os.path.relpath(path, out)).as_posix()
