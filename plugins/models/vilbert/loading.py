"""Load original ViLBERT checkpoints (``multi_task_model.bin``, ``pretrained_model.bin``) and safetensors.

Loading is strict: every key of the model must be in the checkpoint with the same shape and the
checkpoint may hold nothing else. (The original loader was not strict, which silently left heads
randomly initialised when a checkpoint did not match.) A mismatch raises ``CheckpointMismatchError``
whose message lists the missing, unexpected and shape-mismatched keys.

Quirks of the original checkpoints handled here:
- LayerNorm parameters saved under their old TensorFlow names ``gamma`` / ``beta``;
- ``cls.predictions.decoder.weight`` is the word-embedding matrix: stored under both names in ``.bin``
  files, under one name in our safetensors files (safetensors cannot hold two views of one tensor);
- weights saved from ``DataParallel`` carry a ``module.`` prefix.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlmbench.api import PicklableError
from vlmbench_plugins.models.key_listing import listed_section

from .config import VilbertConfig, coerce_config
from .modeling import VARIANTS, build_model

WORD_EMBEDDINGS_KEY = "bert.embeddings.word_embeddings.weight"
TIED_DECODER_KEY = "cls.predictions.decoder.weight"
TASK_EMBEDDINGS_KEY = "bert.embeddings.task_embeddings.weight"
# A key only the multi-task layout has; its presence tells the two layouts apart.
MULTITASK_MARKER = "vil_prediction.logit_fc.0.weight"
SAFETENSORS_CONFIG_KEY = "vilbert_config"
SAFETENSORS_VARIANT_KEY = "vilbert_variant"
_SAFETENSORS_SUFFIXES = (".safetensors",)


class CheckpointError(PicklableError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


@dataclass
class StateDictDiff:
    """Differences between the keys/shapes a model expects and those a checkpoint holds."""

    missing: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    unexpected: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self) -> str:
        return (
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.shape_mismatch)} shape-mismatched keys"
        )

    def render(self, limit: int = 12) -> str:
        """Human-readable listing; each section shows at most ``limit`` keys plus per-module counts."""
        lines = [self.summary()]
        sections: list[tuple[str, list[str], list[str]]] = [
            ("missing from the checkpoint", [f"{k}  {_fmt(s)}" for k, s in self.missing], [k for k, _ in self.missing]),
            ("unexpected in the checkpoint", [f"{k}  {_fmt(s)}" for k, s in self.unexpected], [k for k, _ in self.unexpected]),
            (
                "shape mismatch (checkpoint vs model)",
                [f"{k}  {_fmt(c)} vs {_fmt(m)}" for k, c, m in self.shape_mismatch],
                [k for k, _, _ in self.shape_mismatch],
            ),
        ]  # fmt: skip
        for title, rows, keys in sections:
            lines += listed_section(title, rows, limit, more=f"; by module: {_module_counts(keys)}")
        return "\n".join(lines)


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _module_group(key: str) -> str:
    parts = key.split(".")
    if key.startswith("bert.encoder."):
        return ".".join(parts[:4])  # one transformer or co-attention layer
    if key.startswith(("bert.", "cls.")):
        return ".".join(parts[:2])
    return parts[0]  # a task head


def _module_counts(keys: Sequence[str]) -> str:
    counts = Counter(_module_group(k) for k in keys)
    return ", ".join(f"{name} x{n}" for name, n in counts.most_common(8))


class CheckpointMismatchError(CheckpointError):
    def __init__(self, diff: StateDictDiff, target: str, hint: str | None = None) -> None:
        self.diff = diff
        message = f"checkpoint does not match {target}: {diff.render()}"
        if hint:
            message += f"\nhint: {hint}"
        super().__init__(message)


# -- reading ---------------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read raw tensors from a ``.bin``/``.pt``/``.pth`` (``weights_only``) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ViLBERT checkpoint not found: {path}")
    if path.suffix in _SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles with arbitrary objects are refused by weights_only
        raise CheckpointError(f"cannot read {path} as a weights-only PyTorch checkpoint: {exc}") from exc
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    # training scripts sometimes save {"model": state_dict, "optimizer": ...}
    if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                return _unwrap(obj[key], path)
        raise CheckpointError(f"{path} is not a state dict (top-level keys: {sorted(map(str, obj))[:10]})")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def stored_config(weights: Path) -> VilbertConfig | None:
    """The config ``save_safetensors`` stores in a .safetensors file's metadata, if any."""
    if weights.suffix != ".safetensors":
        return None
    stored = read_safetensors_metadata(weights).get(SAFETENSORS_CONFIG_KEY)
    return VilbertConfig.from_dict(json.loads(stored)) if stored else None


def normalize_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Apply the renamings that old checkpoints need: ``module.`` prefix, ``gamma``/``beta``."""
    keys = list(state_dict)
    strip = bool(keys) and all(k.startswith("module.") for k in keys)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = key[len("module.") :] if strip else key
        if new.endswith(".gamma"):
            new = new[: -len("gamma")] + "weight"
        elif new.endswith(".beta"):
            new = new[: -len("beta")] + "bias"
        if new in out:
            raise CheckpointError(f"checkpoint holds {new!r} twice (once under an old name)")
        out[new] = value
    return out


def fill_tied_weights(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Make sure both names of the tied decoder/word-embedding matrix are present and agree."""
    has_words, has_decoder = WORD_EMBEDDINGS_KEY in state_dict, TIED_DECODER_KEY in state_dict
    if has_words and not has_decoder:
        state_dict[TIED_DECODER_KEY] = state_dict[WORD_EMBEDDINGS_KEY]
    elif has_decoder and not has_words:
        state_dict[WORD_EMBEDDINGS_KEY] = state_dict[TIED_DECODER_KEY]
    elif has_words and has_decoder:
        words, decoder = state_dict[WORD_EMBEDDINGS_KEY], state_dict[TIED_DECODER_KEY]
        comparable = words.shape == decoder.shape and "meta" not in (words.device.type, decoder.device.type)
        same_storage = (
            comparable and words.data_ptr() == decoder.data_ptr() and words.stride() == decoder.stride()
        )
        if comparable and not same_storage and not torch.equal(words, decoder):
            raise CheckpointError(
                f"{TIED_DECODER_KEY} differs from {WORD_EMBEDDINGS_KEY}; the model ties them, so this "
                "checkpoint was not saved from a tied ViLBERT"
            )
    return state_dict


def detect_variant(keys: Sequence[str] | Mapping[str, Any]) -> str:
    return "multitask" if MULTITASK_MARKER in keys else "pretrained"


# -- strict loading --------------------------------------------------------------------------------


def diff_state_dict(expected: Mapping[str, Sequence[int]], actual: Mapping[str, Any]) -> StateDictDiff:
    """Compare ``{key: shape}`` of a model with a checkpoint (tensors or shapes)."""

    def shape(value: Any) -> tuple[int, ...]:
        return tuple(int(s) for s in (value.shape if hasattr(value, "shape") else value))

    diff = StateDictDiff()
    for key, exp in expected.items():
        if key not in actual:
            diff.missing.append((key, shape(exp)))
        elif shape(actual[key]) != shape(exp):
            diff.shape_mismatch.append((key, shape(actual[key]), shape(exp)))
    diff.unexpected = [(k, shape(v)) for k, v in actual.items() if k not in expected]
    return diff


def _heads_only(keys: set[str]) -> bool:
    return any(not k.startswith(("bert.", "cls.")) for k in keys) and all(
        not k.startswith(("bert.", "cls.")) or k == TASK_EMBEDDINGS_KEY for k in keys
    )


def _hint(diff: StateDictDiff) -> str | None:
    missing = {k for k, _ in diff.missing}
    unexpected = {k for k, _ in diff.unexpected}
    if _heads_only(missing) and not unexpected and not diff.shape_mismatch:
        return "the task heads are missing: this looks like pretrained_model.bin; load it with variant='pretrained'"
    if _heads_only(unexpected) and not missing and not diff.shape_mismatch:
        return "the checkpoint has task heads: this looks like multi_task_model.bin; use variant='multitask'"
    if missing == {TASK_EMBEDDINGS_KEY}:
        return "the model expects task tokens but the checkpoint has none: set task_specific_tokens=False"
    if unexpected == {TASK_EMBEDDINGS_KEY}:
        return "the checkpoint has task tokens: set task_specific_tokens=True"
    if diff.shape_mismatch:
        return "sizes differ: is the config the one the checkpoint was trained with?"
    return None


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Tensor], assign: bool = False) -> None:
    """Normalise, check and load; raises CheckpointMismatchError before touching the model."""
    state = fill_tied_weights(normalize_state_dict(state_dict))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    diff = diff_state_dict(expected, state)
    if not diff.ok:
        raise CheckpointMismatchError(diff, type(model).__name__, _hint(diff))
    model.load_state_dict(state, strict=True, assign=assign)
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # assign=True replaces both parameters with separate tensors


def load_vilbert(
    path: str | Path,
    config: VilbertConfig | Mapping[str, Any] | str | Path | None = None,
    variant: str = "auto",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build a ViLBERT of the checkpoint's layout and load it strictly; returns the model in eval mode.

    ``config``: a VilbertConfig, an official-style dict, a config JSON path, or None. With None the
    config stored in a safetensors file written by ``save_safetensors`` is used, else the base config
    (``bert_base_6layer_6conect``). ``variant``: ``multitask``, ``pretrained`` or ``auto`` (from the keys).
    """
    path = Path(path)
    state = read_state_dict(path)
    metadata = read_safetensors_metadata(path) if path.suffix in _SAFETENSORS_SUFFIXES else {}
    if config is None and SAFETENSORS_CONFIG_KEY in metadata:
        config = json.loads(metadata[SAFETENSORS_CONFIG_KEY])
    cfg = coerce_config(config)
    if variant == "auto":
        variant = metadata.get(SAFETENSORS_VARIANT_KEY) or detect_variant(normalize_state_dict(state))
    if variant not in VARIANTS:
        raise ValueError(f"unknown ViLBERT variant {variant!r}; choose one of {sorted(VARIANTS)}")
    # Build without allocating or initialising weights; the checkpoint supplies every tensor.
    with torch.device("meta"):
        model = build_model(cfg, variant)
    try:
        load_state_dict_strict(model, state, assign=True)
    except CheckpointMismatchError as exc:
        raise CheckpointMismatchError(
            exc.diff, f"{type(model).__name__} built from {path.name}", _hint(exc.diff)
        ) from None
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device=device)
    return model.eval()


def save_safetensors(model: nn.Module, path: str | Path, variant: str | None = None) -> Path:
    """Write the model's weights (tied decoder stored once) with its config and variant as metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != TIED_DECODER_KEY}
    if variant is None:
        variant = detect_variant(state)
    metadata = {SAFETENSORS_VARIANT_KEY: variant}
    config = getattr(model, "config", None)
    if isinstance(config, VilbertConfig):
        metadata[SAFETENSORS_CONFIG_KEY] = config.to_json_string()
    path = Path(path)
    save_file(state, str(path), metadata=metadata)
    return path
