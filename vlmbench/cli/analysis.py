"""The commands that read runs: ``leaderboard``, ``compare``, ``plot`` and ``score``."""

from __future__ import annotations

from pathlib import Path

import click

from vlmbench.cli.app import _warn_unreadable, cli
from vlmbench.errors import VlmbenchError
from vlmbench.plugin.loading import load_plugins


@cli.command("leaderboard")
@click.argument("runs_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--sort-by", help="Metric to sort by [default: exact_match].")
@click.option("--task", help="Only runs of this task.")
@click.option(
    "--format", "fmt", type=click.Choice(["markdown", "csv"]), default="markdown", show_default=True
)
@click.option(
    "--columns",
    metavar="SET|NAMES",
    help="Metric columns: 'all' (every metric of the runs), 'study' (the study's columns in its order: "
    "BERTScore P/R/F1, BARTScore, SBERT, METEOR, EM, Average Mark, WUPS@0.0, WUPS@0.9, weighted WUPS) "
    "or metric names separated by commas [default: all].",
)
@click.option("--by-difficulty", is_flag=True,
              help="One row per run and difficulty level: its number of samples and every metric on them "
                   "(written as leaderboard_by_difficulty.md/.csv).")  # fmt: skip
@click.option(
    "--write/--no-write",
    default=True,
    show_default=True,
    help="Also write leaderboard.md and leaderboard.csv into RUNS_DIR.",
)
def leaderboard_(runs_dir, sort_by, task, fmt, columns, by_difficulty, write):
    """Tabulate every results.json under RUNS_DIR: model, parameters, every metric with its CI.

    Notes (skipped models, metrics or samples, limits, how a model answered) are numbered footnotes
    below the Markdown table; the CSV keeps each row's notes in full and their numbers in 'footnotes'.

    \b
    Examples:
      vlmbench leaderboard runs/ --columns study            # the study's model table
      vlmbench leaderboard runs/ --by-difficulty --columns average_mark,exact_match
    """
    from vlmbench.analysis import leaderboard

    unreadable: list = []
    try:
        rows = leaderboard.collect(runs_dir, task=task, unreadable=unreadable)
    finally:
        _warn_unreadable(unreadable)
    if not rows:
        raise VlmbenchError(f"no runs of task {task!r} under {runs_dir}")
    cols = leaderboard.resolve_columns(rows, columns, by_difficulty=by_difficulty)
    leaderboard.sort_rows(rows, sort_by)  # an unknown --sort-by fails before anything is printed
    if by_difficulty:
        render = leaderboard.difficulty_markdown if fmt == "markdown" else leaderboard.difficulty_csv
    else:
        render = leaderboard.to_markdown if fmt == "markdown" else leaderboard.to_csv
    click.echo(render(rows, sort_by, cols), nl=False)
    if write and runs_dir.is_dir():
        md, cs = leaderboard.write(rows, runs_dir, sort_by, columns=cols, by_difficulty=by_difficulty)
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
              help="Paired bootstrap resamples for the 95% intervals, up to 100000 (0 = no intervals).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap (0 to 2**32-1).")
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
      vlmbench compare runs/TASK/MODEL-1a2b3c4d runs/TASK/MODEL-5e6f7a8b \\
          --fail-on-regression exact_match:0.01
    """
    from vlmbench.analysis import compare

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
        from vlmbench.artifacts.run_files import write_text

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
              help="Where figures and report.html go [default: RUNS_DIR/plots; one sub-folder per task "
                   "when RUNS_DIR holds several].")  # fmt: skip
@click.option("--task", help="Only the runs of this task [default: every task, each in its own sub-folder].")
@click.option("--metric", default="exact_match", show_default=True,
              help="Metric of the per-difficulty bar chart.")  # fmt: skip
@click.option("--metrics", "vs_metrics",
              help="Comma-separated metrics for the metric-vs-parameters figures "
                   "[default: core and semantic-similarity metrics present].")  # fmt: skip
@click.option("--top", type=int, default=10, show_default=True, help="Confusions shown per run.")
def plot_(runs_dir, output_dir, task, metric, vs_metrics, top):
    """Draw the study's figures from the runs under RUNS_DIR, as PNG and SVG, plus report.html.

    Every model of a task is drawn in the same figures, whether it generated its answers or ranked
    candidate answers. A folder holding several tasks gives one sub-folder of OUTPUT_DIR per task.

    \b
    Figures:
      metrics_vs_parameters   core metrics (Exact Match, Average Mark, WUPS) against parameter count
      semantic_vs_parameters  BERTScore, BARTScore, SBERT, METEOR against parameter count (if present)
      difficulty_METRIC       per-difficulty scores with 95% CIs, one bar per run
      confusions              most frequent (reference -> wrong answer) pairs per run
    report.html embeds every figure together with the leaderboard, and says when, by which version
    and by which command it and each run were made.
    """
    from vlmbench.analysis import plot

    names = [m.strip() for m in vs_metrics.split(",") if m.strip()] if vs_metrics else None
    unreadable: list = []
    try:
        reports = plot.render_tasks(
            runs_dir, output_dir, task=task, metric=metric, metrics=names, top=top, unreadable=unreadable
        )
    finally:
        _warn_unreadable(unreadable)
    for report in reports:
        prefix = f"{report.task}: " if len(reports) > 1 else ""
        for fig in report.figures:
            click.echo(f"{fig.png} and {fig.svg.name}")
        for note in report.notes:
            click.echo(f"note: {prefix}{note}", err=True)
        if report.report is not None:
            click.echo(f"report: {report.report}")


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
@click.option(
    "--protocol",
    metavar="NAME|FILE",
    help="Score as a protocol says (`vlmbench list protocols`; e.g. study): its metrics with their options "
    "and its filters, where --metrics and --filters are not given; recorded in results.json.",
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
@click.option("--bootstrap-samples", type=int,
              help="Bootstrap resamples for the 95% CIs, 0 (no intervals) to 100000 [default: the run's, else 1000].")  # fmt: skip
@click.option("--seed", type=int, help="Bootstrap seed, 0 to 2**32-1 [default: the run's, else 0].")
@click.option("--device", default="auto", show_default=True, help="Device for encoder metrics.")
@click.option("--only", is_flag=True,
              help="Re-scoring a run: keep only the metrics named by --metrics (by default the run's other "
                   "metrics are kept and the named ones added or updated).")  # fmt: skip
@click.option("--no-cache", is_flag=True,
              help="Neither read nor store metric scores in the score cache (every score is computed).")  # fmt: skip
@click.option("--replace", is_flag=True,
              help="Write into an --output-dir that holds another result (of other data, another run or file, "
                   "or more samples); refused otherwise, as `run` refuses.")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def score_(
    source,
    metrics,
    metric_args,
    protocol,
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
    no_cache,
    replace,
    quiet,
):
    """Score stored or external predictions without running a model.

    SOURCE is a run folder (or its predictions.jsonl) to score again with any metrics, or an external
    CSV/JSONL file with a prediction and a reference per row. Writes predictions.jsonl and results.json
    like a run and prints the leaderboard row. A metric whose assets are missing is reported as skipped.

    Re-scoring a run adds or updates the metrics named with --metrics and keeps its other results
    (--only drops them); a metric that cannot be computed now keeps its stored value. An --output-dir
    holding another result (of other data, another run or file, or more samples) is refused unless
    --replace, as `run` refuses; a run's predictions.jsonl naming a sample twice is refused.

    \b
    Example:
      vlmbench score predictions.csv --prediction-column generated_answer \\
          --reference-column answer --name my-model --metrics exact_match,wups,meteor
    """
    from vlmbench.analysis import leaderboard
    from vlmbench.scoring.rescore import Columns, parse_metric_args, rescore
    from vlmbench.tasks.spec import MetricSpec

    plugins = load_plugins()
    given = parse_metric_args(metric_args)
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    spec = None
    if protocol:
        from vlmbench.evaluation.run_spec import find_protocol

        spec = find_protocol(protocol, plugins)
    own = spec.metric_options() if spec is not None else {}
    if names is None:
        from vlmbench.scoring.rescore import DEFAULT_METRICS

        names = list(own) if spec is not None and spec.metrics is not None else list(DEFAULT_METRICS)
    options = {n: {**own.get(n, {}), **given.get(n, {})} for n in names if n in own or n in given}
    options.update({n: v for n, v in given.items() if n not in options})
    for metric in [*names, *options]:
        plugins.metrics.get(metric)  # unknown names fail before any work
    unused = [m for m in options if m not in names]
    if unused:
        raise VlmbenchError(f"--metric-args names {', '.join(unused)}, which is not among the metrics scored")
    chain = None if spec is None or spec.filters is None else list(spec.filters)
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
        cache=not no_cache,
        progress=not quiet,
        replace=replace,
        protocol=spec,
    )
    for metric, reason in result.results.get("skipped_metrics", {}).items():
        click.secho(f"{metric}: skipped: {reason}", fg="yellow", err=True)
    if result.skipped_samples:
        detail = ", ".join(f"{k} {v}" for k, v in sorted(result.skipped_samples.items()))
        click.secho(f"rows skipped: {detail}", fg="yellow", err=True)
    click.echo(f"wrote {result.run_dir}", err=True)
    path = result.run_dir / "results.json"
    click.echo(leaderboard.to_markdown([leaderboard.row_from_results(result.results, path.parent)]), nl=False)
