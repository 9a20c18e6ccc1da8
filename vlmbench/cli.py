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
