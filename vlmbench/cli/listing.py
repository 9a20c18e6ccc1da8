"""``vlmbench list``: what is installed, and the arguments of one model, metric or generator."""

from __future__ import annotations

import click

from vlmbench.cli.app import _warn_broken, cli
from vlmbench.errors import VlmbenchError
from vlmbench.plugin.loading import load_plugins


@cli.command("list")
@click.argument(
    "what",
    type=click.Choice(["models", "metrics", "tasks", "configs", "protocols", "generators", "plugins", "all"]),
    default="all",
)
@click.argument("name", required=False)
def list_(what, name):
    """List installed models, metrics, tasks, run configurations, protocols, QA generators and plugins.

    With a NAME (`vlmbench list models NAME`), show that model's, metric's or generator's
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
    if what in ("protocols", "all"):
        click.secho("Evaluation protocols (vlmbench run --protocol NAME)", bold=True)
        for e in plugins.protocols:
            click.echo(f"  {e.name:<14} {e.summary}")
    if what in ("generators", "all"):
        click.secho("QA generators (vlmbench data prepare TASK --generator NAME)", bold=True)
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
