"""``vlmbench view``: the runs' answers as a local web page, or a static copy of a selection (``--export``)."""

from __future__ import annotations

import gc
import socket
from pathlib import Path

import click

from vlmbench.cli.app import cli
from vlmbench.errors import VlmbenchError

_LOCAL = ("127.0.0.1", "localhost", "::1")


@cli.command("view")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but localhost lets other machines read the runs.")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")  # fmt: skip
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write a static copy of the selection (index.html and thumbnails) into this folder "
                   "instead of serving.")  # fmt: skip
@click.option("--force", is_flag=True, help="With --export: write into a folder that is not empty.")
@click.option("--limit", type=click.IntRange(1), default=500, show_default=True,
              help="With --export: the most samples written.")  # fmt: skip
@click.option("--task", help="The task shown [default: the first by name].")
@click.option(
    "--model", "models", multiple=True, help="A run shown, by its label (repeatable) [default: all]."
)
@click.option("--difficulty", "difficulties", multiple=True, help="Only this difficulty level (repeatable).")
@click.option("--outcome", "outcomes", multiple=True, metavar="MODEL=right|wrong|skipped",
              help="Only samples this run got right, wrong or skipped (repeatable).")  # fmt: skip
@click.option("--disagree", is_flag=True, help="Only samples on which the runs shown answered differently.")
@click.option(
    "--search", default="", help="Only samples whose question, references or answers hold this text."
)
@click.option("--sort", default="", metavar="METRIC:MODEL", help="Sort by one run's per-sample score.")
@click.option("--descending", is_flag=True, help="Sort from the highest score.")
@click.option("--pair", default="", metavar="'A vs B'",
              help="Two runs side by side, the questions that flipped between them first.")  # fmt: skip
def view(runs, host, port, export_dir, force, limit, task, models, difficulties, outcomes, disagree, search,
         sort, descending, pair):  # fmt: skip
    """Browse the answers of the runs under RUNS: each sample's image, question, references and every
    run's answer with its scores, with filters, sorting and two runs side by side.

    RUNS are run folders or folders holding runs (e.g. runs/). The page is served on 127.0.0.1 and only
    reads: images come only from the image folders the runs recorded. The filter options select what
    --export writes, and what the printed address opens on.

    \b
    Examples:
      vlmbench view runs                     # then open the printed address
      vlmbench view runs --export shared --outcome prior=wrong --difficulty 5
    """
    from vlmbench.analysis.explorer import load_explorer
    from vlmbench.analysis.explorer_query import parse_query

    lists = {"model": list(models), "difficulty": list(difficulties), "outcome": list(outcomes)}
    single = {"task": task, "q": search, "sort": sort, "order": "desc" if descending else "", "pair": pair,
              "disagree": "1" if disagree else ""}  # fmt: skip
    query = parse_query(single.get, lambda name: lists.get(name, []))  # a bad option fails before any reading
    explorer = load_explorer(list(runs))
    for note in explorer.notes:
        click.secho(f"note: {note}", fg="yellow", err=True)
    if export_dir is not None:
        from vlmbench.analysis.explorer_app import export

        page, written, selected = export(explorer, query, export_dir, limit=limit, force=force)
        more = f": the first {written} of {selected}; --limit for more" if written < selected else ""
        click.echo(f"wrote {page} ({written} samples{more})")
        return
    from vlmbench.analysis.explorer_query import run_query

    run_query(explorer, query)  # an unknown task, model or sort is an error here, not on the page
    _serve(explorer, host, port, query)


def _serve(explorer, host: str, port: int, query) -> None:
    from urllib.parse import urlencode

    from werkzeug.serving import make_server

    from vlmbench.analysis.explorer_app import create_app, query_args

    if host not in _LOCAL:
        click.secho(f"warning: serving on {host}: anyone who can reach it can read these runs and their images",
                    fg="yellow", err=True)  # fmt: skip
    # The runs are read once and kept: frozen, their million objects are no longer scanned by every full
    # garbage collection, which otherwise stalls a page now and then for most of a second at 80,000 x 8.
    gc.freeze()
    # The socket is opened here: werkzeug itself reports a port in use by printing and exiting with 1.
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listening = socket.create_server((host, port), family=family)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise VlmbenchError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; --port 0 picks a free port"
        ) from None
    with listening:  # the server listens on a duplicate of it
        server = make_server(host, port, create_app(explorer), threaded=True, fd=listening.fileno())
    shown = f"[{host}]" if ":" in host else host
    # the filters given on the command line become the address's query: the page opens on that selection
    args = urlencode(query_args(query))
    click.echo(f"vlmbench view: http://{shown}:{server.port}/{'?' + args if args else ''}  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
