"""The ``vlmbench`` command group and what every command shares: errors as one line, plugin warnings.

Commands live beside it (run, list, the analysis commands); plugins add theirs through the
``register_commands`` hook, into the group itself, into ``check-parity``, or as a dataset's
subcommands of ``data download`` and ``data prepare``.
"""

from __future__ import annotations

import click

from vlmbench.errors import Interrupted, VlmbenchError
from vlmbench.plugin.loading import load_plugins
from vlmbench.schema import invalid_text, shown_text


class _Group(click.Group):
    """Prints vlmbench errors as one clear line (exit status 2) instead of a traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["vlmbench.arguments"] = list(args)  # checked in invoke(), where errors become one line
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            _check_arguments(ctx.meta.get("vlmbench.arguments", []))
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
    # shown_text: a message quoting text that is not valid Unicode must still print
    text = shown_text(text)
    return " ".join(text.split("\n")) if "\n" in text else text


def _check_arguments(args: list[str]) -> None:
    """The encoding policy for the command line: an argument holding bytes that are not UTF-8 (Python
    keeps them as lone surrogates) could not be written into results.json, which records the command
    line, names and paths as text. One error line before anything runs."""
    for number, arg in enumerate(args, start=1):
        problem = invalid_text(arg)
        if problem:
            raise VlmbenchError(
                f"command-line argument {number} ('{shown_text(arg)}') is not valid UTF-8 text; vlmbench "
                "records names, labels and paths as text: rename or retype it"
            )


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vlmbench")
def cli() -> None:
    """Benchmark vision-language models on single-word visual question answering.

    \b
    Quick start:
      vlmbench list                                   # installed models, metrics, tasks
      vlmbench run --model MODEL --task TASK          # evaluate, write predictions + results
      vlmbench leaderboard runs/                      # compare every run under runs/
      vlmbench compare RUN_A RUN_B                    # paired deltas, McNemar, flipped samples
      vlmbench plot runs/                             # figures and an HTML report
      vlmbench view runs/                             # every answer beside its image, in a browser
    """


@cli.group("check-parity")
def check_parity() -> None:
    """Check a from-scratch model implementation against reference outputs of the official code.

    Each subcommand loads a parity fixture (config, weights, inputs, official outputs), runs the
    vlmbench implementation and reports the largest absolute difference per output.
    """


class _DataGroup(click.Group):
    """``vlmbench data``: its help also lists what each installed dataset plugin added under
    ``download`` and ``prepare``, so one screen shows every pipeline."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_commands(ctx, formatter)
        rows = [
            (f"{name} {sub}", command.get_short_help_str(limit=70))
            for name in ("download", "prepare")
            if isinstance(self.commands.get(name), click.Group)
            for sub, command in sorted(self.commands[name].commands.items())
        ]
        if rows:
            with formatter.section("Installed datasets"):
                formatter.write_dl(rows)


class _DatasetGroup(click.Group):
    """``data download`` and ``data prepare``: one subcommand per dataset or task a plugin adds."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in self.commands:
            known = ", ".join(sorted(self.commands)) or "none (install a dataset plugin)"
            raise click.UsageError(f"nothing named {name!r} to {self.name}; installed: {known}", ctx)
        return super().resolve_command(ctx, args)


@cli.group("data", cls=_DataGroup)
def data() -> None:
    """Download datasets and prepare benchmark data from them.

    \b
    A dataset plugin adds its pipeline here, in three steps:
      vlmbench data download DATASET          # fetch the dataset's public files
      vlmbench data prepare TASK -g GENERATOR # question-answer pairs: generate, validate, split, export
      vlmbench run --model MODEL --task TASK  # evaluate on the prepared data

    `vlmbench data generators` lists the QA generators; `vlmbench data download DATASET --help` and
    `vlmbench data prepare TASK --help` describe each step. See docs/data.md.
    """


@data.group("download", cls=_DatasetGroup)
def download() -> None:
    """Fetch a dataset's public files: one subcommand per dataset."""


@data.group("prepare", cls=_DatasetGroup)
def prepare() -> None:
    """Build a task's data from a downloaded dataset: one subcommand per task."""


@data.command("generators")
def data_generators():
    """List the installed QA generators."""
    plugins = load_plugins()
    for e in plugins.generators:
        net = " (network)" if e.needs_network else ""
        click.echo(f"  {e.name:<12} {e.summary}{net}; from {e.plugin}")


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
