"""Sweeps: train a grid of LoRA configurations, evaluate each adapter and the base model, one leaderboard.

A sweep file (YAML)::

    task: abo_single_word
    model: blip                      # the base model plugin (a BLIP VQA plugin)
    defaults:                        # fine-tuning options every run shares (``vlmbench finetune``'s)
      epochs: 5
      learning_rate: 2.0e-4
    runs:                            # explicit configurations...
      - {name: r16-query_value_out, rank: 16, targets: query_value_out}
    grid:                            # ...and/or every combination of these values
      rank: [8, 16, 32]
      targets: [query_value, query_key_value]
    evaluate:                        # evaluation of the adapters and the base model
      batch_size: 32
      limit: null                    # evaluate only the first N test samples
      base: true                     # also evaluate the base model
      protocol: study                # optional: ask and score as a protocol says (`run --protocol`)

Without ``runs`` and ``grid`` the study's five configurations (:data:`STUDY_RUNS`) are trained. Each
run trains into ``OUT/<name>/``; a run that has finished is not trained again, an unfinished one is
resumed from its latest checkpoint. Evaluation goes through :func:`vlmbench.evaluate` (so it uses and
fills the prediction cache) into ``OUT/eval/``, and ``OUT/leaderboard.{md,csv}`` ranks the adapters
against the base model; ``OUT/sweep.md`` and ``OUT/sweep.json`` add each run's LoRA settings and
validation result.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlmbench.api import (
    ArgError,
    SpecError,
    VlmbenchError,
    markdown_text,
    read_yaml_file,
    study_order,
    unknown_message,
    write_json,
    write_text,
)
from vlmbench_plugins.models.blip.finetune.checkpoints import ADAPTER_INFO, CONFIG_FILE, STATE_FILE
from vlmbench_plugins.models.blip.finetune.config import FinetuneConfig, incompatible_changes

#: The study's LoRA table: exactly these five configurations, in the order of its reported ranking.
STUDY_RUNS: list[dict[str, Any]] = [
    {"name": "r16-query_value_out", "rank": 16, "targets": "query_value_out"},
    {"name": "r8-query_value_dense", "rank": 8, "targets": "query_value_dense"},
    {"name": "r8-query_key_value", "rank": 8, "targets": "query_key_value"},
    {"name": "r16-query_value_dense", "rank": 16, "targets": "query_value_dense"},
    {"name": "r32-query_value", "rank": 32, "targets": "query_value"},
]

_SWEEP_KEYS = {"task", "model", "defaults", "runs", "grid", "evaluate"}
_EVAL_KEYS = {"batch_size", "limit", "base", "device", "num_workers", "metrics", "dtype", "protocol", "metric_args",
              "seed"}  # fmt: skip
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")
# Set per run by the sweep itself, never in a sweep file.
_RESERVED = {"output_dir", "task", "model", "resume"}


@dataclass
class SweepSpec:
    task: str
    model: str = "blip"
    defaults: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)

    def configurations(self) -> list[dict[str, Any]]:
        """Every run's own options (with its name), explicit runs first, then the grid."""
        runs = [dict(r) for r in self.runs]
        if self.grid:
            keys = list(self.grid)
            for values in itertools.product(*(self.grid[k] for k in keys)):
                runs.append(dict(zip(keys, values, strict=True)))
        if not runs:
            runs = [dict(r) for r in STUDY_RUNS]
        for run in runs:
            run.setdefault("name", run_name({**self.defaults, **run}, own=run))
        names = [r["name"] for r in runs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SpecError(f"sweep: run names must be unique; repeated: {', '.join(duplicates)}")
        for name in names:
            if not _NAME.match(str(name)):
                raise SpecError(f"sweep: run name {name!r} must be a plain folder name")
        return runs

    def config_for(self, run: dict[str, Any], output_dir: Path) -> FinetuneConfig:
        options = {**self.defaults, **{k: v for k, v in run.items() if k != "name"}}
        known = set(FinetuneConfig.field_names()) - _RESERVED
        for key in options:
            if key not in known:
                raise SpecError(
                    f"sweep run {run['name']!r}: {unknown_message('fine-tuning option', key, known)}"
                )
        return FinetuneConfig(
            task=self.task,
            model=self.model,
            output_dir=output_dir / run["name"],
            name=run["name"],
            **{k: v for k, v in options.items() if k != "name"},
        )


def parse_settings(items: list[str] | tuple[str, ...], option: str = "--set") -> dict[str, Any]:
    """Fine-tuning options given as ``KEY=VALUE`` on a command line, each value read as YAML (so
    ``3`` is a number and ``true`` a flag); ``option`` names the flag in errors."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ArgError(f"{option} expects KEY=VALUE, got {item!r}")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


def run_name(options: dict[str, Any], own: dict[str, Any] | None = None) -> str:
    """A folder name for a configuration: ``r16-query_value``, plus the run's other own options
    (``own``, default: all of ``options``) as ``key=value``."""
    rank = options.get("rank", 16)
    targets = options.get("targets", "query_value") if not options.get("target_pattern") else "custom"
    skip = ("rank", "targets", "target_pattern", "name")
    extra = [f"{k}={v}" for k, v in sorted((own if own is not None else options).items()) if k not in skip]
    return "-".join([f"r{rank}", str(targets), *extra]).replace("/", "_")


def load_sweep(path: str | Path | None, *, task: str | None = None, model: str | None = None) -> SweepSpec:
    """A sweep from a YAML file (or the study's default sweep when ``path`` is None); ``task`` and
    ``model`` override the file's."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_file(Path(path), "sweep file") or {}
        if not isinstance(data, dict):
            raise SpecError(f"{path}: a sweep file must be a mapping")
        for key in data:
            if key not in _SWEEP_KEYS:
                raise SpecError(f"{path}: {unknown_message('sweep key', key, _SWEEP_KEYS)}")
    task = task or data.get("task")
    if not task:
        raise SpecError("a sweep needs a task (--task or `task:` in the sweep file)")
    spec = SweepSpec(
        task=str(task),
        model=model or data.get("model") or "blip",
        defaults=dict(data.get("defaults") or {}),
        runs=list(data.get("runs") or []),
        grid={k: list(v) if isinstance(v, list) else [v] for k, v in (data.get("grid") or {}).items()},
        evaluate=dict(data.get("evaluate") or {}),
    )
    for key in spec.evaluate:
        if key not in _EVAL_KEYS:
            raise SpecError(f"sweep evaluate: {unknown_message('option', key, _EVAL_KEYS)}")
    for key in spec.defaults:
        if key in _RESERVED:
            raise SpecError(f"sweep defaults: {key!r} is set by the sweep itself")
    return spec


def check_configurations(configs: list[FinetuneConfig], plugins: Any) -> None:
    """What every configuration needs (a BLIP VQA base model, the task's splits), checked before the
    first one trains; configurations that share a model, task and splits are checked once."""
    from vlmbench_plugins.models.blip.finetune.preflight import check_before_training

    seen = set()
    for config in configs:
        key = (config.model, config.task, config.train_split, config.val_split)
        if key not in seen:
            seen.add(key)
            check_before_training(config, plugins)


@dataclass
class SweepResult:
    output_dir: Path
    runs: list[dict[str, Any]]
    leaderboard: Path | None
    summary: Path | None


def run_sweep(
    spec: SweepSpec,
    output_dir: str | Path,
    *,
    only: list[str] | None = None,
    evaluate: bool = True,
    cache: Any = None,
    plugins: Any = None,
    log: Callable[[str], None] | None = None,
) -> SweepResult:
    """Train every configuration of ``spec`` (skipping finished ones), evaluate, write the leaderboard."""
    from vlmbench.api import load_plugins
    from vlmbench_plugins.models.blip.finetune.trainer import finetune

    if log is None:
        main_process = os.environ.get("RANK", "0") in ("", "0")  # data-parallel: rank 0 reports
        log = (lambda text: print(text, file=sys.stderr, flush=True)) if main_process else (lambda _t: None)
    out = Path(output_dir)
    plugins = plugins or load_plugins()
    runs = spec.configurations()
    if only:
        unknown = [n for n in only if n not in {r["name"] for r in runs}]
        if unknown:
            raise VlmbenchError(unknown_message("sweep run", unknown[0], [r["name"] for r in runs]))
        runs = [r for r in runs if r["name"] in only]
    configs = [spec.config_for(run, out) for run in runs]  # every option checked before any training
    check_configurations(configs, plugins)
    for key in ("mixed_precision", "device"):
        # accelerate fixes both once per process.
        if len({getattr(c, key) for c in configs}) > 1:
            raise SpecError(f"sweep: {key} must be the same for every run (set it in defaults)")
    summaries: list[dict[str, Any]] = []
    for config in configs:
        state_file = config.output_dir / STATE_FILE
        state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else None
        finished = False
        if state is not None:
            saved = json.loads((config.output_dir / CONFIG_FILE).read_text(encoding="utf-8"))
            changed = incompatible_changes(saved, config)
            if changed:
                raise VlmbenchError(
                    f"{config.output_dir} was trained with other options ({', '.join(changed)}); "
                    "remove it or use another sweep output folder"
                )
            # Done, unless the sweep now asks for more epochs or steps than were trained.
            finished = state.get("status") in ("completed", "early_stopped", "max_steps") and all(
                saved.get(k) == getattr(config, k) for k in ("epochs", "max_steps")
            )
        if finished:
            log(f"sweep: {config.run_name} already trained ({state['status']}, step {state['global_step']})")
        else:
            if state is not None:
                config.resume = "latest"
            log(f"sweep: training {config.run_name}")
            # Rerunning the sweep resumes an interrupted run from its latest checkpoint (see above).
            finetune(config, plugins=plugins, log=log, resume_hint="run the same command again to resume")
            state = json.loads(state_file.read_text(encoding="utf-8"))
        summaries.append(_summary(config, state))
    if not evaluate:
        return SweepResult(out, summaries, None, None)
    return _evaluate(spec, out, configs, summaries, cache=cache, plugins=plugins, log=log)


def _summary(config: FinetuneConfig, state: dict[str, Any] | None) -> dict[str, Any]:
    info_path = config.output_dir / "best" / ADAPTER_INFO
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    state = state or {}
    return {
        "name": config.run_name,
        "rank": config.rank,
        "alpha": config.lora_alpha,
        "dropout": config.dropout,
        "targets": config.targets if not config.target_pattern else "custom",
        "pattern": config.pattern,
        "modules": info.get("lora", {}).get("modules"),
        "trainable_parameters": info.get("trainable_parameters"),
        "quantization": config.quantization,
        "status": state.get("status"),
        "steps": state.get("global_step"),
        "best_step": state.get("best_step"),
        "best_val": state.get("best_value"),
        "monitor": state.get("monitor"),
        "adapter": str(config.output_dir / "best"),
    }


def _evaluate(
    spec: SweepSpec,
    out: Path,
    configs: list[FinetuneConfig],
    summaries: list[dict[str, Any]],
    *,
    cache: Any,
    plugins: Any,
    log: Callable[[str], None],
) -> SweepResult:
    from vlmbench.api import (
        RESULTS_FILE,
        evaluate,
        leaderboard_row,
        load_results,
        resolve_task,
        write_leaderboard,
    )

    options = spec.evaluate
    task = resolve_task(spec.task, plugins)
    common = {
        "plugins": plugins,
        "output_dir": out / "eval",
        "batch_size": options.get("batch_size", 16),
        "limit": options.get("limit"),
        "device": options.get("device", "auto"),
        "dtype": options.get("dtype", "auto"),
        "num_workers": options.get("num_workers"),  # None: the loader's default for the model
        "metrics": options.get("metrics"),
        "metric_args": options.get("metric_args") or {},
        "protocol": options.get("protocol"),  # a protocol's name or spec: how the task is asked and scored
        "seed": options.get("seed", 0),
        "cache": cache,
        "progress": False,
    }
    jobs: list[tuple[str | None, str, dict[str, Any]]] = []
    if options.get("base", True):
        base_args = _base_args(spec.defaults)
        jobs.append((None, spec.model, base_args))
    for config, summary in zip(configs, summaries, strict=True):
        args = {"adapter": summary["adapter"], **_quant_args(config.quantization)}
        if config.pretrained:
            args["pretrained"] = config.pretrained
        jobs.append((config.run_name, "lora-blip", args))
    rows = []
    base_metrics: dict[str, Any] | None = None
    for name, model, args in jobs:
        log(f"sweep: evaluating {name or model} on {task.name}")
        result = evaluate(model, task, model_args=args, **common)
        if result.status == "worker":
            continue
        path = result.run_dir / RESULTS_FILE
        rows.append(leaderboard_row(load_results(path), result.run_dir))
        metrics = result.results.get("metrics") or {}
        for summary in summaries:
            if summary["name"] == name:
                summary["test"] = {k: v.get("value") for k, v in metrics.items()}
                summary["run_dir"] = str(result.run_dir)
        if name is None:
            base_metrics = {k: v.get("value") for k, v in metrics.items()}
    if not rows:  # a data-parallel worker: rank 0 writes the tables
        return SweepResult(out, summaries, None, None)
    md, _ = write_leaderboard(rows, out)
    base = base_metrics
    summary_md = out / "sweep.md"
    write_text(summary_md, sweep_table(summaries, base))
    write_json(out / "sweep.json", {"task": task.name, "base": base, "runs": summaries})
    return SweepResult(out, summaries, md, summary_md)


def _quant_args(quantization: str | None) -> dict[str, Any]:
    return (
        {"load_in_8bit": True}
        if quantization == "8bit"
        else {"load_in_4bit": True}
        if quantization == "4bit"
        else {}
    )


def _base_args(defaults: dict[str, Any]) -> dict[str, Any]:
    args = _quant_args(defaults.get("quantization"))
    for key in ("pretrained", "revision"):
        if defaults.get(key):
            args[key] = defaults[key]
    return args


def sweep_table(summaries: list[dict[str, Any]], base: dict[str, Any] | None) -> str:
    """Markdown in the layout of the study's LoRA table: rank and targets, then the test metrics in the
    study's column order (with the change against the base model, whose row comes first), then how
    each adapter was trained."""
    found: list[str] = []
    for s in summaries:
        found += [k for k in s.get("test") or {} if k not in found]
    metrics = study_order(found)
    header = [
        "run",
        "rank",
        "targets",
        *metrics,
        "alpha",
        "modules",
        "trainable",
        "steps",
        "status",
        "best val",
    ]
    header = [markdown_text(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    if base is not None:
        cells = [
            "base model",
            "–",
            "–",
            *(format_number(base.get(m)) for m in metrics),
            "–",
            "–",
            "0",
            "–",
            "–",
            "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for s in summaries:
        test = s.get("test") or {}
        cells = [markdown_text(s["name"]), markdown_text(s["rank"]), markdown_text(s["targets"])]
        for m in metrics:
            value = test.get(m)
            text = format_number(value)
            if value is not None and base is not None and base.get(m) is not None:
                text += f" ({value - base[m]:+.4f})"
            cells.append(text)
        val = s.get("best_val")
        cells += [
            f"{s['alpha']:g}",
            format_number(s.get("modules")),
            format_number(s.get("trainable_parameters")),
            format_number(s.get("steps")),
            markdown_text(s.get("status") or "–"),
            f"{markdown_text(s.get('monitor'))} {val:.4f}" if val is not None else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Test metrics of each adapter, with the change against the base model in brackets."]
    return "\n".join(lines) + "\n"


def format_number(value: Any, digits: int = 4) -> str:
    """A table cell: ``–`` for nothing, floats to ``digits`` decimals, integers with thousands commas."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)
