"""``report.md`` and ``study.json``: the study's tables, each built from the runs' own results.json.

The tables are the project's own (the leaderboard, the per-difficulty view, the sweep's LoRA table),
so a number in the report is the number ``vlmbench leaderboard`` shows for the same run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vlmbench.api import (
    RESULTS_FILE,
    STUDY_COLUMNS,
    VERSION,
    command_line,
    difficulty_columns,
    difficulty_markdown,
    leaderboard_markdown,
    load_results,
    markdown_code,
    markdown_text,
    metric_columns,
    now,
    study_order,
    write_json,
    write_text,
)
from vlmbench_plugins.models.blip.finetune.sweep import format_number
from vlmbench_plugins.study.recipe import FIGURES, StudyPlan, StudyResult


def write_report(plan: StudyPlan, result: StudyResult) -> Path:
    """Write OUT/report.md and OUT/study.json; returns the report's path."""
    out = plan.output_dir
    made = {"created": now(), "version": VERSION, "command": command_line()}
    rows = [row for row, _ in result.models]
    columns = study_order(metric_columns(rows))
    parts = [
        f"# The study on {markdown_text(plan.task.name)}",
        "",
        f"Made {made['created']} by vlmbench {made['version']}: {markdown_code(made['command'])}  ",
        f"Models from the run file {markdown_code(plan.run_file.name)}; {len(plan.task.samples)} test samples "
        "in the task.",
        "",
        "## Models",
        "",
        leaderboard_markdown(rows, columns=columns) if rows else "No model was run.\n",
    ]
    parts += [
        f"- {markdown_text(label)}: not run: {markdown_text(reason)}" for label, reason in result.skipped
    ]
    # Average Mark has no per-level value (one weight per level), so the levels have their own columns.
    levels = study_order(difficulty_columns(rows))
    parts += ["", "## By difficulty", "", difficulty_markdown(rows, columns=levels) if rows else "–\n"]
    if "average_mark" in columns and "average_mark" not in levels:
        parts += [
            "Average Mark has no per-level value: within a level it equals Exact Match (docs/metrics.md).",
            "",
        ]
    parts += ["## LoRA configurations", "", _lora_section(result), "## 8-bit quantisation", ""]
    quant_md, quant = _quantization_section(result.quantization)
    parts += [quant_md, "## Figures", "", _figures_section(result, out)]
    report = out / "report.md"
    write_text(report, "\n".join(parts).rstrip() + "\n")
    write_json(out / "study.json", {
        "task": plan.task.name,
        **made,
        "run_file": str(plan.run_file),
        "models": [{"label": r.model, "status": r.status, "run_dir": str(d)} for r, d in result.models],
        "not_run": [{"label": label, "reason": reason} for label, reason in result.skipped],
        "lora_skipped": result.sweep_skipped,
        "lora": None if result.sweep is None else {
            "summary": str(result.sweep.summary) if result.sweep.summary else None, "runs": result.sweep.runs,
        },
        "quantization": quant,
        "figures": [str(f.png) for r in result.figures for f in r.figures],
        "report": str(report),
    })  # fmt: skip
    return report


def _lora_section(result: StudyResult) -> str:
    sweep = result.sweep
    if result.sweep_skipped:
        return f"Skipped: {markdown_text(result.sweep_skipped)}\n"
    if sweep is None:
        return "Not run (`--no-lora`).\n"
    if sweep.summary is None:
        return "Trained; not evaluated.\n"
    return sweep.summary.read_text(encoding="utf-8")


def _quantization_section(info: dict[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
    """The full-precision and 8-bit rows of the quantised model, with the change, and their data."""
    if info is None:
        return "Not run (`--no-quantization`).\n", None
    if info.get("status") != "ok":
        return f"Not measured: {markdown_text(info.get('reason') or info.get('status'))}.\n", info
    full = load_results(Path(info["full_precision"]) / RESULTS_FILE)
    eight = load_results(Path(info["quantized"]) / RESULTS_FILE)
    metrics = [c for c in STUDY_COLUMNS if c in full["metrics"] and c in eight["metrics"]]
    header = ["model", "weights", "memory MB", "parameters", *(markdown_text(m) for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    data: dict[str, Any] = {**info, "metrics": metrics, "rows": {}}
    for name, results in (("full precision", full), ("8-bit", eight)):
        model = results.get("model") or {}
        values = {m: results["metrics"][m].get("value") for m in metrics}
        data["rows"][name] = {"memory_footprint_mb": model.get("memory_footprint_mb"),
                              "parameters": model.get("parameters"), "metrics": values}  # fmt: skip
        cells = [
            markdown_text(info["chosen"]),
            name,
            format_number(model.get("memory_footprint_mb"), 2),
            format_number(model.get("parameters")),
        ]
        lines.append("| " + " | ".join(cells + [format_number(values[m]) for m in metrics]) + " |")
    delta = ["change", "8-bit − full", _delta(data["rows"], "memory_footprint_mb", 2), "–"]
    for m in metrics:
        a, b = data["rows"]["full precision"]["metrics"][m], data["rows"]["8-bit"]["metrics"][m]
        delta.append("–" if a is None or b is None else f"{b - a:+.4f}")
    lines.append("| " + " | ".join(delta) + " |")
    lines += ["", f"Runs: {markdown_code(info['full_precision'])} and {markdown_code(info['quantized'])}."]
    return "\n".join(lines) + "\n", data


def _delta(rows: dict[str, Any], key: str, digits: int) -> str:
    a, b = rows["full precision"][key], rows["8-bit"][key]
    return "–" if a is None or b is None else f"{b - a:+.{digits}f}"


def _figures_section(result: StudyResult, out: Path) -> str:
    figures = [f for r in result.figures for f in r.figures]
    if not figures:
        return "No figures: no model of the table was evaluated.\n"
    lines = []
    for figure in figures:
        rel = Path(os.path.relpath(figure.png, out)).as_posix()
        title = markdown_text(figure.title)
        lines += [f"### {title}", "", f"![{title}]({rel})", ""]
    html = [r.report for r in result.figures if r.report]
    if html:
        page = markdown_code(Path(os.path.relpath(html[0], out)).as_posix())
        lines.append(f"All figures with the leaderboard: {page} (in `{FIGURES}/`).")
    return "\n".join(lines) + "\n"
