"""The steps of the study, in order: the model table, the LoRA grid, 8-bit quantisation, the report.

:func:`plan_study` checks everything the user gave — the run file, the task and its data, every
model's arguments, every LoRA option, the output folder — before any model is loaded, so a mistake is
one error line, not a failure an hour in. :func:`run_study` then runs the steps; each is cached and
resumable the way its own command is (``run``'s prediction cache, ``sweep``'s finished adapters), so
rerunning the command after an interruption continues where it stopped.

Output folder layout::

    OUT/models/TASK/MODEL-FINGERPRINT/     one run per model of the run file (the model table)
    OUT/lora/                              the sweep: adapters, OUT/lora/eval/ runs, sweep.{md,json}
    OUT/quantization/TASK/...              8-bit runs beside their full-precision runs
    OUT/figures/                           the figures of the model table (report.html), Figure 3 and
                                           the quantisation figure
    OUT/report.md, OUT/study.json          everything above in one report

Every evaluation and the LoRA training follow one protocol (``--protocol``, default ``study``: the
study's filters, metric options, prompts, candidates, LoRA settings and 8-bit scope, defined in
``tasks/protocols/study.yaml``); ``--protocol none`` uses vlmbench's own defaults.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench.api import (
    ArgError,
    AssetMissingError,
    ModelChoice,
    RunConfig,
    RunPlan,
    Task,
    UnsupportedTask,
    VlmbenchError,
    find_protocol,
    find_run_file,
    leaderboard_row,
    load_run_file,
    parse_kv,
    parse_metric_args,
    plan_run,
    render_figures,
    resolve_task,
    run_plan,
    split_scoped,
    unknown_message,
)

#: Where each part of the study goes inside the output folder.
MODELS, LORA, QUANTIZATION, FIGURES = "models", "lora", "quantization", "figures"
#: The metric that picks the adapter to quantise: the study's headline, else exact match.
SELECTION_METRICS = ("average_mark", "exact_match")


@dataclass
class StudyOptions:
    """What ``vlmbench study`` was asked for (its flags)."""

    config: str = "study"
    task: str | None = None
    output_dir: Path = Path("runs/study")
    model_args: list[str] = field(default_factory=list)  # NAME:k=v,... for one model of the run file
    lora: bool = True
    lora_base: str = "blip"
    lora_settings: list[str] = field(default_factory=list)  # KEY=VALUE fine-tuning options
    quantization: bool = True
    run: dict[str, Any] = field(default_factory=dict)  # RunConfig fields shared by every evaluation
    protocol: str | None = "study"  # None: vlmbench's own defaults
    metric_args: list[str] = field(default_factory=list)  # METRIC:k=v,... for every evaluation
    with_paper: bool = False  # the paper's reported values beside the report's own


@dataclass
class StudyPlan:
    options: StudyOptions
    task: Task
    output_dir: Path
    models: list[tuple[ModelChoice, RunPlan]]
    skipped: list[tuple[str, str]]  # (model, reason) for models that cannot answer the task at all
    sweep: Any | None  # the LoRA sweep spec
    run_file: Path
    protocol: Any | None = None  # the ProtocolSpec every step follows


@dataclass
class StudyResult:
    output_dir: Path
    models: list[tuple[Any, Path]] = field(default_factory=list)  # (leaderboard row, run folder)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sweep: Any | None = None
    sweep_skipped: str | None = None  # why the LoRA step could not run
    quantization: dict[str, Any] | None = None
    figures: list[Any] = field(default_factory=list)
    study_figures: list[Any] = field(default_factory=list)  # Figure 3 and the quantisation figure
    report: Path | None = None


def plan_study(options: StudyOptions, plugins: Any) -> StudyPlan:
    """Resolve and check everything before any model work."""
    run_file = find_run_file(options.config, plugins)
    spec = load_run_file(run_file)
    task_name = options.task or _single_task(spec.tasks, run_file)
    task = resolve_task(task_name, plugins)
    out = Path(options.output_dir)
    if out.exists() and not out.is_dir():
        raise VlmbenchError(f"output folder {out} exists and is not a folder")
    # The run file's options, then the command line's: one set of evaluation settings for every step.
    options.run = {**_file_options(spec.options), **options.run}
    protocol = find_protocol(options.protocol, plugins) if options.protocol else None
    if protocol is not None:
        options.run["protocol"] = protocol
    if options.metric_args:
        options.run["metric_args"] = parse_metric_args(options.metric_args)
    choices = _with_model_args(spec.model_choices(), options.model_args)
    sweep = _plan_sweep(options, task, out, options.run, plugins) if options.lora else None
    # without a sweep the LoRA base model itself is quantised: it must take the 8-bit option
    if (
        options.quantization
        and not options.lora
        and "load_in_8bit" not in plugins.models.load(options.lora_base).args
    ):
        raise ArgError(
            f"--lora-base {options.lora_base!r} cannot be loaded in 8 bits (it has no load_in_8bit "
            "argument); choose another --lora-base or pass --no-quantization"
        )
    plans, skipped = [], []
    for choice in choices:
        cfg = RunConfig(**options.run, output_dir=out / MODELS, label=choice.label)
        try:
            plans.append((choice, plan_run(choice.name, task, cfg, model_args=choice.args, plugins=plugins)))
        except UnsupportedTask as exc:
            skipped.append((choice.label or choice.name, str(exc)))
    if options.quantization:
        plugins.models.get(options.lora_base)  # the model quantised when there is no adapter
        if protocol is not None and protocol.quantization:
            plugins.models.get(protocol.quantization.get("model") or options.lora_base)
    return StudyPlan(options, task, out, plans, skipped, sweep, run_file, protocol)


def _file_options(file_options: Any) -> dict[str, Any]:
    """A run file's ``options`` as evaluation settings; where results go is the study's to decide."""
    run = {k: v for k, v in vars(file_options).items() if v is not None}
    for key in ("output_dir", "fail_on_skip"):
        run.pop(key, None)
    if run.pop("no_cache", False):
        run["cache"] = False
    return run


def _single_task(tasks: list[str], source: Path) -> str:
    if len(tasks) != 1:
        raise ArgError(f"{source} lists {len(tasks)} tasks; choose the study's with --task")
    return tasks[0]


def _with_model_args(choices: list[ModelChoice], values: list[str]) -> list[ModelChoice]:
    """The run file's models with ``NAME:k=v,...`` arguments added to the model called NAME: a key the
    run file sets too takes the command line's value (as options do); a key given twice on the command
    line is an error."""
    out = list(choices)
    names = [c.name for c in out]
    given: dict[int, list[str]] = {}
    for value in values:
        scope, rest = split_scoped(value)
        if scope is None:
            raise ArgError(f"--model-args {value!r}: name the model it is for, as NAME:k=v,...")
        if scope not in names:
            raise ArgError(unknown_message("model of the run file", scope, names))
        if names.count(scope) > 1:
            raise ArgError(f"--model-args {value!r}: the run file lists {scope!r} more than once")
        given.setdefault(names.index(scope), []).append(rest)
    for i, parts in given.items():
        try:
            command_line = parse_kv(",".join(parts))
        except ArgError as exc:
            raise ArgError(f"--model-args of model {names[i]!r}: {exc}") from None
        out[i] = ModelChoice(names[i], {**args_of(out[i]), **command_line}, out[i].label)
    return out


def args_of(choice: ModelChoice) -> dict[str, Any]:
    """A choice's arguments as a mapping: a run file's as they are, a command line's parsed."""
    return dict(choice.args) if isinstance(choice.args, Mapping) else parse_kv(choice.args)


def _plan_sweep(options: StudyOptions, task: Task, out: Path, run: dict[str, Any], plugins: Any) -> Any:
    from vlmbench_plugins.models.blip.finetune.sweep import check_configurations, load_sweep, parse_settings

    # A task given as a file is trained on from that file: its name alone would not be found.
    source = task.spec.source_path
    spec = load_sweep(None, task=task.name if task.name in plugins.tasks or not source else str(source),
                      model=options.lora_base)  # fmt: skip
    protocol = run.get("protocol")
    if protocol is not None:  # the protocol's training settings, under the user's --lora-set
        spec.defaults.update(protocol.finetune)
    spec.defaults.update(parse_settings(options.lora_settings, "--lora-set"))
    for key in ("batch_size", "limit", "device", "dtype", "num_workers", "metrics", "protocol", "metric_args",
                "seed"):  # fmt: skip
        if run.get(key) is not None:
            spec.evaluate[key] = run[key]
    # every fine-tuning option, the base model and the task's train split checked now, before the table
    check_configurations([spec.config_for(config, out / LORA) for config in spec.configurations()], plugins)
    return spec


def run_study(plan: StudyPlan, plugins: Any, log: Callable[[str], None] | None = None) -> StudyResult:
    """Run every step of ``plan`` and write the report."""
    from vlmbench_plugins.study.report import write_report

    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    result = StudyResult(plan.output_dir, skipped=list(plan.skipped))
    for label, reason in plan.skipped:
        log(f"study: {label}: skipped: {reason}")
    for _, model in plan.models:
        log(f"study: {model.label} on {plan.task.name}")
        done = run_plan(model)
        if done.status == "skipped":
            log(f"study: {model.label}: skipped: {done.results.get('reason')}")
        result.models.append((leaderboard_row(done.results, done.run_dir), done.run_dir))
    cache = plan.options.run.get("cache")
    if plan.sweep is not None:
        from vlmbench_plugins.models.blip.finetune.sweep import run_sweep

        try:
            result.sweep = run_sweep(
                plan.sweep, plan.output_dir / LORA, cache=cache, plugins=plugins, log=log
            )
        except AssetMissingError as exc:  # no base weights here: reported like a skipped model
            result.sweep_skipped = str(exc)
            log(f"study: LoRA configurations skipped: {exc}")
    if plan.options.quantization:
        from vlmbench_plugins.study.quantization import quantize

        result.quantization = quantize(plan, result, plugins, log)
    if any(row.status == "ok" for row, _ in result.models):
        result.figures = render_figures(
            plan.output_dir / MODELS, plan.output_dir / FIGURES, task=plan.task.name
        )
    result.report = write_report(plan, result)
    return result
