"""Which device and which floating-point type a model runs with: ``--device`` and ``--dtype``.

One resolver each, used by the runner, the model bases and every command that loads a model, so that
``auto`` means the same everywhere and a device that does not exist is an error before any work.
"""

from __future__ import annotations

import glob
import os
import re
import sys

from vlmbench.errors import ArgError

DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}  # fmt: skip

_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu)(?::(\d+))?$")


def resolve_device(device: str | None) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; an explicit device is checked.

    ``cuda``/``cuda:N`` without such a GPU, ``mps`` without Apple's backend, or a name torch does
    not know are :class:`ArgError`, so the mistake shows before a model loads.
    """
    device = (device or "auto").strip().lower()
    if device == "auto":
        if not gpu_possible():
            return "cpu"
        try:
            import torch

            if torch.cuda.is_available():
                return "cuda"
        except ImportError:
            pass
        return "cpu"
    match = _DEVICE.match(device)
    if not match:
        raise ArgError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise ArgError(f"device {device!r}: there is one CPU device (cpu)")
        return "cpu"
    import torch

    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ArgError(f"device {device!r}: no CUDA GPU is available here (use --device cpu)")
        if index is not None and int(index) >= count:
            raise ArgError(
                f"device {device!r}: only {count} CUDA GPU(s) are visible (cuda:0 to cuda:{count - 1})"
            )
        return device
    backend = getattr(torch.backends, kind, None) if kind == "mps" else getattr(torch, kind, None)
    if backend is None or not backend.is_available():
        raise ArgError(f"device {device!r}: this machine has no {kind} backend (use --device cpu)")
    return device


# Device files through which a CUDA (NVIDIA), ROCm (AMD, which torch also reports as cuda) or WSL GPU is
# reached on Linux: without any of them, torch.cuda.is_available() cannot be true.
_GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg")


def gpu_possible() -> bool:
    """Whether ``auto`` could mean a GPU here, known without importing torch (which takes seconds): on
    Linux only with a GPU's device file present, on macOS never (``auto`` does not pick ``mps``)."""
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux") and os.path.isdir("/dev"):
        return any(glob.glob(pattern) for pattern in _GPU_DEVICE_FILES)
    return True


def check_dtype(requested: str | None) -> str:
    """``--dtype`` checked without a model: ``auto`` or the full name of a known dtype (``bf16`` ->
    ``bfloat16``); anything else is an :class:`ArgError`, whichever model would have used it."""
    text = (requested or "auto").strip().lower()
    if text == "auto":
        return text
    if text not in DTYPES:
        raise ArgError(f"unknown dtype {requested!r}; use auto, float32, bfloat16 or float16")
    return DTYPES[text]


def resolve_dtype(requested: str | None, device: str, *, auto: str | None = None) -> str:
    """``auto`` -> ``bfloat16`` on a CUDA device that supports it, ``float16`` on older GPUs,
    ``float32`` elsewhere — or the model's own choice ``auto`` when it gives one (a model trained and
    checked in float32 only, say); aliases such as ``bf16`` or ``fp16`` -> their full names."""
    requested = check_dtype(requested)
    if requested == "auto" and auto is not None:
        requested = auto
    if requested != "auto":
        return check_dtype(requested)
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def torch_dtype(name: str):
    """The ``torch.dtype`` of a resolved dtype name."""
    import torch

    return getattr(torch, DTYPES[name])
