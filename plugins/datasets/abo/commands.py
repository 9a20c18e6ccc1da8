"""``vlmbench data download abo`` and ``vlmbench data prepare abo_single_word``.

The dataset plugin adds them to the core's ``data download`` and ``data prepare`` groups through the
``register_commands`` hook. Importing this module is cheap (click only): the pipeline's modules load
when a command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from vlmbench.api import VlmbenchError, split_scoped

#: Exit status of ``data prepare`` when some listings still failed after the generator's retries (the
#: outputs are written from the others); ``--allow-failed-listings`` turns it into a warning.
EXIT_FAILED_LISTINGS = 5


def _data_dir(value: Path | None) -> Path:
    from vlmbench_plugins.datasets.abo.prepare import default_data_dir

    return value.expanduser() if value else default_data_dir()


@click.command("abo")
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
def download_abo_command(dest, variant, base_url, checksums, keep_archives, force, quiet):
    """Amazon Berkeley Objects listings and 256-px images.

    \b
    The ABO product listings and small images (CC BY 4.0, Amazon.com), laid out as
      DEST/listings/metadata/listings_*.json.gz
      DEST/images/metadata/images.csv.gz
      DEST/images/small/<xx>/<name>.jpg
    Transfers resume where they stopped (HTTP ranges), are checked against the published size and
    checksum (S3 ETag MD5), stop at a ceiling per archive (512 MiB for the listings, 8 GiB for the
    images), and unpack only regular files inside DEST. A mirror without a checksum is accepted with a
    warning and recorded as unverified.
    """
    from vlmbench_plugins.datasets.abo.download import ABO_BASE_URL, download_abo

    sha = {}
    for item in checksums:
        name, sep, digest = item.partition("=")
        if not sep or not name or not digest:
            raise VlmbenchError(f"--sha256 expects ARCHIVE=HEX, got {item!r}")
        sha[name] = digest
    target = dest.expanduser() if dest else _data_dir(None) / "abo"
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


@click.command("abo_single_word", epilog=(
    f"Exit status: 0 when done (or already up to date); 2 for a usage or input error, found before any "
    f"work; {EXIT_FAILED_LISTINGS} when listings still failed after the generators' retries (everything "
    f"else is written; run again to retry them), unless --allow-failed-listings."))  # fmt: skip
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
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the split and of the report's sample of accepted rows.")  # fmt: skip
@click.option(
    "--split", "fractions", default="0.8,0.1,0.1", show_default=True, help="train,val,test fractions."
)
@click.option("--yes-no", type=click.Choice(["reject", "allow"]), default="reject", show_default=True,
              help="Whether yes/no answers are accepted.")  # fmt: skip
@click.option("--allow-failed-listings", is_flag=True,
              help=f"Exit 0, not {EXIT_FAILED_LISTINGS}, when listings failed after retries (a warning only).")  # fmt: skip
@click.option("--force", is_flag=True, help="Redo validation, splits and export even if nothing changed.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def prepare_abo_single_word(generators, generator_args, abo_root, data_dir, language, limit, seed, fractions,
                            yes_no, allow_failed_listings, force, quiet):  # fmt: skip
    """Single-word QA from ABO listings: generate, validate, split, export.

    Curates question-answer pairs from the ABO listings with the chosen generators, validates them,
    splits them by image and exports them.

    Writes DATA_DIR/abo_single_word/: qa_all.csv, splits/{train,val,test}.csv (the study's columns),
    hf/ (a Hugging Face dataset with the images, read by the task), report.md and report.json.
    Generation is resumable (finished listings are stored under work/ and skipped), and a
    re-run with the same options and inputs does nothing.
    """
    from vlmbench_plugins.datasets.abo.curation import ValidationConfig
    from vlmbench_plugins.datasets.abo.prepare import PrepareOptions, prepare
    from vlmbench_plugins.datasets.abo.splits import parse_fractions

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
        "abo_single_word",
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
        failed = sum(facts.get("failed", 0) for facts in report.get("generation", {}).values())
        click.secho(
            f"{failed} listings failed to generate after retries; run the command again to retry them",
            fg="yellow",
            err=True,
        )
        if not allow_failed_listings:
            click.get_current_context().exit(EXIT_FAILED_LISTINGS)


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


def add_commands(cli: click.Group) -> None:
    """Attach ``abo`` to ``data download`` and ``abo_single_word`` to ``data prepare``, when this
    vlmbench has those groups."""
    data = cli.commands.get("data") if isinstance(cli, click.Group) else None
    for group_name, command in (("download", download_abo_command), ("prepare", prepare_abo_single_word)):
        group = data.commands.get(group_name) if isinstance(data, click.Group) else None
        if isinstance(group, click.Group) and command.name not in group.commands:
            group.add_command(command)
