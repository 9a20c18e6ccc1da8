"""Checking a local checkpoint folder before and while loading it.

A folder given with ``--model-args pretrained=DIR`` may be empty, hold another model family's
checkpoint, a config file that is not JSON, or weights pickled with code in them. Each becomes one
clear message instead of a traceback from deep inside a loader:

- what is missing or unreadable (no config.json, a broken file) is an
  :class:`~vlmbench.errors.AssetMissingError`: the model is reported as skipped, like a checkpoint
  that is not there at all;
- a checkpoint of another family, and a pickle that would run code, are refused with a
  :class:`~vlmbench.errors.VlmbenchError`. Pickles are only ever read weights-only (tensors, no code).
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Sequence
from pathlib import Path

from vlmbench.errors import AssetMissingError, VlmbenchError, first_line
from vlmbench.files import NotRegularFile, read_regular_text

CONFIG = "config.json"
#: Weight files that are Python pickles (safetensors files are not).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# torch names what a weights-only load refused: "Unsupported global: GLOBAL posix.system" and alike.
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_HINT = "Pass a complete checkpoint directory with --model-args pretrained=PATH"


def checkpoint_type(folder: Path) -> str | None:
    """The ``model_type`` in ``folder/config.json``. A folder without a readable JSON config is not a
    checkpoint: :class:`AssetMissingError` says what is wrong."""
    path = Path(folder) / CONFIG
    what = f"the checkpoint directory {folder}"
    try:
        text = read_regular_text(path)
    except FileNotFoundError:
        raise AssetMissingError(what, f"it has no {CONFIG}. {_HINT}") from None
    except (OSError, UnicodeDecodeError, NotRegularFile) as exc:
        raise AssetMissingError(what, f"its {CONFIG} cannot be read ({first_line(exc)}). {_HINT}") from None
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):
        raise AssetMissingError(what, f"its {CONFIG} is not valid JSON. {_HINT}") from None
    if not isinstance(config, dict):
        raise AssetMissingError(what, f"its {CONFIG} is not a JSON object. {_HINT}")
    model_type = config.get("model_type")
    return model_type if isinstance(model_type, str) else None


def check_family(folder: Path, model: str, model_types: Sequence[str]) -> None:
    """Refuse a checkpoint folder of another model family before any of it is loaded."""
    found = checkpoint_type(folder)
    if model_types and found not in model_types:
        raise VlmbenchError(
            f"model {model!r} expects a checkpoint of type {' or '.join(model_types)}, but {folder} is "
            f"{found!r}; pass a checkpoint of that family with --model-args pretrained=PATH"
        )


def load_failure(exc: BaseException, what: str, folder: Path) -> VlmbenchError:
    """The clear error for a loader that failed on a local checkpoint folder: a refused pickle is
    refused by name; anything else means a file there is broken, and the model is skipped."""
    if isinstance(exc, pickle.UnpicklingError):
        found = _REFUSED_GLOBAL.search(str(exc))
        inside = f"would import {found.group(1)}" if found else "holds more than tensors"
        pickles = sorted(p.name for p in Path(folder).iterdir() if p.suffix in PICKLE_SUFFIXES)
        return VlmbenchError(
            f"refusing to load the {what} of {folder}: a pickle there ({', '.join(pickles) or 'weights'}) "
            f"{inside}, and pickles are only read weights-only. Use a safetensors copy of the checkpoint "
            "from a source you trust"
        )
    return AssetMissingError(
        f"the {what} of checkpoint directory {folder}",
        f"it cannot be loaded ({type(exc).__name__}: {first_line(exc)}). {_HINT}",
    )
