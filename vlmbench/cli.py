"""The ``vlmbench`` command line: a thin layer over the library API."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from vlmbench.errors import Interrupted, VlmbenchError
from vlmbench.plugins import load_plugins


class _Group(click.Group):
    """Prints vlmbench errors as one clear line (exit status 2) instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Interrupted as exc:
            click.secho(f"vlmbench: {exc}", fg="yellow", err=True)
            ctx.exit(130)
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
      vlmbench compare RUN_A RUN_B                    # paired deltas, McNemar, flipped samples
      vlmbench plot runs/                             # figures and an HTML report
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
    "--num-workers",
    type=int,
    default=None,
    help="DataLoader workers reading, decoding and preprocessing images [default: one per spare CPU core, at most 4].",
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
        if result.status == "worker":  # a data-parallel rank other than 0: rank 0 reports
            continue
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
    if rows:
        click.echo(leaderboard.to_markdown(rows))


@cli.command("list")
@click.argument(
    "what", type=click.Choice(["models", "metrics", "tasks", "generators", "plugins", "all"]), default="all"
)
def list_(what):
    """List installed models, metrics, tasks, QA generators and plugins (without importing model code)."""
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
        width = max((len(e.name) for e in plugins.tasks), default=0)
        for e in plugins.tasks:
            click.echo(f"  {e.name:<{width}}  v{e.version}  {e.summary}")
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
        m = _SCOPED_ARGS.match(value)
        if m and "=" not in m.group(1):
            out.setdefault(m.group(1), []).append(m.group(2))
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


def _add_finetune_commands() -> None:
    # `vlmbench finetune` and `vlmbench sweep`; the module imports only click at load time.
    from vlmbench.finetune.commands import add_commands

    add_commands(cli)


_add_finetune_commands()


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
    plugins = load_plugins()
    plugins.call_each("register_commands", cli=cli)
    if len(sys.argv) < 2 or sys.argv[1] != "list":  # `list` reports broken plugins itself
        _warn_broken(plugins)
    cli(prog_name="vlmbench")
