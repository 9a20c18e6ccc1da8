"""The study's 8-bit step: models evaluated again with 8-bit weights, each beside its full-precision run.

Under a protocol that names an 8-bit step (the ``study`` protocol: the base BLIP VQA model with every
Linear layer of more than 256 output features in bitsandbytes 8 bits, threshold 6.0, as the study did)
that pair comes first. vlmbench's own step follows as an extra pair: the best LoRA adapter (by Average
Mark, else Exact Match) with its base weights loaded in 8 bits the way transformers converts by default;
without the LoRA step, the LoRA base model of the model table.

Throughput is measured while a run computes its answers; a rerun whose answers all come from the cache
measures nothing, so the last measurement of each model (by fingerprint) is kept in
``OUT/quantization/throughput.json`` and reported with its date.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlmbench.api import RESULTS_FILE, RunConfig, now, plan_run, run_plan, write_json
from vlmbench_plugins.study.recipe import QUANTIZATION, SELECTION_METRICS, StudyPlan, StudyResult, args_of

THROUGHPUT_FILE = "throughput.json"


def quantize(
    plan: StudyPlan, result: StudyResult, plugins: Any, log: Callable[[str], None]
) -> dict[str, Any]:
    """Every 8-bit pair of the study: ``{"pairs": [...]}``, each with both run folders, what was
    quantised and how, or why it was not measured."""
    out = plan.output_dir / QUANTIZATION
    speeds = _read_speeds(out / THROUGHPUT_FILE)
    # The full-precision runs repeat runs of the model table and the LoRA step, whose answers they take
    # from the cache: those runs measured the throughput.
    earlier = [d for _, d in result.models] + [r["run_dir"] for r in (result.sweep.runs if result.sweep else [])
                                               if r.get("run_dir")]  # fmt: skip
    for run_dir in earlier:
        _speed(_read_speeds(Path(run_dir) / RESULTS_FILE), speeds)
    pairs = []
    protocol = plan.protocol
    if protocol is not None and protocol.quantization:
        pairs.append(_protocol_pair(plan, protocol, plugins, log, speeds))
    pairs.append(_tool_pair(plan, result, plugins, log, speeds))
    write_json(out / THROUGHPUT_FILE, speeds)
    return {"pairs": pairs}


def _protocol_pair(plan: StudyPlan, protocol: Any, plugins: Any, log: Callable[[str], None],
                   speeds: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The protocol's 8-bit step: its model (with the model table's arguments for it, or the LoRA
    runs' base checkpoint) in full precision and with the protocol's 8-bit arguments."""
    model = protocol.quantization.get("model") or plan.options.lora_base
    args = _table_args(plan, model)
    if not args.get("pretrained") and plan.sweep is not None and plan.sweep.defaults.get("pretrained"):
        args["pretrained"] = str(plan.sweep.defaults["pretrained"])
    eight_bit = {**args, **protocol.quantization.get("args", {})}
    scope = _scope_text(eight_bit)
    return _pair(plan, plugins, log, speeds, model, args, eight_bit, label=model,
                 kind=f"protocol {protocol.protocol}", scope=scope)  # fmt: skip


def _tool_pair(plan: StudyPlan, result: StudyResult, plugins: Any, log: Callable[[str], None],
               speeds: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """vlmbench's 8-bit step: the best adapter (or the LoRA base model) with 8-bit base weights."""
    subject = _tool_subject(plan, result)
    if isinstance(subject, str):
        return {"kind": "vlmbench", "status": "skipped", "reason": subject}
    model, args, label = subject
    return _pair(plan, plugins, log, speeds, model, args, {**args, "load_in_8bit": "true"}, label=label,
                 kind="vlmbench", scope=_scope_text({"load_in_8bit": True}))  # fmt: skip


def _pair(plan: StudyPlan, plugins: Any, log: Callable[[str], None], speeds: dict[str, Any], model: str,
          full_args: dict[str, Any], eight_args: dict[str, Any], *, label: str, kind: str,
          scope: str) -> dict[str, Any]:  # fmt: skip
    pair: dict[str, Any] = {"kind": kind, "model": model, "label": label, "scope": scope}
    for weights, args in (("full precision", full_args), ("8-bit", eight_args)):
        log(f"study: {label} ({weights}) on {plan.task.name}")
        cfg = RunConfig(**plan.options.run, output_dir=plan.output_dir / QUANTIZATION,
                        label=f"{label} {weights}")  # fmt: skip
        done = run_plan(plan_run(model, plan.task, cfg, model_args=args, plugins=plugins))
        key = "full_precision" if weights == "full precision" else "quantized"
        pair[key] = str(done.run_dir)
        pair[f"{key}_speed"] = _speed(done.results, speeds)
        if done.status != "ok":
            pair.update(status=done.status, reason=done.results.get("reason"))
            return pair
    pair["status"] = "ok"
    return pair


def _speed(results: dict[str, Any], speeds: dict[str, Any]) -> dict[str, Any] | None:
    """Samples per second of a run's model: measured now, or the last measurement of that model."""
    model = results.get("model") or {}
    fingerprint = model.get("fingerprint")
    timing = results.get("timing") or {}
    value = timing.get("samples_per_second")
    if fingerprint and value and not timing.get("cached_rerun"):
        speeds[fingerprint] = {"samples_per_second": value, "measured": now(),
                               "device": (results.get("config") or {}).get("device")}  # fmt: skip
    return speeds.get(fingerprint) if fingerprint else None


def _read_speeds(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _scope_text(args: dict[str, Any]) -> str:
    """What an 8-bit run quantises, in words."""
    above = int(args.get("int8_min_out_features") or 0)
    threshold = float(args.get("int8_threshold") or 6.0)
    if above:
        return f"Linear layers with more than {above} output features (threshold {threshold:.1f})"
    return f"the Linear layers transformers converts, output heads kept (threshold {threshold:.1f})"


def _table_args(plan: StudyPlan, model: str) -> dict[str, Any]:
    """The model table's arguments for ``model`` (its first entry), or none."""
    for choice, _ in plan.models:
        if choice.name == model:
            return args_of(choice)
    return {}


def _tool_subject(plan: StudyPlan, result: StudyResult) -> tuple[str, dict[str, Any], str] | str:
    """(model plugin, its arguments, label) of what vlmbench's own step quantises: the best adapter of
    the sweep, or without a sweep the LoRA base model of the model table; else why there is none."""
    sweep = result.sweep
    if sweep is not None:
        runs = [r for r in sweep.runs if r.get("run_dir") and r.get("test")]
        for metric in SELECTION_METRICS:
            scored = [r for r in runs if r["test"].get(metric) is not None]
            if scored:
                best = max(scored, key=lambda r: r["test"][metric])
                args = {"adapter": best["adapter"]}
                pretrained = plan.sweep.defaults.get("pretrained")
                if pretrained:
                    args["pretrained"] = str(pretrained)
                return "lora-blip", args, f"lora-blip {best['name']}"
        return "no adapter of the sweep was evaluated"
    if result.sweep_skipped:
        return "the LoRA configurations were skipped"
    for (row, _), (choice, _) in zip(result.models, plan.models, strict=True):
        if choice.name == plan.options.lora_base and row.status == "ok":
            return choice.name, args_of(choice), row.model
    return f"{plan.options.lora_base} was not evaluated in the model table"
