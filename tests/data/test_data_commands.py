"""`vlmbench data`: the core's generic group, which the ABO dataset plugin (and any other) fills."""

from __future__ import annotations

import click
from click.testing import CliRunner

from vlmbench.api import hookimpl, load_plugins
from vlmbench.cli import cli

from vlmbench_testing import run_cli


def test_data_help_lists_the_installed_pipelines():
    """Through the console script: the plugin registers from its entry point, as a user's shell sees it."""
    res = run_cli(["data", "--help"])
    assert res.returncode == 0, res.stderr
    assert "vlmbench data download DATASET" in res.stdout and "vlmbench data prepare TASK" in res.stdout
    assert "Installed datasets" in res.stdout
    assert "download abo" in res.stdout and "prepare abo_single_word" in res.stdout


def test_an_unknown_dataset_is_a_usage_error():
    result = CliRunner().invoke(cli, ["data", "prepare", "abo_multi_word"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "nothing named 'abo_multi_word' to prepare; installed: abo_single_word" in result.stderr


@click.command("mine")
def _download_mine() -> None:
    """A third party's dataset."""
    click.echo("fetched")


class _DatasetPlugin:
    @hookimpl
    def register_commands(self, cli):
        cli.commands["data"].commands["download"].add_command(_download_mine)


def test_a_third_party_dataset_plugin_adds_its_pipeline_the_same_way():
    load_plugins(extra=[_DatasetPlugin()]).call_each("register_commands", cli=cli)
    download = cli.commands["data"].commands["download"]
    try:
        runner = CliRunner()
        assert runner.invoke(cli, ["data", "download", "mine"]).output == "fetched\n"
        listing = runner.invoke(cli, ["data", "--help"]).output
        assert "download abo" in listing and "download mine" in listing
    finally:
        download.commands.pop("mine", None)
        load_plugins(reload=True)
