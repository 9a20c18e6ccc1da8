"""The study recipe: ``vlmbench study`` reproduces the study's tables and figures in one command.

It is a command plugin like any third party's: it composes public pieces (run files, ``evaluate``,
the BLIP plugin's LoRA sweep, the leaderboard and figure writers) and adds nothing to the core.
Registration is lazy: the command module imports click only.
"""

from vlmbench.api import hookimpl


@hookimpl
def register_commands(cli):
    from vlmbench_plugins.study.command import study_command

    cli.add_command(study_command)
