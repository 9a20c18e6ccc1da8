"""Checking a LoRA adapter folder before it is applied to a model.

An adapter (``adapter=DIR``) is a file from outside like a checkpoint, and PEFT trusts it: a pickle is
unpickled after the base model has loaded, a rank of 10^9 in ``adapter_config.json`` is allocated, and an
adapter whose tensors name no layer of the model is applied as nothing at all — the base model's
answers would then be reported as the adapter's. Everything an adapter says is checked here first:

- :func:`read_adapter` (no torch, before any model work): ``adapter_config.json`` is a small JSON object
  of a LoRA adapter with sane ranks and targets; the weights file is a well-formed safetensors file
  (header size, entries within the file) or a pickle read weights-only; every layer has both LoRA
  matrices, and their shapes agree with each other and with the configured rank.
- :func:`check_fits` (against the model's layers: a model built on the ``meta`` device, which holds no
  weights, before the base weights load; and the loaded model itself): every adapted layer exists with
  the shape the matrices need, and the layers the config targets are exactly the layers with weights.
- :func:`check_applied`: what PEFT injected is exactly what the file holds.

Each problem is a :class:`~vlmbench.errors.VlmbenchError` naming the adapter and what is wrong.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from vlmbench.errors import AssetMissingError, VlmbenchError, first_line
from vlmbench.hf.checkpoints import load_failure

ADAPTER_CONFIG = "adapter_config.json"
SAFETENSORS = "adapter_model.safetensors"
PICKLED = "adapter_model.bin"
#: An adapter_config.json is a few kilobytes.
MAX_CONFIG_BYTES = 1 << 20
#: The safetensors library's own limit on the JSON header.
MAX_HEADER_BYTES = 100 << 20
#: PEFT saves the model it wraps under this prefix.
PREFIX = "base_model.model."
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}  # fmt: skip
# lora_A / lora_B of a Linear or Conv layer, lora_embedding_A / _B of an Embedding (no ".weight").
_LORA_KEY = re.compile(
    r"(?P<module>.+)\.(?P<kind>lora_A|lora_B)\.weight|(?P<emb>.+)\.(?P<ekind>lora_embedding_[AB])"
)
_HINT = "pass the folder of an adapter trained on this model with --model-args adapter=PATH"


@dataclass(frozen=True)
class LoraLayer:
    """One adapted layer as the weights file has it: its rank and the shapes of its two matrices."""

    rank: int
    a: tuple[int, ...]
    b: tuple[int, ...]
    embedding: bool


@dataclass(frozen=True)
class Adapter:
    """A checked LoRA adapter folder."""

    path: Path
    config: dict[str, Any]
    weights: Path
    #: Every tensor of the weights file with its shape.
    tensors: dict[str, tuple[int, ...]]
    #: Adapted layer (its name in the model PEFT wraps) -> its matrices.
    layers: dict[str, LoraLayer]

    @property
    def base(self) -> str | None:
        value = self.config.get("base_model_name_or_path")
        return value if isinstance(value, str) and value else None


def _bad(path: Path, problem: str) -> VlmbenchError:
    return VlmbenchError(f"adapter {path} {problem}; {_HINT}")


# -- the folder, without torch -------------------------------------------------------------------------
def read_adapter(folder: str | Path) -> Adapter:
    """The adapter in ``folder``, checked. A folder without ``adapter_config.json`` is
    :class:`AssetMissingError` (the model is skipped, like missing weights); anything wrong in it is a
    :class:`VlmbenchError`."""
    path = Path(folder).expanduser()
    if not (path / ADAPTER_CONFIG).exists():
        raise AssetMissingError(
            f"adapter {str(path)!r}",
            "expected a PEFT adapter directory (adapter_config.json + weights) or the output folder of "
            "`vlmbench finetune`; pass it with --model-args adapter=PATH",
        )
    config = _read_config(path)
    if (path / SAFETENSORS).exists():
        weights, tensors = path / SAFETENSORS, safetensors_shapes(path / SAFETENSORS, path)
    elif (path / PICKLED).exists():
        weights, tensors = path / PICKLED, _pickled_shapes(path / PICKLED, path)
    else:
        raise _bad(path, f"has no weights ({SAFETENSORS} or {PICKLED})")
    return Adapter(path, config, weights, tensors, _layers(path, config, tensors))


def _regular(path: Path, folder: Path) -> None:
    if not path.is_file():  # a folder, a FIFO or a device would hang or fail the reader
        raise _bad(folder, f"has a {path.name} that is not a regular file")


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / ADAPTER_CONFIG
    _regular(path, folder)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise _bad(folder, f"has a {ADAPTER_CONFIG} of {path.stat().st_size} bytes, not a config")
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _bad(folder, f"has a {ADAPTER_CONFIG} that cannot be read ({exc.strerror or exc})") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise _bad(folder, f"has a {ADAPTER_CONFIG} that is not valid JSON") from None
    if not isinstance(config, dict):
        raise _bad(folder, f"has a {ADAPTER_CONFIG} that is not a JSON object")
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise _bad(
            folder, f"is of peft_type {peft_type!r}: vlmbench applies LoRA adapters (peft_type 'LORA') only"
        )
    if not _rank(config.get("r")):
        raise _bad(
            folder, f"has r = {config.get('r')!r} in {ADAPTER_CONFIG}: a rank is a whole number of 1 or more"
        )
    patterns = config.get("rank_pattern") or {}
    if not isinstance(patterns, dict) or not all(
        isinstance(k, str) and _rank(v) for k, v in patterns.items()
    ):
        raise _bad(folder, "has a rank_pattern that is not a mapping of layer names to ranks of 1 or more")
    targets = config.get("target_modules")
    if not (isinstance(targets, str) and targets) and not (
        isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)
    ):
        raise _bad(folder, f"has target_modules = {targets!r}: expected layer names or a pattern")
    if isinstance(targets, str) and targets != "all-linear":
        try:
            re.compile(targets)
        except re.error as exc:
            raise _bad(folder, f"has target_modules {targets!r}, not a valid pattern ({exc})") from None
    if config.get("target_parameters"):
        raise _bad(folder, "adapts parameters (target_parameters), which vlmbench does not apply")
    base = config.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise _bad(folder, f"names its base model as {base!r}, not as a path or Hub id")
    return config


def _rank(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def safetensors_shapes(path: Path, folder: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a safetensors file, from its header alone: the header's size, every
    entry's dtype, shape and byte range are checked against each other and against the file's size (a
    truncated file, or a header claiming gigabytes, is refused before anything is allocated)."""
    _regular(path, folder)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
                raise _bad(folder, f"has a {path.name} that is not a safetensors file (header of {length} bytes "
                                   f"in a file of {size})")  # fmt: skip
            header = json.loads(fh.read(length).decode("utf-8"))
    except OSError as exc:
        raise _bad(folder, f"has a {path.name} that cannot be read ({exc.strerror or exc})") from None
    except (ValueError, RecursionError):
        raise _bad(folder, f"has a {path.name} whose header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _bad(folder, f"has a {path.name} whose header is not a JSON object")
    data = size - 8 - length
    shapes = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        ok = (
            isinstance(shape, list)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
            and entry.get("dtype") in _ITEMSIZE
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
        )
        if not ok:
            raise _bad(folder, f"has a {path.name} with a malformed entry for {name!r}")
        begin, end = offsets
        if not 0 <= begin <= end <= data:
            raise _bad(folder, f"has a {path.name} that is truncated or damaged: {name!r} lies at bytes "
                               f"{begin}..{end} of {data}")  # fmt: skip
        if end - begin != math.prod(shape) * _ITEMSIZE[entry["dtype"]]:
            raise _bad(folder, f"has a {path.name} whose entry {name!r} does not match its shape {shape}")
        shapes[name] = tuple(shape)
    return shapes


def _pickled_shapes(path: Path, folder: Path) -> dict[str, tuple[int, ...]]:
    """Shapes of a pickled state dict, read weights-only (tensors, no code)."""
    import torch

    _regular(path, folder)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise load_failure(exc, "adapter", folder) from None
    except Exception as exc:  # a truncated or foreign file, whichever way torch fails on it
        raise _bad(
            folder, f"has a {path.name} that cannot be read ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _bad(folder, f"has a {path.name} that is not a state dict of tensors")
    return {str(k): tuple(v.shape) for k, v in state.items()}


def _configured_rank(folder: Path, config: dict[str, Any], layer: str) -> int:
    """The rank the config gives ``layer``: a matching ``rank_pattern`` entry (as PEFT matches them),
    else ``r``."""
    for pattern, rank in (config.get("rank_pattern") or {}).items():
        try:
            if re.fullmatch(rf"(.*\.)?(?:{pattern})", layer):
                return rank
        except re.error:
            raise _bad(folder, f"has a rank_pattern {pattern!r} that is not a valid pattern") from None
    return config["r"]


def _layers(
    folder: Path, config: dict[str, Any], tensors: Mapping[str, tuple[int, ...]]
) -> dict[str, LoraLayer]:
    """The adapted layers of the weights file, each with both matrices of consistent shapes."""
    parts: dict[str, dict[str, tuple[int, ...]]] = {}
    embeddings, others = set(), []
    for key, shape in tensors.items():
        found = _LORA_KEY.fullmatch(key)
        if not found or not key.startswith(PREFIX):
            others.append(key)
            continue
        module = (found["module"] or found["emb"])[len(PREFIX) :]
        kind = found["kind"] or found["ekind"]
        parts.setdefault(module, {})["A" if kind.endswith("A") else "B"] = shape
        if found["emb"]:
            embeddings.add(module)
    allowed = config.get("modules_to_save") or config.get("bias", "none") != "none" or config.get("use_dora")
    if others and not allowed:
        raise _bad(folder, f"holds tensors that are not LoRA matrices ({', '.join(sorted(others)[:3])})")
    if not parts:
        raise _bad(folder, "holds no LoRA weights")
    layers = {}
    for module, found in sorted(parts.items()):
        if "A" not in found or "B" not in found:
            raise _bad(folder, f"has only one of the two LoRA matrices of {module}")
        a, b = found["A"], found["B"]
        rank_a, rank_b = (a[0], b[1]) if len(a) >= 2 and len(b) >= 2 else (None, None)
        if rank_a is None or rank_a != rank_b or rank_a < 1:
            raise _bad(
                folder,
                f"has LoRA matrices of {module} whose shapes {list(a)} and {list(b)} do not fit together",
            )
        wanted = _configured_rank(folder, config, module)
        if rank_a != wanted:
            raise _bad(
                folder,
                f"holds rank-{rank_a} matrices for {module} but its config gives that layer r = {wanted}",
            )
        layers[module] = LoraLayer(rank_a, a, b, module in embeddings)
    return layers


# -- against the model ------------------------------------------------------------------------------
def model_layers(model: Any) -> dict[str, tuple[int, ...]]:
    """Layer name -> weight shape, for every layer of ``model`` that has a weight (4-bit packed weights
    by their unpacked shape). Works on a model built on the ``meta`` device."""
    out = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        shape = getattr(getattr(weight, "quant_state", None), "shape", None) or getattr(weight, "shape", None)
        if name and shape is not None:
            out[name] = tuple(shape)
    return out


def check_fits(adapter: Adapter, layers: Mapping[str, tuple[int, ...]], checkpoint: str) -> None:
    """Refuse an adapter that was not made for this model: a layer it adapts that the model lacks or
    whose shape its matrices do not fit, or a layer its config targets without weights for it (PEFT
    would leave it as the base model's)."""
    where = f"the model {checkpoint}"
    missing = [m for m in adapter.layers if m not in layers]
    if missing:
        matched = len(adapter.layers) - len(missing)
        share = f"{'none' if not matched else f'only {matched}'} of its {len(adapter.layers)} layers"
        raise _bad(adapter.path, f"adapts layers that {where} does not have ({share} match; e.g. "
                                 f"{missing[0]}): it was made for another model")  # fmt: skip
    fan_in_fan_out = bool(adapter.config.get("fan_in_fan_out"))
    for module, lora in adapter.layers.items():
        shape = layers[module]
        if len(shape) < 2:
            raise _bad(adapter.path, f"adapts {module}, a layer of {where} that LoRA cannot adapt")
        if lora.embedding:
            fits = lora.a[1:] == (shape[0],) and lora.b[:1] == (shape[1],)
        else:
            out_features, in_features = (shape[1], shape[0]) if fan_in_fan_out else (shape[0], shape[1])
            fits = lora.a[1] == in_features and lora.b[0] == out_features
        if not fits:
            raise _bad(adapter.path, f"holds matrices {list(lora.a)} and {list(lora.b)} for {module}, which do not fit "
                                     f"its weight {list(shape)} in {where}")  # fmt: skip
    targeted = _targeted(adapter, layers)
    if targeted is not None:
        untrained = sorted(set(targeted) - set(adapter.layers))
        if untrained:
            raise _bad(adapter.path, f"targets {len(untrained)} layers of {where} it holds no weights for (e.g. "
                                     f"{untrained[0]}): they would run as the base model's")  # fmt: skip
        extra = sorted(set(adapter.layers) - set(targeted))
        if extra:
            raise _bad(adapter.path, f"holds weights for {len(extra)} layers its target_modules do not name (e.g. "
                                     f"{extra[0]}): they would not be applied")  # fmt: skip


def _targeted(adapter: Adapter, layers: Mapping[str, tuple[int, ...]]) -> list[str] | None:
    """The layers PEFT would adapt, by PEFT's own matching rule; None when that cannot be known
    without PEFT's model-specific expansion (``all-linear``)."""
    config = adapter.config
    if config.get("target_modules") == "all-linear":
        return None
    from peft.tuners.tuners_utils import check_target_module_exists

    keys = ("target_modules", "exclude_modules", "modules_to_save", "target_parameters",
            "layers_to_transform", "layers_pattern")  # fmt: skip
    view = SimpleNamespace(**{k: config.get(k) for k in keys})
    found = []
    for name in layers:
        try:
            hit = check_target_module_exists(view, name)
        except (re.error, TypeError, ValueError) as exc:
            raise _bad(adapter.path, f"has target_modules that cannot be matched ({exc})") from None
        if hit and type(hit).__name__ != "_ExcludedModule":
            found.append(name)
    return found


def check_applied(adapter: Adapter, model: Any) -> None:
    """After PEFT: the LoRA tensors it injected are exactly those of the file (PEFT itself only warns
    about keys it could not place)."""
    injected = set()
    for name, _ in model.named_parameters():
        if ".lora_" in name:
            injected.add(
                re.sub(r"\.(lora_(?:A|B|embedding_A|embedding_B))\.[^.]+(?=\.weight$|$)", r".\1", name)
            )
    expected = {k for k in adapter.tensors if _LORA_KEY.fullmatch(k)}
    if injected != expected:
        differ = sorted(injected ^ expected)
        raise _bad(
            adapter.path,
            f"was not applied as its file says ({len(differ)} LoRA tensors differ, e.g. {differ[0]})",
        )
