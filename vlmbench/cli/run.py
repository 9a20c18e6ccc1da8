"""``vlmbench run``: models (each with its own arguments) on tasks, then the leaderboard of the run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from vlmbench.cli.app import cli
from vlmbench.errors import EXIT_NOTHING_EVALUATED, VlmbenchError
from vlmbench.plugin.loading import load_plugins

# What lm-evaluation-harness and lmms-eval users type, accepted as hidden spellings of our options.
_RUN_ALIASES = {
    "--model_args": "--model-args",
    "--tasks": "--task",
    "--batch_size": "--batch-size",
    "--output_path": "--output-dir",
    "--gen_kwargs": "--gen-kwargs",
}


class _RunCommand(click.Command):
    """Keeps the command-line order of ``--model`` and ``--model-args``, so that each ``--model-args``
    binds to the ``--model`` before it, and accepts the ecosystem's option spellings."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = [_RUN_ALIASES.get(a.split("=", 1)[0], a.split("=", 1)[0]) + a[len(a.split("=", 1)[0]) :]
                if a.startswith("--") else a for a in args]  # fmt: skip
        parser = self.make_parser(ctx)
        try:
            opts, _, order = parser.parse_args(args=list(args))
        except click.UsageError:
            order, opts = [], {}
        values = {"models": iter(opts.get("models") or ()), "model_args": iter(opts.get("model_args") or ())}
        ctx.meta["vlmbench.model_events"] = [
            ("model" if p.name == "models" else "args", next(values[p.name]))
            for p in order
            if p.name in values
        ]
        return super().parse_args(ctx, args)


@cli.command(cls=_RunCommand)
@click.option("--model", "-m", "models", multiple=True, metavar="NAME",
              help="Model plugin to evaluate (see `vlmbench list models`); repeat for several, also the same "
                   "plugin with other arguments.")  # fmt: skip
@click.option("--model-args", "-a", "model_args", multiple=True, metavar="K=V,...",
              help="Arguments of the --model before it (`vlmbench list models NAME` lists them); given before any "
                   "--model they apply to all; NAME:K=V addresses the model NAME when it is given once.")  # fmt: skip
@click.option("--task", "-t", "tasks", multiple=True, metavar="TASK",
              help="Task name (see `vlmbench list tasks`) or task YAML file; repeat, or separate with commas.")  # fmt: skip
@click.option("--config", "config_file", metavar="FILE",
              help="Run file (YAML) listing models with their arguments, tasks and options, or the name of a "
                   "bundled one (see `vlmbench list configs`); options given here override the file's.")  # fmt: skip
@click.option("--limit", metavar="N",
              help="Evaluate only the first N samples, or that fraction of them when N is below 1 (0.1 = 10%). "
                   "Part of the run's identity: its results go to their own folder.")  # fmt: skip
@click.option("--batch-size", "-b", default=None, metavar="N|auto",
              help="Requests per model call [default: 8, or the model's own choice: a server model's is 4 "
                   "times its concurrency]; auto: the largest that fits on a GPU (halved on out-of-memory).")  # fmt: skip
@click.option("--gen-kwargs", metavar="K=V,...",
              help="Generation settings overriding the task's, e.g. max_new_tokens=5,num_beams=3 (part of the "
                   "run's identity).")  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps.")
@click.option("--dtype", default="auto", show_default=True,
              help="auto (bf16 on capable GPUs, fp32 on CPU), float32, bfloat16, float16.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of sampling and of the bootstrap.")
@click.option("--output-dir", "-o", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Where OUTPUT_DIR/TASK/MODEL-FINGERPRINT/ folders are written.")  # fmt: skip
@click.option("--num-workers", type=int, default=None,
              help="DataLoader workers reading, decoding and preprocessing images [default: one per core "
                   "the model leaves free, at most 4; none for a model computing on all CPU cores].")  # fmt: skip
@click.option("--metrics", help="Comma-separated metric names to use instead of the task's.")
@click.option("--metric-args", multiple=True, metavar="METRIC:K=V,...",
              help="Options of one scored metric (repeatable), e.g. wups:weight=0.7 (`vlmbench list metrics NAME`).")  # fmt: skip
@click.option("--protocol", metavar="NAME|FILE",
              help="Ask and score the tasks as a protocol says (`vlmbench list protocols`; e.g. study): its "
                   "filters, metric options, prompts and candidates. Part of the run's identity.")  # fmt: skip
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Prediction cache file [default: ~/.cache/vlmbench/predictions.sqlite].")  # fmt: skip
@click.option("--no-cache", is_flag=True, help="Keep predictions in memory only (nothing is resumable).")
@click.option("--on-bad-sample", type=click.Choice(["skip", "stop"]), default="skip", show_default=True,
              help="Skip and count unreadable images or rows, or stop at the first one.")  # fmt: skip
@click.option("--worker-timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds to wait for a DataLoader worker's batch before reporting the worker as stuck.")  # fmt: skip
@click.option("--fail-on-skip", is_flag=True,
              help=f"Exit with status {EXIT_NOTHING_EVALUATED} when any model or metric was skipped.")  # fmt: skip
@click.option("--replace", is_flag=True,
              help="Replace a stored result of other data or more samples in the same folder (refused otherwise).")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def run(ctx, **options):
    """Evaluate one or more models on one or more tasks.

    Writes OUTPUT_DIR/TASK/MODEL-FINGERPRINT/{predictions.jsonl,results.json}, then prints a
    leaderboard of the models just run. Model outputs are cached: a rerun computes only what is
    missing. A model whose weights cannot be found, or that cannot answer a task, is reported as
    skipped; the others still run.

    \b
    Examples:
      vlmbench run -m MODEL -t TASK                   # names from `vlmbench list`
      vlmbench run -m MODEL -a pretrained=ORG/NAME -m MODEL -a pretrained=runs/ft/best -t TASK
      vlmbench run --model MODEL --model_args load_in_8bit=true --tasks TASK1,TASK2 --limit 0.1
      vlmbench run --config CONFIG --device cuda --batch-size auto   # `vlmbench list configs`

    \b
    Exit status: 0 at least one model evaluated; 2 a usage or input error (nothing was run);
    4 nothing was evaluated (every model skipped), or --fail-on-skip and something was skipped;
    130 / 143 stopped by Ctrl-C / SIGTERM after storing the answers so far (run again to resume).
    """
    from vlmbench.evaluation.run_spec import (
        bind_model_args,
        find_protocol,
        find_run_file,
        load_run_file,
        parse_batch_size,
        parse_gen_kwargs,
        split_tasks,
    )
    from vlmbench.scoring.rescore import parse_metric_args

    plugins = load_plugins()
    choices = bind_model_args(ctx.meta.get("vlmbench.model_events", []))
    tasks = split_tasks(options["tasks"])
    if options["config_file"]:
        run_file = load_run_file(find_run_file(options["config_file"], plugins))
        choices = run_file.model_choices() + choices
        tasks = split_tasks(run_file.tasks) + [t for t in tasks if t not in run_file.tasks]
        _apply_file_options(ctx, options, run_file.options)
    if not choices:
        raise VlmbenchError(
            "no model to run: give --model NAME (see `vlmbench list models`) or --config FILE"
        )
    if not tasks:
        raise VlmbenchError("no task to run: give --task NAME (see `vlmbench list tasks`) or --config FILE")
    config = dict(
        limit=options["limit"],
        batch_size=None if options["batch_size"] is None else parse_batch_size(options["batch_size"]),
        device=options["device"],
        dtype=options["dtype"],
        seed=options["seed"],
        output_dir=options["output_dir"],
        num_workers=options["num_workers"],
        metrics=[m.strip() for m in options["metrics"].split(",") if m.strip()]
        if options["metrics"]
        else None,
        cache=False if options["no_cache"] else options["cache"],
        on_bad_sample=options["on_bad_sample"],
        worker_timeout=options["worker_timeout"],
        gen_kwargs=parse_gen_kwargs(options["gen_kwargs"]),
        replace=options["replace"],
        progress=not options["quiet"],
        metric_args=parse_metric_args(options["metric_args"]),
        protocol=find_protocol(options["protocol"], plugins) if options["protocol"] else None,
    )
    outcome = _run_all(plugins, choices, tasks, config)
    if not outcome.reporting:
        return
    if outcome.evaluated == 0:
        click.secho("nothing was evaluated: every model was skipped", fg="red", err=True)
        ctx.exit(EXIT_NOTHING_EVALUATED)
    if options["fail_on_skip"] and outcome.skipped:
        click.secho(f"--fail-on-skip: {', '.join(outcome.skipped)} skipped", fg="red", err=True)
        ctx.exit(EXIT_NOTHING_EVALUATED)


def _apply_file_options(ctx: click.Context, options: dict, file_options) -> None:
    """A run file's options apply where the command line did not give the option itself."""
    from click.core import ParameterSource

    for name, value in vars(file_options).items():
        if value is None or name not in options:
            continue
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
            continue
        if name == "metrics":
            value = ",".join(value)
        elif name in ("output_dir", "cache"):
            value = Path(value)
        options[name] = value


@dataclasses.dataclass
class _RunOutcome:
    evaluated: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)
    reporting: bool = True  # false on data-parallel ranks other than 0, whose results rank 0 reports


def _run_all(plugins, choices, tasks, config) -> _RunOutcome:
    """Plan every (task, model) first — so that a mistake in any of them stops the run before any model
    work — then run them in order and print one leaderboard per task."""
    from vlmbench.analysis import leaderboard
    from vlmbench.errors import UnsupportedTask
    from vlmbench.evaluation.runner import RunConfig, plan_run, run_plan
    from vlmbench.plugin.loading import resolve_task

    outcome = _RunOutcome()
    plans = []
    for task_name in tasks:
        task = resolve_task(task_name, plugins)
        for choice in choices:
            cfg = RunConfig(**config, label=choice.label)
            try:
                plans.append(plan_run(choice.name, task, cfg, model_args=choice.args, plugins=plugins))
            except UnsupportedTask as exc:
                click.secho(f"{choice.name} on {task.name}: skipped: {exc}", fg="yellow", err=True)
                outcome.skipped.append(f"{choice.name} on {task.name}")
    _check_distinct(plans)
    rows: dict[str, list] = {}
    for plan in plans:
        result = run_plan(plan)
        if result.status == "worker":  # a data-parallel rank other than 0: rank 0 reports
            outcome.reporting = False
            continue
        if result.status == "skipped" and result.failed:
            click.secho(
                f"Error: {plan.label} on {plan.task.name}: {result.results['reason']}", fg="red", err=True
            )
            outcome.skipped.append(f"{plan.label} on {plan.task.name}")
        elif result.status == "skipped":
            click.secho(f"{plan.label}: skipped: {result.results['reason']}", fg="yellow", err=True)
            outcome.skipped.append(f"{plan.label} on {plan.task.name}")
        else:
            if result.results["task"]["n_scored"]:
                outcome.evaluated += 1
            else:
                outcome.skipped.append(f"every sample of {plan.label} on {plan.task.name}")
            outcome.skipped += [
                f"metric {m} of {plan.label}" for m in result.results.get("skipped_metrics", {})
            ]
            summary = ", ".join(
                f"{k} {v['value']:.4f}"
                for k, v in result.results["metrics"].items()
                if v.get("value") is not None
            )
            click.echo(
                f"{plan.label}: {summary} ({result.computed} computed, {result.cached} cached) -> {result.run_dir}",
                err=True,
            )
        rows.setdefault(plan.task.name, []).append(
            leaderboard.row_from_results(result.results, result.run_dir)
        )
    for task_rows in rows.values():
        click.echo(leaderboard.to_markdown(task_rows))
    return outcome


def _check_distinct(plans) -> None:
    """Two instances that would compute the same answers are a mistake; two that show the same label
    in one table are told apart by their fingerprints."""
    seen: dict[tuple, str] = {}
    labels: dict[tuple, list] = {}
    for plan in plans:
        key = (plan.task.name, plan.key, plan.run_dir)
        if key in seen:
            raise VlmbenchError(
                f"model {plan.model.name!r} is given twice with the same arguments ({plan.model.label()}) "
                f"on task {plan.task.name!r}"
            )
        seen[key] = plan.label
        labels.setdefault((plan.task.name, plan.label), []).append(plan)
    for same in labels.values():
        if len(same) > 1:
            for plan in same:
                plan.label = f"{plan.label}#{plan.key.model_fp[:6]}"
