"""The report's tables in the paper's layout: Table 1 (the models, in the paper's order and names, every
study column always present), Table 2 (the Average Mark ranking), the LoRA table with absolute and
relative change against the base model, and the 8-bit rows with memory saved and throughput.

Every number is read from the results.json of the run that produced it. A value that is not there is
"–" with a numbered note saying why (a model not in the run file, a skipped model, a metric not scored or
skipped); the paper's reported values (``--with-paper``) sit in their own "(paper)" columns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench.api import RESULTS_FILE, load_results, markdown_text
from vlmbench_plugins.study import paper
from vlmbench_plugins.study.recipe import StudyPlan, StudyResult

DASH = "–"


@dataclass
class StudyRow:
    """One row of Table 1: its name, the run's leaderboard row and results (None: not run), notes."""

    name: str
    plugin: str
    row: Any | None = None
    results: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def value(self, column: str) -> float | None:
        metric = (self.results.get("metrics") or {}).get(column) or {}
        return metric.get("value")

    @property
    def ok(self) -> bool:
        return self.row is not None and self.row.status == "ok"


def study_rows(plan: StudyPlan, result: StudyResult) -> list[StudyRow]:
    """The paper's seven rows in its order (each played by the first run-file entry of its plugin), then
    the blind prior baseline, then every other entry of the run file under its own label."""
    runs = [
        (choice, row, run_dir) for (choice, _), (row, run_dir) in zip(plan.models, result.models, strict=True)
    ]
    not_run = {label: reason for label, reason in result.skipped}
    rows: list[StudyRow] = []
    for name, plugin in (*paper.PAPER_ROWS, paper.PRIOR):
        found = next((r for r in runs if r[0].name == plugin), None)
        if found is not None:
            runs.remove(found)
            rows.append(_row(name, plugin, found[1], found[2]))
        elif plugin in not_run:
            rows.append(StudyRow(name, plugin, notes=[f"not run: {not_run.pop(plugin)}"]))
        elif plugin != paper.PRIOR[1]:
            rows.append(StudyRow(name, plugin, notes=["not in the run file"]))
    rows += [_row(row.model, choice.name, row, run_dir) for choice, row, run_dir in runs]
    rows += [StudyRow(label, label, notes=[f"not run: {reason}"]) for label, reason in not_run.items()]
    scored = {c for r in rows for c in (r.results.get("metrics") or {})}
    missing = [title for title, column in paper.COLUMNS if column not in scored]
    for r in rows:
        if r.ok and missing:
            r.notes.append(f"not scored in this study: {', '.join(missing)} (see --metrics)")
    return rows


def _row(name: str, plugin: str, row: Any, run_dir: Path) -> StudyRow:
    path = Path(run_dir) / RESULTS_FILE
    results = load_results(path) if path.is_file() else {}
    notes = list(row.notes)
    features = (results.get("model") or {}).get("feature_extractor")
    if features and row.status == "ok":
        notes.append(f"image features: {features}")
    return StudyRow(name, plugin, row, results, Path(run_dir), notes)


# -- cells and Markdown -------------------------------------------------------------------------------
def cell(value: float | None, digits: int = 4) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def change(value: float | None, base: float | None) -> str:
    """``0.1079 (+0.0142, +15.2%)``: a value with its absolute and relative change against ``base``."""
    if value is None:
        return DASH
    if base is None:
        return cell(value)
    relative = f", {(value - base) / base:+.1%}" if base else ""
    return f"{value:.4f} ({value - base:+.4f}{relative})"


def parameters(row: StudyRow) -> str:
    if not row.ok:
        return DASH
    n = row.row.parameters
    if n is None:
        return f"{row.row.parameters_registered} (registered)" if row.row.parameters_registered else "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def markdown_table(header: list[str], lines: list[list[str]]) -> list[str]:
    """A Markdown table whose cells are shown as written: a label or reason from a run is never markup."""
    return [
        "| " + " | ".join(map(markdown_text, header)) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ] + ["| " + " | ".join(markdown_text(c) for c in cells) + " |" for cells in lines]


def numbered(notes_per_row: list[list[str]]) -> tuple[list[str], list[str]]:
    """Per row its note numbers (``[1] [3]``), and the texts below the table (one number per text)."""
    found: list[str] = []
    refs = []
    for notes in notes_per_row:
        ids = []
        for note in notes:
            if note not in found:
                found.append(note)
            ids.append(found.index(note) + 1)
        refs.append(" ".join(f"[{i}]" for i in ids))
    return refs, [f"{i}. {markdown_text(text)}" for i, text in enumerate(found, start=1)]


# -- Table 1 and Table 2 ------------------------------------------------------------------------------
def table1(rows: list[StudyRow], with_paper: bool) -> str:
    """The paper's Table 1: Model, Parameters, then its eleven metric columns, in its order."""
    header = ["Model", "Parameters"] + (["Parameters (paper)"] if with_paper else [])
    for title, _ in paper.COLUMNS:
        header += [title] + ([f"{title} (paper)"] if with_paper else [])
    refs, texts = numbered([r.notes for r in rows])
    lines = []
    for r, ref in zip(rows, refs, strict=True):
        reported = paper.TABLE1.get(r.name) if r.plugin == dict(paper.PAPER_ROWS).get(r.name) else None
        cells = [r.name, parameters(r)] + ([reported[0] if reported else DASH] if with_paper else [])
        for i, (_, column) in enumerate(paper.COLUMNS):
            cells.append(cell(r.value(column)))
            if with_paper:
                cells.append(cell(reported[1][i], 5) if reported else DASH)
        lines.append([*cells, ref])
    out = markdown_table([*header, "Notes"], lines)
    return "\n".join([*out, "", "Notes:", "", *texts] if texts else out) + "\n"


def table2(rows: list[StudyRow], with_paper: bool) -> str:
    """The Average Mark ranking, with Exact Match per difficulty level (within a level Average Mark
    equals Exact Match: a level has one weight)."""
    ranked = sorted((r for r in rows if r.ok and r.value("average_mark") is not None),
                    key=lambda r: -r.value("average_mark"))  # fmt: skip
    ranked += [r for r in rows if r not in ranked]
    levels = sorted({lvl for r in ranked for lvl in r.results.get("by_difficulty") or {}}, key=_level_key)
    header = ["Rank", "Model", "Average_Mark"] + (["Average_Mark (paper, Table 2)"] if with_paper else [])
    header += [f"Exact Match, difficulty {lvl}" for lvl in levels]
    lines = []
    for i, r in enumerate(ranked, start=1):
        value = r.value("average_mark") if r.ok else None
        cells = [str(i) if value is not None else DASH, r.name, cell(value)]
        if with_paper:
            reported = (
                paper.TABLE2_AVERAGE_MARK.get(r.name)
                if r.plugin == dict(paper.PAPER_ROWS).get(r.name)
                else None
            )
            cells.append(cell(reported, 5))
        by = r.results.get("by_difficulty") or {}
        for lvl in levels:
            em = (((by.get(lvl) or {}).get("metrics") or {}).get("exact_match") or {}).get("value")
            n = (by.get(lvl) or {}).get("n")
            cells.append(DASH if em is None else f"{em:.4f} (n={n})")
        lines.append(cells)
    return "\n".join(markdown_table(header, lines)) + "\n"


def _level_key(level: str) -> tuple[int, str]:
    return (int(level), "") if level.lstrip("-").isdigit() else (1 << 30, level)


def renamed(rows: list[StudyRow]) -> list[Any]:
    """The leaderboard rows of the runs, named as Table 1 names them (for the per-difficulty view)."""
    return [dataclasses.replace(r.row, model=r.name) for r in rows if r.row is not None]


# -- the LoRA table -----------------------------------------------------------------------------------
def lora_table(runs: list[dict[str, Any]], base: dict[str, Any] | None, with_paper: bool) -> str:
    """The base model, then each configuration in the study's order: rank, targets, the study's metric
    columns with the change against the base model (absolute, relative), then how it was trained."""
    header = ["Run", "Rank", "Target_Modules"]
    for title, _ in paper.COLUMNS:
        header += [title] + ([f"{title} (paper)"] if with_paper else [])
    header += ["alpha", "dropout", "steps", "status"]
    base = base or {}
    lines = [["base model", DASH, DASH]]
    for i, (_, column) in enumerate(paper.COLUMNS):
        lines[0].append(cell(base.get(column)))
        if with_paper:  # the paper's base is its Table 1 BLIP row
            lines[0].append(cell(paper.TABLE1["BLIP"][1][i], 5))
    lines[0] += [DASH] * 4
    for run in runs:
        test = run.get("test") or {}
        cells = [run["name"], str(run["rank"]), str(run["targets"])]
        reported = paper.LORA.get(run["name"])
        for i, (_, column) in enumerate(paper.COLUMNS):
            cells.append(change(test.get(column), base.get(column)))
            if with_paper:
                cells.append(cell(reported[i], 5) if reported else DASH)
        cells += [f"{run['alpha']:g}", f"{run['dropout']:g}", str(run.get("steps") or DASH),
                  str(run.get("status") or DASH)]  # fmt: skip
        lines.append(cells)
    out = markdown_table(header, lines)
    out += ["", "Each adapter's test value with its change against the base model: (absolute, relative)."]
    if with_paper:
        out.append(f"Paper: the best configuration, rank 16 query_value_out, gains "
                   f"{paper.LORA_BEST_RELATIVE_AVERAGE_MARK:+.1%} relative Average Mark over the base model.")  # fmt: skip
    return "\n".join(out) + "\n"


# -- the 8-bit rows -----------------------------------------------------------------------------------
QUANT_COLUMNS = ["Model", "Weights", "8-bit scope", "Memory MB", "Memory saved", "Samples/s"]


def quantization_table(pairs: list[dict[str, Any]], with_paper: bool) -> tuple[str, list[dict[str, Any]]]:
    """Per pair, the full-precision and the 8-bit row (memory, % saved, samples/s, every study column)
    and their change; with the data behind them."""
    header = QUANT_COLUMNS + [title for title, _ in paper.COLUMNS]
    lines, data, notes = [], [], []
    for pair in pairs:
        if pair.get("status") != "ok":
            notes.append(
                f"- {markdown_text(pair.get('label') or pair['kind'])}: not measured: "
                f"{markdown_text(pair.get('reason') or pair.get('status'))}"
            )
            continue
        full = load_results(Path(pair["full_precision"]) / RESULTS_FILE)
        eight = load_results(Path(pair["quantized"]) / RESULTS_FILE)
        memory = [(r.get("model") or {}).get("memory_footprint_mb") for r in (full, eight)]
        saved = 1 - memory[1] / memory[0] if None not in memory and memory[0] else None
        name = _quant_name(pair)
        entry = {"pair": pair["kind"], "model": name, "memory_saved": saved, "rows": {}}
        for weights, results, mb, speed in (("full precision", full, memory[0], pair.get("full_precision_speed")),
                                            ("8-bit", eight, memory[1], pair.get("quantized_speed"))):  # fmt: skip
            values = {c: ((results.get("metrics") or {}).get(c) or {}).get("value") for _, c in paper.COLUMNS}
            per_s = (speed or {}).get("samples_per_second")
            cells = [name, weights, pair["scope"] if weights == "8-bit" else DASH, cell(mb, 2),
                     cell(saved * 100, 1) + "%" if weights == "8-bit" and saved is not None else DASH,
                     cell(per_s, 1)]  # fmt: skip
            lines.append(cells + [cell(values[c]) for _, c in paper.COLUMNS])
            entry["rows"][weights] = {"run_dir": str(Path(pair["full_precision" if weights != "8-bit" else "quantized"])),
                                      "memory_footprint_mb": mb, "samples_per_second": per_s, "metrics": values}  # fmt: skip
        rows = entry["rows"]
        delta = [f"{v8 - vf:+.4f}" if None not in (vf, v8) else DASH
                 for vf, v8 in ((rows["full precision"]["metrics"][c], rows["8-bit"]["metrics"][c]) for _, c in paper.COLUMNS)]  # fmt: skip
        lines.append([name, "8-bit − full", DASH, _delta(memory), DASH, DASH, *delta])
        data.append(entry)
    out = markdown_table(header, lines) if lines else ["No 8-bit pair was measured."]
    out += ["", *notes] if notes else []
    out += ["", "Memory: bytes of weights and buffers as loaded (8-bit weights count one byte each). Samples/s: "
            "measured when the answers were computed (a rerun answered from the cache keeps the last "
            "measurement)."]  # fmt: skip
    if with_paper:
        out.append(f"Paper: about {paper.QUANTIZATION_MEMORY_SAVED:.0%} less memory, BERTScore "
                   f"{paper.QUANTIZATION_BERTSCORE_CHANGE:+.4f}.")  # fmt: skip
    return "\n".join(out) + "\n", data


def _quant_name(pair: dict[str, Any]) -> str:
    names = {plugin: name for name, plugin in paper.PAPER_ROWS}
    if pair["kind"].startswith("protocol"):
        return f"{names.get(pair['model'], pair['label'])} ({pair['kind']})"
    return f"{pair['label']} (vlmbench)"


def _delta(memory: list[float | None]) -> str:
    return DASH if None in memory else f"{memory[1] - memory[0]:+.2f}"
