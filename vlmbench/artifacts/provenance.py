"""Where a result came from: versions, code revision, hardware, command line (secrets redacted)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from vlmbench import __version__
from vlmbench.devices import gpu_possible

LIBRARIES = (
    "torch", "torchvision", "transformers", "tokenizers", "peft", "bitsandbytes", "accelerate",
    "open_clip_torch", "datasets", "nltk", "sentence-transformers", "bert-score", "numpy", "pillow",
)  # fmt: skip

_SECRET_ARG = re.compile(r"(?i)((?:api[_-]?key|token|secret|password)[^=,\s]*\s*[=:]\s*)([^,\s]+)")


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    """The commit of the vlmbench source tree, when it is a git checkout (with ``+dirty`` if modified)."""
    root = Path(__file__).resolve().parents[2]  # vlmbench/artifacts/provenance.py -> the source tree
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def hardware() -> dict:
    info: dict = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    if not gpu_possible():  # no GPU to list: torch (seconds to import) would find none either
        return info
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return info


def redact_text(text: str) -> str:
    """Hide values of api_key=..., token=..., secret=..., password=... in free text."""
    return _SECRET_ARG.sub(lambda m: m.group(1) + "***", text)


def now() -> str:
    """The current UTC time as results and reports record it."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def command_line() -> str:
    """The command line of this process, secrets redacted (``python -m vlmbench`` named as ``vlmbench``)."""
    program = Path(sys.argv[0]).name
    return redact_text(" ".join(["vlmbench" if program == "__main__.py" else program, *sys.argv[1:]]))


def provenance() -> dict:
    return {
        "vlmbench_version": __version__,
        "git_revision": git_revision(),
        "created": now(),
        "command": command_line(),
        "libraries": library_versions(),
        "hardware": hardware(),
    }
