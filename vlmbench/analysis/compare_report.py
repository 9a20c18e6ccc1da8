"""A comparison report (:func:`vlmbench.analysis.compare.compare_runs`) as Markdown, a self-contained HTML page
or JSON. Every value that comes from the runs (labels, questions, answers) is escaped."""

from __future__ import annotations

import json
from typing import Any

from vlmbench.analysis.display import markdown_text
from vlmbench.analysis.html import render_page

_FLIP_KINDS = (("right_to_wrong", "Right → wrong"), ("wrong_to_right", "Wrong → right"))
_FLIP_HEADER = ["sample", "difficulty", "question", "reference", "baseline answer", "run answer"]
_METRIC_HEADER = ["metric", "baseline", "run", "Δ", "95% CI", "verdict"]


# -- text of numbers and sentences, shared by both formats ------------------------------------------
def _num(x: float | None, digits: int = 4, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _ci_text(ci: list[float] | None) -> str:
    return "–" if not ci else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _p_text(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.2e}"


def _delta_text(m: dict | None) -> str:
    return "–" if m is None else f"{_num(m['delta'], signed=True)} {_ci_text(m['ci95'])}"


def _limit(items: list, top: int | None) -> list:
    return items if not top else items[:top]


def _refs(refs: list[str]) -> str:
    return " / ".join(refs)


def _mcnemar_sentence(m: dict) -> str:
    return (
        f"{m['right_to_wrong']} right→wrong, {m['wrong_to_right']} wrong→right "
        f"({m['both_right']} both right, {m['both_wrong']} both wrong); "
        f"McNemar exact p = {_p_text(m['p_value'])}"
    )


def _intro(report: dict) -> str:
    s = report["settings"]
    return (
        "Deltas are run − baseline on the samples both answered; 95% intervals from a paired bootstrap "
        f"({s['bootstrap_samples']} resamples, seed {s['seed']})."
    )


def _samples_sentence(comp: dict) -> str:
    run, smp = comp["run"], comp["samples"]
    return (
        f"{smp['paired']} paired samples ({run['label']} answered {smp['run_ok']}, "
        f"baseline {smp['baseline_ok']}; {smp['only_baseline']} only in the baseline, "
        f"{smp['only_run']} only in the run)."
    )


def _difficulty_columns(comp: dict) -> list[str]:
    cols: list[str] = []
    for entry in comp["by_difficulty"].values():
        for name in entry["metrics"]:
            if name not in cols:
                cols.append(name)
    return cols


def _difficulty_table(comp: dict) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Header and rows of the per-difficulty table: (text, is a number) cells."""
    cols = _difficulty_columns(comp)
    header = ["difficulty", "n", *(f"Δ {c} [95% CI]" for c in cols)]
    if comp["mcnemar"]:
        header += ["right→wrong", "wrong→right", "McNemar p"]
    rows = []
    for level, entry in comp["by_difficulty"].items():
        cells = [(level, False), (str(entry["n"]), True)]
        cells += [(_delta_text(entry["metrics"].get(c)), True) for c in cols]
        if comp["mcnemar"]:
            mc = entry["mcnemar"]
            cells += [(str(mc["right_to_wrong"]), True), (str(mc["wrong_to_right"]), True),
                      (_p_text(mc["p_value"]), True)]  # fmt: skip
        rows.append(cells)
    return header, rows


def _flip_cells(f: dict) -> list[Any]:
    return [
        f["sample_id"],
        f["difficulty"],
        f["question"],
        _refs(f["references"]),
        f["answer_baseline"],
        f["answer_run"],
    ]


def _flip_title(title: str, flips: list, shown: list) -> str:
    more = f", first {len(shown)} shown" if len(shown) < len(flips) else ""
    return f"{title} ({len(flips)}{more})"


# -- Markdown -------------------------------------------------------------------------------------
def _md_row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def to_markdown(report: dict, top: int | None = 20) -> str:
    task = report["task"]
    lines = [
        f"# Comparison on {markdown_text(task['name'])} (version {markdown_text(task['version'])}, hash {markdown_text(task['hash'])})",
        "",
        f"Baseline: **{markdown_text(report['baseline']['label'])}** ({markdown_text(report['baseline']['path'])}). {_intro(report)}",
    ]
    for comp in report["comparisons"]:
        lines += _md_comparison(comp, top)
    return "\n".join(lines) + "\n"


def _md_comparison(comp: dict, top: int | None) -> list[str]:
    run, smp = comp["run"], comp["samples"]
    lines = ["", f"## {markdown_text(run['label'])} vs {markdown_text(comp['baseline']['label'])}", ""]
    if comp["task_mismatch"]:
        lines.append(
            f"**Warning: different tasks, compared on request** ({markdown_text('; '.join(comp['task_mismatch']))})."
        )
        if smp["reference_mismatches"]:
            lines.append(f"{smp['reference_mismatches']} paired samples have different references.")
        lines.append("")
    lines.append(f"{markdown_text(_samples_sentence(comp))} Run folder: {markdown_text(run['path'])}.")
    lines += ["", _md_row(_METRIC_HEADER), "|---|---|---|---|---|---|"]
    for name, m in comp["metrics"].items():
        arrow = "↑" if m["higher_is_better"] else "↓"
        lines.append(_md_row([f"{markdown_text(name)} {arrow}", _num(m["a"]), _num(m["b"]), _num(m["delta"], signed=True),
                              _ci_text(m["ci95"]), m["verdict"]]))  # fmt: skip
    lines += [
        "\nNote: " + markdown_text(f"{name}: {m['note']}")
        for name, m in comp["metrics"].items()
        if m.get("note")
    ]
    if comp["mcnemar"]:
        lines += ["", f"Exact Match: {_mcnemar_sentence(comp['mcnemar'])}."]
    if comp["by_difficulty"]:
        header, rows = _difficulty_table(comp)
        lines += ["", "### By difficulty", "", _md_row(header), "|" + "---|" * len(header)]
        lines += [_md_row([markdown_text(text) for text, _ in cells]) for cells in rows]
    if comp["mcnemar"]:
        for key, title in _FLIP_KINDS:
            flips = comp["flips"][key]
            shown = _limit(flips, top)
            lines += ["", f"### {_flip_title(title, flips, shown)}", ""]
            if not flips:
                lines.append("None.")
                continue
            lines += [_md_row(_FLIP_HEADER), "|---|---|---|---|---|---|"]
            lines += [_md_row([markdown_text(c) for c in _flip_cells(f)]) for f in shown]
    return lines


# -- HTML -----------------------------------------------------------------------------------------
def to_html(report: dict, top: int | None = 20) -> str:
    """A self-contained HTML page (inline CSS, no scripts); every value from the runs is escaped
    (``templates/compare.html``, rendered by :mod:`vlmbench.analysis.html`)."""
    task = report["task"]
    return render_page(
        "compare.html",
        title=f"Comparison on {task['name']}",
        task=task,
        baseline=report["baseline"],
        intro=_intro(report),
        metric_header=_METRIC_HEADER,
        flip_header=_FLIP_HEADER,
        comparisons=[_html_comparison(comp, top) for comp in report["comparisons"]],
    )


def _html_comparison(comp: dict, top: int | None) -> dict[str, Any]:
    """One comparison as ``compare.html`` shows it: plain text, tables as rows of (text, CSS class) cells."""
    run, smp = comp["run"], comp["samples"]
    metrics = []
    for name, m in comp["metrics"].items():
        arrow = "↑" if m["higher_is_better"] else "↓"
        cls = m["verdict"] if m["verdict"] in ("better", "worse") else ""
        metrics.append([(f"{name} {arrow}", ""), (_num(m["a"]), "num"), (_num(m["b"]), "num"),
                        (_num(m["delta"], signed=True), "num"), (_ci_text(m["ci95"]), "num"), (m["verdict"], cls)])  # fmt: skip
    by_difficulty = None
    if comp["by_difficulty"]:
        header, cells = _difficulty_table(comp)
        by_difficulty = {
            "header": header,
            "rows": [[(t, "num" if n else "") for t, n in row] for row in cells],
        }
    flips = []
    if comp["mcnemar"]:
        for key, title in _FLIP_KINDS:
            shown = _limit(comp["flips"][key], top)
            rows = [[(c, "num" if i == 1 else "") for i, c in enumerate(_flip_cells(f))] for f in shown]
            flips.append({"title": _flip_title(title, comp["flips"][key], shown), "rows": rows})
    return {
        "label": run["label"],
        "baseline_label": comp["baseline"]["label"],
        "task_mismatch": "; ".join(comp["task_mismatch"]),
        "reference_mismatches": (
            f" {smp['reference_mismatches']} paired samples have different references."
            if comp["task_mismatch"] and smp["reference_mismatches"]
            else ""
        ),
        "samples": _samples_sentence(comp),
        "path": run["path"],
        "metrics": metrics,
        "notes": [f"{name}: {m['note']}" for name, m in comp["metrics"].items() if m.get("note")],
        "mcnemar": _mcnemar_sentence(comp["mcnemar"]) if comp["mcnemar"] else "",
        "by_difficulty": by_difficulty,
        "flips": flips,
    }


# -- JSON -----------------------------------------------------------------------------------------
def to_json(report: dict, top: int | None = None) -> str:
    """The report as JSON; ``top`` limits the flipped-sample lists (their counts stay in ``mcnemar``)."""
    if top:
        report = json.loads(json.dumps(report))
        for comp in report["comparisons"]:
            for key in comp["flips"]:
                comp["flips"][key] = comp["flips"][key][:top]
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


RENDERERS = {"markdown": to_markdown, "html": to_html, "json": to_json}
