"""The ``vlmbench`` command line: a thin layer over the library API."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from vlmbench.args import split_scoped
from vlmbench.errors import Interrupted, VlmbenchError
from vlmbench.plugins import load_plugins


class _Group(click.Group):
    """Prints vlmbench errors as one clear line (exit status 2) instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Interrupted as exc:
            click.secho(f"vlmbench: {exc}", fg="yellow", err=True)
            ctx.exit(exc.exit_code)
        except VlmbenchError as exc:
            click.secho(f"Error: {_one_line(str(exc))}", fg="red", err=True)
            ctx.exit(2)
        except OSError as exc:
            # A file or folder that cannot be read or written (full disk, permissions, a folder where a
            # file is expected): the user's to fix, so no traceback.
            where = f" {exc.filename}" if exc.filename else ""
            click.secho(f"Error: cannot access{where}: {exc.strerror or exc}", fg="red", err=True)
            ctx.exit(2)


def _one_line(text: str) -> str:
    return " ".join(text.split("\n")) if "\n" in text else text


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vlmbench")
def cli() -> None:
    """Benchmark vision-language models on single-word visual question answering.

    \b
    Quick start:
      vlmbench list                                   # installed models, metrics, tasks
      vlmbench run --model prior --task abo_sample    # evaluate, write predictions + results
      vlmbench leaderboard runs/                      # compare every run under runs/
      vlmbench compare RUN_A RUN_B                    # paired deltas, McNemar, flipped samples
      vlmbench plot runs/                             # figures and an HTML report
    """


# What lm-evaluation-harness and lmms-eval users type, accepted as hidden spellings of our options.
_RUN_ALIASES = {
    "--model_args": "--model-args",
    "--tasks": "--task",
    "--batch_size": "--batch-size",
    "--output_path": "--output-dir",
    "--gen_kwargs": "--gen-kwargs",
}

EXIT_NOTHING_EVALUATED = 4


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
@click.option("--batch-size", "-b", default="8", show_default=True, metavar="N|auto",
              help="Requests per model call; auto: the largest that fits on a GPU (halved on out-of-memory).")  # fmt: skip
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
              help="DataLoader workers reading, decoding and preprocessing images "
                   "[default: one per spare CPU core, at most 4].")  # fmt: skip
@click.option("--metrics", help="Comma-separated metric names to use instead of the task's.")
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
      vlmbench run -m prior -t abo_sample
      vlmbench run -m blip -a pretrained=Salesforce/blip-vqa-base -m blip -a pretrained=runs/ft/best -t abo_sample
      vlmbench run --model blip2 --model_args load_in_8bit=true --tasks abo_sample --limit 0.1
      vlmbench run --config study --device cuda --batch-size auto

    \b
    Exit status: 0 at least one model evaluated; 2 a usage or input error (nothing was run);
    4 nothing was evaluated (every model skipped), or --fail-on-skip and something was skipped;
    130 / 143 stopped by Ctrl-C / SIGTERM after storing the answers so far (run again to resume).
    """
    from vlmbench.runconfig import bind_model_args, load_run_file, parse_gen_kwargs, split_tasks

    plugins = load_plugins()
    choices = bind_model_args(ctx.meta.get("vlmbench.model_events", []))
    tasks = split_tasks(options["tasks"])
    if options["config_file"]:
        run_file = load_run_file(_run_file_path(options["config_file"], plugins))
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
        batch_size=_batch_size(options["batch_size"]),
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


def _batch_size(value: str | int) -> int | str:
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise VlmbenchError(f"--batch-size must be a positive number or 'auto', got {value!r}")
    return int(text)


def _run_file_path(value: str, plugins) -> Path:
    path = Path(value).expanduser()
    if path.is_file() or value.endswith((".yaml", ".yml")):
        return path
    return plugins.run_configs.get(value).path


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
        elif name == "gen_kwargs":
            value = ",".join(f"{k}={v}" for k, v in value.items())
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
    from vlmbench import leaderboard
    from vlmbench.errors import UnsupportedTask
    from vlmbench.runner import RunConfig, plan_run, run_plan
    from vlmbench.task import resolve_task

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
        if result.status == "skipped":
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


@cli.command("list")
@click.argument(
    "what",
    type=click.Choice(["models", "metrics", "tasks", "configs", "generators", "plugins", "all"]),
    default="all",
)
@click.argument("name", required=False)
def list_(what, name):
    """List installed models, metrics, tasks, run configurations, QA generators and plugins.

    With a NAME (`vlmbench list models blip`), show that model's, metric's or generator's
    arguments: type, bounds or choices, default and what each does (this imports its code).
    """
    plugins = load_plugins()
    if name is not None:
        _describe_one(plugins, what, name)
        return
    if what in ("models", "all"):
        click.secho("Models", bold=True)
        for e in plugins.models:
            click.echo(f"  {e.name:<14} {e.summary}")
            details = [f"requests: {', '.join(e.request_types)}"]
            if e.default_checkpoint:
                details.insert(0, f"default checkpoint: {e.default_checkpoint}")
            if e.parameters:
                details.append(f"parameters: {e.parameters}")
            details.append(f"from {e.plugin}")
            click.echo(f"  {'':<14} {'; '.join(details)}")
    if what in ("metrics", "all"):
        click.secho("Metrics", bold=True)
        for e in plugins.metrics:
            extra = f"{e.level}-level, {'higher' if e.higher_is_better else 'lower'} is better"
            if e.outputs != (e.name,):
                extra += f", outputs: {', '.join(e.outputs)}"
            if e.assets:
                extra += f", needs: {', '.join(e.assets)}"
            click.echo(f"  {e.name:<14} {e.summary}\n  {'':<14} {extra}; from {e.plugin}")
    if what in ("tasks", "all"):
        click.secho("Tasks", bold=True)
        width = max((len(e.name) for e in plugins.tasks), default=0)
        for e in plugins.tasks:
            click.echo(f"  {e.name:<{width}}  v{e.version}  {e.summary}")
    if what in ("configs", "all"):
        click.secho("Run configurations (vlmbench run --config NAME)", bold=True)
        for e in plugins.run_configs:
            click.echo(f"  {e.name:<14} {e.summary}")
    if what in ("generators", "all"):
        click.secho("QA generators (vlmbench data prepare --generator NAME)", bold=True)
        for e in plugins.generators:
            network = " (needs network)" if e.needs_network else ""
            click.echo(f"  {e.name:<14} {e.summary}{network}")
    if what in ("plugins", "all"):
        click.secho("Plugins", bold=True)
        for p in plugins.plugins:
            state = click.style("BROKEN", fg="red") if p.error else "ok"
            click.echo(f"  {p.distribution} {p.version} ({p.name} = {p.module}): {state}")
            if p.error:
                click.echo(f"    {p.error.splitlines()[0]}")
    _warn_broken(plugins)


def _describe_one(plugins, what: str, name: str) -> None:
    registries = {"models": plugins.models, "metrics": plugins.metrics, "generators": plugins.generators}
    if what not in registries:
        raise VlmbenchError(
            f"`vlmbench list {what} NAME` is not available; give models, metrics or generators"
        )
    registry = registries[what]
    entry = registry.get(name)
    cls = registry.load(name)
    click.secho(f"{entry.name}: {entry.summary}", bold=True)
    if getattr(entry, "default_checkpoint", None):
        click.echo(f"default checkpoint: {entry.default_checkpoint}")
    args = getattr(cls, "args", {})
    if not args:
        click.echo("takes no arguments")
        return
    click.echo("arguments (--model-args K=V,...):" if what == "models" else "options:")
    width = max(len(k) for k in args)
    for key, arg in args.items():
        click.echo(f"  {key:<{width}}  {arg.describe()}")
        if arg.help:
            click.echo(f"  {'':<{width}}  {arg.help}")


@cli.command("leaderboard")
@click.argument("runs_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--sort-by", help="Metric to sort by [default: exact_match].")
@click.option("--task", help="Only runs of this task.")
@click.option(
    "--format", "fmt", type=click.Choice(["markdown", "csv"]), default="markdown", show_default=True
)
@click.option(
    "--write/--no-write",
    default=True,
    show_default=True,
    help="Also write leaderboard.md and leaderboard.csv into RUNS_DIR.",
)
def leaderboard_(runs_dir, sort_by, task, fmt, write):
    """Tabulate every results.json under RUNS_DIR: model, parameters, every metric with its CI."""
    from vlmbench import leaderboard

    unreadable: list = []
    try:
        rows = leaderboard.collect(runs_dir, task=task, unreadable=unreadable)
    finally:
        _warn_unreadable(unreadable)
    if not rows:
        raise VlmbenchError(f"no runs of task {task!r} under {runs_dir}")
    text = leaderboard.to_markdown(rows, sort_by) if fmt == "markdown" else leaderboard.to_csv(rows, sort_by)
    click.echo(text, nl=False)
    if write and runs_dir.is_dir():
        md, cs = leaderboard.write(rows, runs_dir, sort_by)
        click.echo(f"wrote {md} and {cs}", err=True)


@cli.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--metric", "metrics", multiple=True,
              help="Compare only this metric (repeatable) [default: every metric both runs have].")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["markdown", "html", "json"]), default="markdown",
              show_default=True)  # fmt: skip
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report to this file instead of stdout.")  # fmt: skip
@click.option("--top", type=int, default=20, show_default=True,
              help="Flipped samples listed per direction (0 = all).")  # fmt: skip
@click.option("--bootstrap-samples", type=int, default=1000, show_default=True,
              help="Paired bootstrap resamples for the 95% intervals (0 = no intervals).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--allow-task-mismatch", is_flag=True,
              help="Compare runs of different task names, versions or hashes (the report says so).")  # fmt: skip
@click.option("--fail-on-regression", "gates", multiple=True, metavar="METRIC:TOL",
              help="Exit with status 3 when METRIC got worse than the baseline by more than TOL "
                   "(absolute; direction from the metric). Repeatable.")  # fmt: skip
def compare_(runs, metrics, fmt, output, top, bootstrap_samples, seed, allow_task_mismatch, gates):
    """Paired comparison of runs against a baseline, on the samples both answered.

    RUNS are run folders (or their results.json); the first is the baseline and every other run is
    compared with it. Per metric: run - baseline with a paired bootstrap 95% interval; for Exact
    Match, McNemar's exact test and the samples that flipped (right->wrong, wrong->right) with their
    questions; the same per difficulty level. Runs of different tasks (name, version or hash) are
    refused unless --allow-task-mismatch is given.

    \b
    Exit status: 0 fine, 2 usage or input error, 3 a --fail-on-regression gate failed.
    \b
    Example (CI gate: fail when Exact Match drops by more than one point):
      vlmbench compare runs/abo_sample/blip-1a2b3c4d runs/abo_sample/blip-5e6f7a8b \\
          --fail-on-regression exact_match:0.01
    """
    from vlmbench import compare

    if top < 0:
        raise VlmbenchError("--top must be 0 or more")
    parsed = [compare.parse_gate(g) for g in gates]  # bad gates fail before any work
    report = compare.compare_runs(
        runs,
        metrics=list(metrics) or None,
        bootstrap_samples=bootstrap_samples,
        seed=seed,
        allow_task_mismatch=allow_task_mismatch,
    )
    failures = compare.regressions(report, parsed)
    text = compare.RENDERERS[fmt](report, top=top or None)
    if output:
        from vlmbench.artifacts import write_text

        write_text(output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)
    for comp in report["comparisons"]:
        if comp["task_mismatch"]:
            click.secho(
                f"warning: {comp['run']['label']} compared across different tasks "
                f"({'; '.join(comp['task_mismatch'])})",
                fg="yellow",
                err=True,
            )
    if failures:
        for message in failures:
            click.secho(message, fg="red", err=True)
        click.get_current_context().exit(3)


@cli.command("plot")
@click.argument("runs_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Where figures and report.html go [default: RUNS_DIR/plots].")  # fmt: skip
@click.option("--task", help="Task whose runs to plot (needed when RUNS_DIR holds several).")
@click.option("--metric", default="exact_match", show_default=True,
              help="Metric of the per-difficulty bar chart.")  # fmt: skip
@click.option("--metrics", "vs_metrics",
              help="Comma-separated metrics for the metric-vs-parameters figures "
                   "[default: core and semantic-similarity metrics present].")  # fmt: skip
@click.option("--top", type=int, default=10, show_default=True, help="Confusions shown per run.")
def plot_(runs_dir, output_dir, task, metric, vs_metrics, top):
    """Draw the study's figures from the runs under RUNS_DIR, as PNG and SVG, plus report.html.

    \b
    Figures:
      metrics_vs_parameters   core metrics (Exact Match, Average Mark, WUPS) against parameter count
      semantic_vs_parameters  SBERT, BERTScore, BARTScore, METEOR against parameter count (if present)
      difficulty_METRIC       per-difficulty scores with 95% CIs, one bar per run
      confusions              most frequent (reference -> wrong answer) pairs per run
    report.html embeds every figure together with the leaderboard.
    """
    from vlmbench import plots

    names = [m.strip() for m in vs_metrics.split(",") if m.strip()] if vs_metrics else None
    unreadable: list = []
    try:
        report = plots.render(
            runs_dir, output_dir, task=task, metric=metric, metrics=names, top=top, unreadable=unreadable
        )
    finally:
        _warn_unreadable(unreadable)
    for fig in report.figures:
        click.echo(f"{fig.png} and {fig.svg.name}")
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"report: {report.report}")


@cli.group("check-parity")
def check_parity() -> None:
    """Check a from-scratch model implementation against reference outputs of the official code.

    Each subcommand loads a parity fixture (config, weights, inputs, official outputs), runs the
    vlmbench implementation and reports the largest absolute difference per output.
    """


@cli.group("data")
def data() -> None:
    """Download datasets and prepare benchmark data.

    \b
    The ABO single-word QA pipeline, end to end:
      vlmbench data download abo                                  # listings + 256-px images (~3 GB)
      vlmbench data prepare abo_single_word --generator attributes # offline, from the metadata
      vlmbench data prepare abo_single_word --generator gemini     # the study's approach (API key)
      vlmbench run --model prior --task abo_single_word

    Both commands are idempotent: re-running one that finished does nothing. See docs/data.md.
    """


def _data_dir(value: Path | None) -> Path:
    from vlmbench.abo.prepare import default_data_dir

    return value.expanduser() if value else default_data_dir()


@data.command("download")
@click.argument("dataset", type=click.Choice(["abo"]))
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to unpack into [default: DATA_DIR/abo, DATA_DIR being $VLMBENCH_DATA_DIR or ~/.cache/vlmbench/data].",
)
@click.option("--variant", type=click.Choice(["small"]), default="small", show_default=True,
              help="small: listings, images/metadata/images.csv.gz and images/small (256 px).")  # fmt: skip
@click.option(
    "--base-url", default=None, help="Where the archives are served [default: the public ABO bucket]."
)
@click.option("--sha256", "checksums", multiple=True, metavar="ARCHIVE=HEX",
              help="Also require this SHA-256 for an archive (repeatable).")  # fmt: skip
@click.option("--keep-archives", is_flag=True, help="Keep the .tar files after unpacking them.")
@click.option("--force", is_flag=True, help="Download and unpack again even if already done.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def data_download(dataset, dest, variant, base_url, checksums, keep_archives, force, quiet):
    """Fetch a public dataset and unpack it.

    \b
    abo: the Amazon Berkeley Objects listings and small images (CC BY 4.0, Amazon.com), laid out as
      DEST/listings/metadata/listings_*.json.gz
      DEST/images/metadata/images.csv.gz
      DEST/images/small/<xx>/<name>.jpg
    Transfers resume where they stopped (HTTP ranges), are checked against the published size and
    checksum (S3 ETag MD5), and unpack only regular files inside DEST.
    """
    from vlmbench.abo.download import ABO_BASE_URL, download_abo

    sha = {}
    for item in checksums:
        name, sep, digest = item.partition("=")
        if not sep or not name or not digest:
            raise VlmbenchError(f"--sha256 expects ARCHIVE=HEX, got {item!r}")
        sha[name] = digest
    target = dest.expanduser() if dest else _data_dir(None) / dataset
    result = download_abo(
        target,
        variant=variant,
        base_url=base_url or ABO_BASE_URL,
        sha256=sha,
        keep_archives=keep_archives,
        force=force,
        progress=not quiet,
        log=lambda msg: click.echo(msg, err=True),
    )
    click.echo(str(result.dest))


@data.command("prepare")
@click.argument("name", type=click.Choice(["abo_single_word"]))
@click.option("--generator", "-g", "generators", multiple=True, default=("attributes",), show_default=True,
              help="QA generator (repeat to combine): attributes, gemini, local, or a plugin's.")  # fmt: skip
@click.option("--generator-args", "-a", multiple=True, metavar="[NAME:]k=v,...",
              help="Options of a generator, e.g. gemini:rpm=60,questions=5 (see docs/data.md).")  # fmt: skip
@click.option("--abo-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The downloaded ABO tree [default: DATA_DIR/abo].")  # fmt: skip
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where DATA_DIR/abo_single_word is written [default: $VLMBENCH_DATA_DIR or ~/.cache/vlmbench/data].")  # fmt: skip
@click.option("--language", default="en_IN", show_default=True,
              help="Preferred language tag for descriptions and attributes; other English tags follow.")  # fmt: skip
@click.option("--limit", type=int, default=None, help="Use only the first N listings with an image.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@click.option(
    "--split", "fractions", default="0.8,0.1,0.1", show_default=True, help="train,val,test fractions."
)
@click.option("--yes-no", type=click.Choice(["reject", "allow"]), default="reject", show_default=True,
              help="Whether yes/no answers are accepted.")  # fmt: skip
@click.option("--force", is_flag=True, help="Redo validation, splits and export even if nothing changed.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def data_prepare(name, generators, generator_args, abo_root, data_dir, language, limit, seed, fractions, yes_no,
                 force, quiet):  # fmt: skip
    """Curate single-word QA from ABO listings, validate, split by image and export.

    Writes DATA_DIR/NAME/: qa_all.csv, splits/{train,val,test}.csv (the study's columns),
    hf/ (a Hugging Face dataset with the images, read by the task), report.md and report.json.
    Generation is resumable (finished listings are stored under work/ and skipped), and a
    re-run with the same options and inputs does nothing.
    """
    from vlmbench.abo.curation import ValidationConfig
    from vlmbench.abo.prepare import PrepareOptions, prepare
    from vlmbench.abo.splits import parse_fractions

    if limit is not None and limit < 1:
        raise VlmbenchError("--limit must be at least 1")
    per_generator = _generator_args(generators, generator_args)
    root = _data_dir(data_dir)
    options = PrepareOptions(
        generators=list(generators),
        generator_args=per_generator,
        language=language,
        limit=limit,
        seed=seed,
        fractions=parse_fractions(fractions),
        validation=ValidationConfig(yes_no=yes_no),
        force=force,
        progress=not quiet,
    )
    result = prepare(
        name,
        abo_root.expanduser() if abo_root else root / "abo",
        root,
        options,
        log=lambda msg: click.echo(msg, err=True),
    )
    report = result.report
    mix = ", ".join(f"{d}: {n}" for d, n in report["per_difficulty"].items())
    click.echo(
        f"{report['accepted']} questions, {report['images']} images (difficulty {mix}); "
        f"{report['rejected']['total']} rejected -> {result.out_dir}"
    )
    if not result.complete:
        click.secho(
            "some listings failed to generate; run the command again to retry them", fg="yellow", err=True
        )


def _generator_args(generators: tuple[str, ...], values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for value in values:
        scope, rest = split_scoped(value)
        if scope is not None:
            out.setdefault(scope, []).append(rest)
        elif len(generators) == 1:
            out.setdefault(generators[0], []).append(value)
        else:
            raise VlmbenchError(f"--generator-args {value!r}: with several generators, prefix it with NAME:")
    return {k: ",".join(v) for k, v in out.items()}


@data.command("generators")
def data_generators():
    """List the installed QA generators."""
    plugins = load_plugins()
    for e in plugins.generators:
        net = " (network)" if e.needs_network else ""
        click.echo(f"  {e.name:<12} {e.summary}{net}; from {e.plugin}")


@cli.command("score")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--metrics",
    help="Comma-separated metric names [default: exact_match, average_mark, wups, meteor, sbert, "
    "bertscore, bartscore].",
)
@click.option(
    "--metric-args",
    multiple=True,
    help="METRIC:k=v,... options for one metric (repeatable), e.g. wups:mode=reference.",
)
@click.option("--prediction-column", help="Column holding the predictions [default: guessed].")
@click.option("--reference-column", help="Column holding the reference answer(s) [default: guessed].")
@click.option("--difficulty-column", help="Column holding the difficulty level (integer).")
@click.option("--id-column", help="Column holding a sample id [default: the line number].")
@click.option("--question-column", help="Column holding the question.")
@click.option("--image-column", help="Column naming the image.")
@click.option("--reference-separator", help="Separator of several references in one cell, e.g. '|'.")
@click.option("--name", help="Label of these predictions on the leaderboard [default: the file name].")
@click.option("--task-name", help="Task name on the leaderboard for an external file [default: external].")
@click.option(
    "--filters",
    help="Comma-separated answer filters, or 'none' [default: a run's stored answers; for an external "
    "file strip,remove_answer_prefix,first_word,strip_punctuation].",
)
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(path_type=Path),
    help="Folder for predictions.jsonl and results.json [default: the run's folder; for an external "
    "file runs/TASK-NAME/NAME-SHA8].",
)
@click.option("--bootstrap-samples", type=int, help="Bootstrap resamples for the 95% CIs [default: 1000].")
@click.option("--seed", type=int, help="Bootstrap seed [default: the run's, else 0].")
@click.option("--device", default="auto", show_default=True, help="Device for encoder metrics.")
@click.option("--only", is_flag=True,
              help="Re-scoring a run: keep only the metrics named by --metrics (by default the run's other "
                   "metrics are kept and the named ones added or updated).")  # fmt: skip
def score_(
    source,
    metrics,
    metric_args,
    prediction_column,
    reference_column,
    difficulty_column,
    id_column,
    question_column,
    image_column,
    reference_separator,
    name,
    task_name,
    filters,
    output_dir,
    bootstrap_samples,
    seed,
    device,
    only,
):
    """Score stored or external predictions without running a model.

    SOURCE is a run folder (or its predictions.jsonl) to score again with any metrics, or an external
    CSV/JSONL file with a prediction and a reference per row. Writes predictions.jsonl and results.json
    like a run and prints the leaderboard row. A metric whose assets are missing is reported as skipped.

    Re-scoring a run adds or updates the metrics named with --metrics and keeps its other results
    (--only drops them); a metric that cannot be computed now keeps its stored value.

    \b
    Example:
      vlmbench score preds_blip.csv --prediction-column generated_answer \\
          --reference-column answer --name blip --metrics exact_match,wups,meteor
    """
    from vlmbench import leaderboard
    from vlmbench.rescore import Columns, parse_metric_args, rescore
    from vlmbench.spec import MetricSpec

    plugins = load_plugins()
    options = parse_metric_args(metric_args)
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    if names is None:
        from vlmbench.rescore import DEFAULT_METRICS

        names = list(DEFAULT_METRICS)
    for metric in [*names, *options]:
        plugins.metrics.get(metric)  # unknown names fail before any work
    unused = [m for m in options if m not in names]
    if unused:
        raise VlmbenchError(f"--metric-args names {', '.join(unused)}, which is not among the metrics scored")
    chain = None
    if filters is not None:
        chain = (
            [] if filters.strip().lower() == "none" else [f.strip() for f in filters.split(",") if f.strip()]
        )
    result = rescore(
        source,
        metrics=[MetricSpec(n, options.get(n, {})) for n in names],
        output_dir=output_dir,
        name=name,
        task_name=task_name,
        filters=chain,
        columns=Columns(
            prediction=prediction_column,
            reference=reference_column,
            difficulty=difficulty_column,
            id=id_column,
            question=question_column,
            image=image_column,
        ),
        reference_separator=reference_separator,
        bootstrap_samples=bootstrap_samples,
        seed=seed,
        device=device,
        plugins=plugins,
        keep_others=not only,
    )
    for metric, reason in result.results.get("skipped_metrics", {}).items():
        click.secho(f"{metric}: skipped: {reason}", fg="yellow", err=True)
    if result.skipped_samples:
        detail = ", ".join(f"{k} {v}" for k, v in sorted(result.skipped_samples.items()))
        click.secho(f"rows skipped: {detail}", fg="yellow", err=True)
    click.echo(f"wrote {result.run_dir}", err=True)
    path = result.run_dir / "results.json"
    click.echo(leaderboard.to_markdown([leaderboard.row_from_results(result.results, path.parent)]), nl=False)


def _warn_unreadable(problems) -> None:
    """One line per run artifact an analysis command left out (the others are still analysed)."""
    for problem in problems:
        click.secho(f"warning: skipped {problem}", fg="yellow", err=True)


def _warn_broken(plugins) -> None:
    for p in plugins.problems:
        click.secho(
            f"warning: plugin {p.distribution} ({p.name}) is broken: {p.error.splitlines()[0]}",
            fg="yellow",
            err=True,
        )


def main() -> None:
    from vlmbench.console import tame_library_output

    tame_library_output(quiet=any(a in ("-q", "--quiet") for a in sys.argv[1:]))
    plugins = load_plugins()
    plugins.call_each("register_commands", cli=cli)
    if len(sys.argv) < 2 or sys.argv[1] != "list":  # `list` reports broken plugins itself
        _warn_broken(plugins)
    cli(prog_name="vlmbench")
