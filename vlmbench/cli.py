"""The ``vlmbench`` command line: a thin layer over the library API."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from vlmbench.errors import VlmbenchError
from vlmbench.plugins import load_plugins


class _Group(click.Group):
    """Prints vlmbench errors as one clear line (exit status 2) instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VlmbenchError as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vlmbench")
def cli() -> None:
    """Benchmark vision-language models on single-word visual question answering.

    \b
    Quick start:
      vlmbench list                                   # installed models, metrics, tasks
      vlmbench run --model prior --task abo_sample    # evaluate, write predictions + results
      vlmbench leaderboard runs/                      # compare every run under runs/
    """


_SCOPED_ARGS = re.compile(r"^([A-Za-z0-9_.\-]+):(?!//)(.*)$")


def _split_model_args(models: tuple[str, ...], values: tuple[str, ...]) -> dict[str, str]:
    """``--model-args`` values, each ``k=v,...`` (for every model) or ``MODEL:k=v,...`` (for one)."""
    per_model = {m: [] for m in models}
    for value in values:
        m = _SCOPED_ARGS.match(value)
        if m and "=" not in m.group(1):
            if m.group(1) not in per_model:
                raise VlmbenchError(
                    f"--model-args {value!r} names model {m.group(1)!r}, which is not among --model"
                )
            per_model[m.group(1)].append(m.group(2))
        else:
            for parts in per_model.values():
                parts.append(value)
    return {name: ",".join(p for p in parts if p) for name, parts in per_model.items()}


@cli.command()
@click.option(
    "--model", "-m", "models", multiple=True, required=True, help="Model plugin name (repeat for several)."
)
@click.option(
    "--task", "-t", required=True, help="Task name (see `vlmbench list tasks`) or path to a task YAML file."
)
@click.option(
    "--model-args",
    "-a",
    multiple=True,
    help="k=v,... validated by the model's schema; prefix with MODEL: to address one of several models.",
)
@click.option("--limit", type=int, default=None, help="Evaluate only the first N samples.")
@click.option("--batch-size", "-b", type=int, default=8, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option(
    "--dtype",
    default="auto",
    show_default=True,
    help="auto (bf16 on capable GPUs, fp32 on CPU), float32, bfloat16, float16.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output-dir", "-o", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option(
    "--num-workers", type=int, default=2, show_default=True, help="DataLoader workers decoding images."
)
@click.option("--metrics", help="Comma-separated metric names to use instead of the task's.")
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Prediction cache file [default: ~/.cache/vlmbench/predictions.sqlite].",
)
@click.option("--no-cache", is_flag=True, help="Keep predictions in memory only (nothing is resumable).")
@click.option("--on-bad-sample", type=click.Choice(["skip", "stop"]), default="skip", show_default=True,
              help="Skip and count unreadable images or rows, or stop at the first one.")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def run(
    models,
    task,
    model_args,
    limit,
    batch_size,
    device,
    dtype,
    seed,
    output_dir,
    num_workers,
    metrics,
    cache,
    no_cache,
    on_bad_sample,
    quiet,
):
    """Evaluate one or more models on a task.

    Writes OUTPUT_DIR/TASK/MODEL-FINGERPRINT/{predictions.jsonl,results.json}, then prints a
    leaderboard of the models just run. Model outputs are cached: a rerun computes only what is
    missing. A model whose weights cannot be found is reported as skipped; the others still run.
    """
    from vlmbench import leaderboard
    from vlmbench.artifacts import load_results
    from vlmbench.runner import evaluate
    from vlmbench.task import resolve_task

    plugins = load_plugins()
    for name in models:
        plugins.models.get(name)  # unknown names fail before any work starts
    args = _split_model_args(models, model_args)
    task_obj = resolve_task(task, plugins)
    rows = []
    for name in models:
        result = evaluate(
            name,
            task_obj,
            model_args=args[name],
            plugins=plugins,
            limit=limit,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            seed=seed,
            output_dir=output_dir,
            num_workers=num_workers,
            metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
            cache=False if no_cache else cache,
            on_bad_sample=on_bad_sample,
            progress=not quiet,
        )
        if result.status == "skipped":
            click.secho(f"{name}: skipped: {result.results['reason']}", fg="yellow", err=True)
        else:
            summary = ", ".join(
                f"{k} {v['value']:.4f}"
                for k, v in result.results["metrics"].items()
                if v.get("value") is not None
            )
            click.echo(
                f"{name}: {summary} ({result.computed} computed, {result.cached} cached) -> {result.run_dir}",
                err=True,
            )
        rows.append(
            leaderboard._row(load_results(result.run_dir / "results.json"), result.run_dir / "results.json")
        )
    click.echo(leaderboard.to_markdown(rows))


@cli.command("list")
@click.argument("what", type=click.Choice(["models", "metrics", "tasks", "plugins", "all"]), default="all")
def list_(what):
    """List installed models, metrics, tasks and plugins (without importing any model code)."""
    plugins = load_plugins()
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
        for e in plugins.tasks:
            click.echo(f"  {e.name:<18} v{e.version}  {e.summary}")
    if what in ("plugins", "all"):
        click.secho("Plugins", bold=True)
        for p in plugins.plugins:
            state = click.style("BROKEN", fg="red") if p.error else "ok"
            click.echo(f"  {p.distribution} {p.version} ({p.name} = {p.module}): {state}")
            if p.error:
                click.echo(f"    {p.error.splitlines()[0]}")
    _warn_broken(plugins)


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

    rows = leaderboard.collect(runs_dir, task=task)
    if not rows:
        raise VlmbenchError(f"no runs of task {task!r} under {runs_dir}")
    text = leaderboard.to_markdown(rows, sort_by) if fmt == "markdown" else leaderboard.to_csv(rows, sort_by)
    click.echo(text, nl=False)
    if write and runs_dir.is_dir():
        md, cs = leaderboard.write(rows, runs_dir, sort_by)
        click.echo(f"wrote {md} and {cs}", err=True)


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
):
    """Score stored or external predictions without running a model.

    SOURCE is a run folder (or its predictions.jsonl) to score again with any metrics, or an external
    CSV/JSONL file with a prediction and a reference per row. Writes predictions.jsonl and results.json
    like a run and prints the leaderboard row. A metric whose assets are missing is reported as skipped.

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
    )
    for metric, reason in result.results.get("skipped_metrics", {}).items():
        click.secho(f"{metric}: skipped: {reason}", fg="yellow", err=True)
    if result.skipped_samples:
        detail = ", ".join(f"{k} {v}" for k, v in sorted(result.skipped_samples.items()))
        click.secho(f"rows skipped: {detail}", fg="yellow", err=True)
    click.echo(f"wrote {result.run_dir}", err=True)
    path = result.run_dir / "results.json"
    click.echo(leaderboard.to_markdown([leaderboard._row(result.results, path)]), nl=False)


def _warn_broken(plugins) -> None:
    for p in plugins.problems:
        click.secho(
            f"warning: plugin {p.distribution} ({p.name}) is broken: {p.error.splitlines()[0]}",
            fg="yellow",
            err=True,
        )


def main() -> None:
    plugins = load_plugins()
    plugins.call_each("register_commands", cli=cli)
    if len(sys.argv) < 2 or sys.argv[1] != "list":  # `list` reports broken plugins itself
        _warn_broken(plugins)
    cli(prog_name="vlmbench")
