"""Built-in dataset plugins: each adds its download and prepare commands to ``vlmbench data``.

Registration is lazy: the command modules import click only; a pipeline loads when its command runs.
"""

from vlmbench.api import hookimpl


@hookimpl
def register_commands(cli):
    # `vlmbench data download abo` and `vlmbench data prepare abo_single_word`
    from vlmbench_plugins.datasets.abo.commands import add_commands as add_abo

    add_abo(cli)
