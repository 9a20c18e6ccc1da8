"""The HTML pages the analysis writes (``compare --format html`` and ``plot``'s report.html), rendered from
the Jinja2 templates in ``templates/``: ``base.html`` is the page frame with its stylesheet, ``macros.html``
the tables and lists both pages use, and each page has a template of its own. Pages are self-contained:
inline CSS, no scripts.

Callers pass plain values (text from the runs, numbers, None); the templates hold all the markup, and every
value they print is escaped here."""

from __future__ import annotations

import html
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from vlmbench.analysis.display import visible


def esc(value: Any) -> Markup:
    """``value`` as HTML text: characters no page may hold (NUL, control characters) as escapes, then
    ``& < > " '`` as entities; None is empty. HTML the templates made themselves (a macro's output) is kept."""
    if hasattr(value, "__html__"):
        return Markup(value)
    return Markup(html.escape(visible(value, keep_breaks=True), quote=True))


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("vlmbench.analysis", "templates"),
        autoescape=True,
        # Jinja2's own escaping (MarkupSafe) writes ' as &#39; and leaves control characters and lone
        # surrogates in place; every printed value goes through `esc` first instead, so the pages keep
        # the escapes they have always had (&#x27;, \x00 written out). `esc` returns Markup, which
        # autoescape leaves alone; autoescape is what makes a macro's output Markup in turn, so that a
        # table printed into a page is not escaped a second time.
        finalize=esc,
        # the templates are laid out one element a line; their block tags leave no blank lines behind
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # a misspelt name in a template is an error, not an empty cell
        undefined=jinja2.StrictUndefined,
    )


def render_page(template: str, **context: Any) -> str:
    """The page ``template`` (a file in ``templates/``) filled with ``context``."""
    return _environment().get_template(template).render(**context)
