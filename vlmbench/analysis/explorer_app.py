"""``vlmbench view`` as a web page (a Flask app over an :class:`~vlmbench.analysis.explorer.Explorer`)
and as a static copy of one selection (:func:`export`).

The app is read-only: it answers GET requests only, writes nothing, and serves images only from the image
roots the runs recorded (:func:`~vlmbench.analysis.explorer.resolve_image`); anything else is a 404. Every
value from a run reaches the page through the autoescaping templates of :mod:`vlmbench.analysis.html`."""

from __future__ import annotations

import io
import mimetypes
import os
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import quote, urlencode

from vlmbench.analysis.explorer import OUTCOMES, Explorer, TaskTable, level_name, resolve_image
from vlmbench.analysis.explorer_query import Page, Query, parse_query, run_query
from vlmbench.analysis.html import render_page
from vlmbench.artifacts.run_files import write_text
from vlmbench.errors import VlmbenchError
from vlmbench.files import open_regular
from vlmbench.tasks.images import ImageProblem, read_image_file

THUMBNAIL_PX = 160
EXPORT_THUMBNAIL_PX = 240
# at ~5-10 kB a thumbnail, a few tens of MB at most
_THUMBNAILS_CACHED = 4096


# Images are read through descriptors checked as regular files (open_regular): a path swapped for a
# FIFO after resolve_image looked at it is refused (a 404) instead of stalling the request.
_thumbnails: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
_thumbnails_lock = threading.Lock()


def thumbnail(path: Path, size: int = THUMBNAIL_PX) -> bytes:
    """``path`` shrunk to fit ``size`` pixels, as JPEG; remembered by path and modification time, so
    that an image replaced on disk is not served stale."""
    from PIL import Image

    with open_regular(path) as fh:
        key = (str(path), os.fstat(fh.fileno()).st_mtime_ns, size)
        with _thumbnails_lock:
            if key in _thumbnails:
                _thumbnails.move_to_end(key)
                return _thumbnails[key]
        with Image.open(fh) as image:
            image.thumbnail((size, size))
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=80)
    with _thumbnails_lock:
        _thumbnails[key] = out.getvalue()
        if len(_thumbnails) > _THUMBNAILS_CACHED:
            _thumbnails.popitem(last=False)
    return out.getvalue()


def query_args(query: Query, **changes: object) -> list[tuple[str, str]]:
    """``query`` as the form fields :func:`parse_query` reads back (with ``changes``, e.g. another page)."""
    fields = {
        "task": query.task or "",
        "q": query.search,
        "sort": query.sort,
        "order": "desc" if query.descending else "",
        "pair": " vs ".join(query.pair) if query.pair else "",
        "disagree": "1" if query.disagree else "",
        "page": str(query.page),
    }
    fields.update({k: str(v) for k, v in changes.items()})
    out = [(k, v) for k, v in fields.items() if v and not (k == "page" and v == "1")]
    out += [("model", m) for m in query.models]
    out += [("difficulty", level_name(d)) for d in query.difficulties]
    out += [("outcome", f"{label}={o}") for label, o in query.outcomes]
    return out


def _form(table: TaskTable, explorer: Explorer) -> dict:
    """The choices the page's form offers for ``table``."""
    labels = table.labels
    return {
        "tasks": [t.name for t in explorer.tasks],
        "labels": labels,
        "levels": [level_name(d) for d in table.levels()],
        "outcomes": OUTCOMES,
        "sorts": [f"{metric}:{label}" for label in labels for metric in table.metrics],
        "pairs": [f"{a} vs {b}" for a in labels for b in labels if a != b],
    }


def render(explorer: Explorer, page: Page, *, image_url, thumb_url, base: str = "") -> str:
    """The page for ``page``; ``image_url(table, row)`` and ``thumb_url(table, row)`` say where images are."""
    query = page.query
    for row in page.rows:
        # an image that is missing (the reason a sample was skipped, often) gets no broken <img>
        found = resolve_image(page.table.image_root, row["image"] or "") is not None
        row["image_url"] = image_url(page.table, row) if found else ""
        row["thumb_url"] = thumb_url(page.table, row) if found else ""
    link = None if base is None else (lambda n: f"{base}?{urlencode(query_args(query, page=n))}")
    return render_page(
        "viewer.html",
        title=f"vlmbench view: {page.table.name}",
        page=page,
        query=query,
        outcome_of=dict(query.outcomes),
        query_levels=[level_name(d) for d in query.difficulties],
        form=_form(page.table, explorer) if base is not None else None,
        prev_url=link(query.page - 1) if link and query.page > 1 else "",
        next_url=link(query.page + 1) if link and query.page < page.pages else "",
        notes=explorer.notes,
    )


def create_app(explorer: Explorer):
    """The Flask app of ``vlmbench view``: ``/`` the page, ``/image/T/PATH`` and ``/thumb/T/PATH`` the images
    of task number T, from its recorded image root only."""
    from flask import Flask, Response, abort, request

    app = Flask(__name__)

    def image_path(task: int, rel: str) -> Path:
        if not 0 <= task < len(explorer.tasks):
            abort(404)
        path = resolve_image(explorer.tasks[task].image_root, rel)
        if path is None:
            abort(404)
        return path

    def url(kind: str):
        return lambda table, row: f"/{kind}/{table.index}/{quote(row['image'])}"

    @app.get("/")
    def index():
        try:
            query = parse_query(request.args.get, request.args.getlist)
            page = run_query(explorer, query)
        except VlmbenchError as exc:
            text = render_page("viewer_error.html", title="vlmbench view", error=str(exc), home="/")
            return Response(text, status=400, mimetype="text/html")
        return render(explorer, page, image_url=url("image"), thumb_url=url("thumb"), base="/")

    @app.get("/image/<int:task>/<path:rel>")
    def image(task: int, rel: str):
        path = image_path(task, rel)
        try:  # read as a run reads it: a regular file (checked on the descriptor), of bounded size
            data = read_image_file(path.parent, path.name)
        except ImageProblem:  # gone, or no longer a regular file, since it was resolved
            abort(404)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Response(data, mimetype=kind, headers={"Cache-Control": "max-age=3600"})

    @app.get("/thumb/<int:task>/<path:rel>")
    def thumb(task: int, rel: str):
        try:
            data = thumbnail(image_path(task, rel))
        except (OSError, VlmbenchError):  # not a regular file, or not an image PIL can read
            abort(404)
        return Response(data, mimetype="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/favicon.ico")
    def favicon():
        return Response(status=204)  # no icon; browsers ask for one and log a 404 as an error

    @app.after_request
    def headers(response):
        # model outputs are untrusted: no script may run on these pages, inline or fetched
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return app


def export(
    explorer: Explorer, query: Query, dest: Path, *, limit: int, force: bool = False
) -> tuple[Path, int, int]:
    """Write the selection of ``query`` (its first ``limit`` rows) into ``dest``: index.html and its
    thumbnails under thumbs/. Refuses a folder that holds anything unless ``force``. Returns the page's
    path, the rows written and the rows selected."""
    if dest.exists() and not dest.is_dir():
        raise VlmbenchError(f"{dest} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise VlmbenchError(
            f"{dest} is not empty; name an empty or new folder, or pass --force to write into it"
        )
    from dataclasses import replace

    page = run_query(explorer, replace(query, page=1), page_size=max(1, limit))
    thumbs = dest / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    for old in thumbs.glob("*.jpg"):
        if old.stem.isdigit():  # a previous export's thumbnail (only with --force): none left stale
            old.unlink()
    names: dict[int, str] = {}
    for row in page.rows:
        path = resolve_image(page.table.image_root, row["image"] or "")
        if path is None:
            continue
        try:
            data = thumbnail(path, EXPORT_THUMBNAIL_PX)
        except (OSError, VlmbenchError):  # not readable as an image, or no longer a regular file
            continue
        names[row["index"]] = f"thumbs/{row['index']}.jpg"
        (dest / names[row["index"]]).write_bytes(data)
    html = render(
        explorer,
        page,
        image_url=lambda table, row: names.get(row["index"], ""),
        thumb_url=lambda table, row: names.get(row["index"], ""),
        base=None,
    )
    target = dest / "index.html"
    write_text(target, html)
    return target, len(page.rows), page.total
