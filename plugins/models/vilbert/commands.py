"""``vlmbench check-parity vilbert FIXTURE.pt`` (the model or its region detector) and
``vlmbench vilbert-features`` (region features of a task's images, extracted ahead of a run)."""

from __future__ import annotations

import sys


def add_commands(cli) -> None:
    """Add ``vilbert`` to the ``check-parity`` group of the vlmbench CLI, and ``vilbert-features``."""
    group = getattr(cli, "commands", {}).get("check-parity")
    if group is not None:
        group.add_command(_vilbert_parity_command())
    if hasattr(cli, "add_command"):
        cli.add_command(_features_command())


def _features_command():
    import click

    @click.command("vilbert-features")
    @click.option("--task", "-t", required=True, help="Task (name or YAML file) whose images to extract.")
    @click.option("--model-args", "-a", "model_args", metavar="k=v,...",
                  help="The vilbert arguments of the run (detector=DIR, detector_config=, feature_cache=); "
                       "a 'vilbert:' scope is accepted.")  # fmt: skip
    @click.option("--device", help="auto, cpu, cuda, cuda:N [default: auto].")
    @click.option("--limit", type=click.IntRange(min=1), help="Only the images of the first N samples.")
    @click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
    def vilbert_features(task, model_args, device, limit, quiet):
        """Extract ViLBERT's region features (the Visual Genome detector) for every image of TASK into
        the feature cache, so that `vlmbench run -m vilbert` with the same detector reuses them.

        Images already in the cache are skipped: after an interruption, run the command again.
        """
        from tqdm import tqdm

        from vlmbench.api import split_scoped
        from vlmbench_plugins.models.vilbert.precompute import precompute_features

        scope, args = split_scoped(model_args or "")
        if scope not in (None, "vilbert"):
            raise click.BadParameter(
                f"arguments for {scope!r}; this command takes vilbert's", param_hint="-a"
            )

        def bar(total):
            return tqdm(total=total, desc="region features", unit="image", disable=quiet, file=sys.stderr)

        result = precompute_features(task, args, device=device, limit=limit, progress=bar)
        for image, why in sorted(result.unreadable.items()):
            click.secho(f"warning: {image}: {why}", fg="yellow", err=True)
        click.echo(
            f"{result.images} images: {result.extracted} extracted, {result.cached} already cached, "
            f"{len(result.unreadable)} unreadable; cache: {result.cache_folder}"
        )

    return vilbert_features


def _vilbert_parity_command():
    import click

    @click.command("vilbert")
    @click.argument("fixture", type=click.Path(exists=True, dir_okay=False))
    @click.option("--tolerance", type=float,
                  help="Largest accepted difference: absolute per output for the model [1e-5]; relative and "
                       "absolute per stage for the region detector [1e-4].")  # fmt: skip
    @click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    def vilbert(fixture, tolerance, device, as_json):
        """Compare vlmbench's ViLBERT, or its region detector, with the original implementation's
        outputs in FIXTURE.

        FIXTURE is a torch.save-d dict: for the model, config, state_dict, inputs and outputs (the
        format of tests/fixtures/vilbert/vilbert_tiny_parity.pt); for the detector, the format
        vg_detector_tiny_parity/v1 (outputs of every stage; docs/vilbert.md). Each detector stage is fed
        the original's output of the stage before it; the FPN is also computed from the image, and
        those rows may also differ by twice the port's own float32 rounding of them (measured against
        float64: convolution rounding depends on the CPU and grows through the network). Exit status 0
        when every output is within the tolerance, 1 otherwise.
        """
        import json
        import pickle

        import torch

        from vlmbench.api import VlmbenchError
        from vlmbench_plugins.models.vilbert.detector import parity as detector_parity
        from vlmbench_plugins.models.vilbert.parity import check_parity, render_parity_report

        try:
            data = torch.load(fixture, map_location="cpu", weights_only=True)
            if detector_parity.is_detector_fixture(data):
                limit = detector_parity.TOLERANCE if tolerance is None else tolerance
                report = detector_parity.check_detector_parity(data, tolerance=limit, device=device)
                report.fixture = fixture
                text = detector_parity.render_detector_report(report)
            else:
                limit = 1e-5 if tolerance is None else tolerance
                report = check_parity(data, tolerance=limit, device=device)
                report.fixture = fixture
                text = render_parity_report(report)
        except (ValueError, RuntimeError, KeyError, TypeError, OSError, pickle.UnpicklingError) as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise VlmbenchError(f"cannot check parity with {fixture}: {first_line}") from exc
        click.echo(json.dumps(report.to_dict(), indent=2, default=str) if as_json else text)
        click.get_current_context().exit(0 if report.passed else 1)

    return vilbert
