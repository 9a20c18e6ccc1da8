"""``vlmbench check-parity vilbert FIXTURE.pt``."""

from __future__ import annotations


def add_commands(cli) -> None:
    """Add ``vilbert`` to the ``check-parity`` group of the vlmbench CLI."""
    group = getattr(cli, "commands", {}).get("check-parity")
    if group is not None:
        group.add_command(_vilbert_parity_command())


def _vilbert_parity_command():
    import click

    @click.command("vilbert")
    @click.argument("fixture", type=click.Path(exists=True, dir_okay=False))
    @click.option("--tolerance", type=float, default=1e-5, show_default=True,
                  help="Largest accepted absolute difference per output.")  # fmt: skip
    @click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    def vilbert(fixture, tolerance, device, as_json):
        """Compare vlmbench's ViLBERT with the original implementation's outputs in FIXTURE.

        FIXTURE is a torch.save-d dict with config, state_dict, inputs and outputs (the format of
        tests/fixtures/vilbert/vilbert_tiny_parity.pt). Exit status 0 when every output is within
        the tolerance, 1 otherwise.
        """
        import json
        import pickle

        from vlmbench.api import VlmbenchError
        from vlmbench_plugins.models.vilbert.parity import check_parity, render_parity_report

        try:
            report = check_parity(fixture, tolerance=tolerance, device=device)
        except (ValueError, RuntimeError, KeyError, OSError, pickle.UnpicklingError) as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise VlmbenchError(f"cannot check parity with {fixture}: {first_line}") from exc
        if as_json:
            click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        else:
            click.echo(render_parity_report(report))
        click.get_current_context().exit(0 if report.passed else 1)

    return vilbert
