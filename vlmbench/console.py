"""What the command line shows besides progress and results: library messages, tamed.

Libraries print things a vlmbench user cannot act on (an optional CPU kernel package that is not
installed), or the same warning at every matrix multiplication or evaluation. The command line
hides the first kind and shows the second kind once; real warnings still reach the user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

# Messages about optional speed-ups that are not installed: nothing for a user to do.
_HIDDEN = ("bitsandbytes.backends.cpu.ops",)
# Loggers that repeat one message per call (8-bit matmuls, long tokenizer inputs): shown once each.
_ONCE = (
    "bitsandbytes.autograd._functions",
    "transformers.tokenization_utils_base",
    "transformers.generation.utils",
    "transformers.modeling_utils",
)


# Libraries whose warnings (logged or raised) ``--quiet`` hides.
_LIBRARIES = (
    "transformers", "peft", "bitsandbytes", "accelerate", "huggingface_hub", "datasets", "torch", "timm",
    "open_clip", "sentence_transformers", "bert_score", "nltk", "PIL", "matplotlib",
)  # fmt: skip


class _Once(logging.Filter):
    """Lets each message template through once per process."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


# vlmbench's own warnings (e.g. samples left out of Average Mark) are messages for the user, shown as one
# line; where in vlmbench they were raised means nothing to a user.
_OURS = tuple(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep + name + os.sep
    for name in ("vlmbench", "plugins", "vlmbench_plugins")
)
_library_format = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    if category is UserWarning and os.path.abspath(filename).startswith(_OURS):
        return f"warning: {message}\n"
    return _library_format(message, category, filename, lineno, line)


def hide_unactionable_messages() -> None:
    """Silence library messages nobody can act on (an optional CPU kernel package that is not
    installed): for the command line and for ``vlmbench.evaluate()`` alike."""
    for name in _HIDDEN:
        logging.getLogger(name).setLevel(logging.ERROR)


def tame_library_output(quiet: bool = False) -> None:
    """Configure library logging and warnings for the command line (call before heavy imports).

    ``quiet`` also turns off the progress bars of Hugging Face libraries (weight loading, downloads,
    dataset preparation), as ``--quiet`` turns off vlmbench's own, and every library warning (PEFT's
    deprecations, bitsandbytes' casts, transformers' notices): with ``--quiet`` only errors and
    vlmbench's own warnings about the data reach the terminal."""
    hide_unactionable_messages()
    once = _Once()
    for name in _ONCE:
        logging.getLogger(name).addFilter(once)
    # A deprecation inside a library, raised at every evaluation step, is one message, not hundreds.
    warnings.filterwarnings("once", category=FutureWarning)
    warnings.filterwarnings("once", category=DeprecationWarning)
    warnings.formatwarning = _format_warning
    if quiet:
        for variable in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(variable, "1")
        warnings.filterwarnings("ignore")
        for ours in ("vlmbench", "vlmbench_plugins"):  # added last, so checked first
            warnings.filterwarnings("default", category=UserWarning, module=rf"{ours}(\..*)?$")
        for name in _LIBRARIES:
            logging.getLogger(name).setLevel(logging.ERROR)
        # transformers sets its own level when it is first imported, from this variable.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@contextlib.contextmanager
def library_bars_off() -> Iterator[None]:
    """Turn off the progress bars of transformers and huggingface_hub (``Loading weights: 0/103``) while
    a metric loads its encoder: scoring shows its own labelled line instead. Back on afterwards if they
    were on. Imports transformers: for code that is about to use it anyway."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
