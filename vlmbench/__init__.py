"""vlmbench: benchmark vision-language models on single-word visual question answering.

Library entry points::

    import vlmbench
    result = vlmbench.evaluate(MODEL, TASK, limit=20)     # names from `vlmbench list`
    print(result.results["metrics"]["exact_match"])

``import vlmbench`` stays light: the runner (and torch) load on first use of ``evaluate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vlmbench.plugin.hookspecs import hookimpl
from vlmbench.plugin.loading import load_plugins

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate", "hookimpl", "load_plugins"]

if TYPE_CHECKING:
    from vlmbench.evaluation.runner import evaluate


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from vlmbench.evaluation.runner import evaluate

        return evaluate
    raise AttributeError(f"module 'vlmbench' has no attribute {name!r}")
