"""``vlmbench check-parity ofa FIXTURE.pt``: the OFA parity check on the harness command line.

Importing this module is cheap (no torch): the check itself is imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from vlmbench.api import VlmbenchError

DEFAULT_TOLERANCE = 1e-5  # the value of parity.DEFAULT_TOLERANCE, repeated to keep torch out of --help


@click.command("ofa")
@click.argument("fixture", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--tolerance",
    type=float,
    default=DEFAULT_TOLERANCE,
    show_default=True,
    help="Largest allowed absolute difference of logits and encoder states.",
)
@click.option("--device", default="cpu", show_default=True, help="Where to run the model (cpu, cuda, ...).")
def ofa_parity(fixture: Path, tolerance: float, device: str) -> None:
    """Compare vlmbench's OFA with outputs of the official implementation.

    FIXTURE is a torch file with the official model's config, weights (without the index tables),
    inputs, logits and encoder states, plus slices of its index tables (the format of
    tests/fixtures/ofa/ofa_tiny_parity.pt). The model is rebuilt from the config, loaded strictly
    and run in float32 eval mode; logits and encoder states must agree within TOLERANCE and the
    recomputed index-table slices exactly. Exit status 0 when everything agrees, 1 otherwise.
    """
    from vlmbench_plugins.models.ofa.parity import FixtureError, check_parity, render_parity_report

    try:
        report = check_parity(fixture, tolerance=tolerance, device=device)
    except FixtureError as error:
        raise VlmbenchError(str(error)) from error
    except ValueError as error:  # e.g. weights that do not fit the fixture's config
        raise VlmbenchError(f"{fixture}: {error}") from error
    click.echo(render_parity_report(report))
    if not report.passed:
        click.get_current_context().exit(1)


def add_commands(cli: click.Group) -> None:
    """Attach ``ofa`` to the ``check-parity`` group (if this vlmbench has one)."""
    group = cli.commands.get("check-parity") if isinstance(cli, click.Group) else None
    if isinstance(group, click.Group) and "ofa" not in group.commands:
        group.add_command(ofa_parity)
