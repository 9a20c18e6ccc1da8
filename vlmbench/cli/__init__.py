"""The ``vlmbench`` command line: a thin layer over the library API.

``main()`` is the console script: it tames library output, loads the plugins, lets them add their
commands and runs the group.
"""

from __future__ import annotations

import sys

from vlmbench.cli import analysis, listing, view  # noqa: F401  (they register their commands)
from vlmbench.cli.app import _warn_broken, cli
from vlmbench.cli.run import EXIT_NOTHING_EVALUATED, run
from vlmbench.plugin.loading import load_plugins

__all__ = ["EXIT_NOTHING_EVALUATED", "cli", "main", "run"]


def main() -> None:
    from vlmbench.console import tame_library_output

    tame_library_output(quiet=any(a in ("-q", "--quiet") for a in sys.argv[1:]))
    plugins = load_plugins()
    plugins.call_each("register_commands", cli=cli)
    if len(sys.argv) < 2 or sys.argv[1] != "list":  # `list` reports broken plugins itself
        _warn_broken(plugins)
    cli(prog_name="vlmbench")
