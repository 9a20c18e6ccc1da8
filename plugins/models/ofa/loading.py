"""Reading OFA checkpoints into :class:`OFAModel`, strictly.

Two layouts are understood:

* the Hugging Face port (a folder with ``config.json`` and ``model.safetensors`` or
  ``pytorch_model.bin``, possibly sharded, or a bare weights file), keys with or without a
  leading ``model.``;
* fairseq ``.pt`` files of the official repository (e.g. the VQA fine-tuned ones), whose
  NormFormer and cross-attention modules carry older names.

Everything goes through ``torch.load(weights_only=True)`` or safetensors. The five index tables
(relative-position buckets, code position ids) are dropped from the input and recomputed; the
tied token embedding is checked for consistency and loaded once. Any other difference between
checkpoint and model raises :class:`OFACheckpointError` listing what is missing, unexpected or
mis-shaped.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vlmbench_plugins.models.key_listing import listed_section

from .config import RESNET_LAYERS, OFAConfig
from .modeling import INDEX_BUFFERS, OFAModel

EMBED_KEY = "encoder.embed_tokens.weight"
DECODER_EMBED_KEY = "decoder.embed_tokens.weight"
OUTPUT_PROJECTION_KEY = "decoder.output_projection.weight"

# fairseq module names (one path component each) → names used here and in the port.
FAIRSEQ_RENAMES = {
    "attn_ln": "self_attn_mid_layer_norm",
    "self_attn_ln": "self_attn_mid_layer_norm",
    "cross_attn_ln": "cross_attn_mid_layer_norm",
    "ffn_layernorm": "ffn_layer_norm",
    "encoder_attn": "cross_attn",
    "encoder_attn_layer_norm": "cross_attn_layer_norm",
}

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

# Classes that appear in the metadata of fairseq checkpoints and only rebuild plain values;
# anything else in a pickle is refused rather than executed.
_INERT_GLOBALS = re.compile(
    r"^(argparse\.Namespace"
    r"|numpy\.dtype"
    r"|numpy\.ndarray"
    r"|numpy\.(_core|core)\.multiarray\.(scalar|_reconstruct)"
    r"|numpy\.dtypes\.\w+DType)$"
)


class OFACheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message says how."""


@dataclass
class StateDictDiff:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def render(self, limit: int = 20) -> str:
        shapes = [
            f"{key}: checkpoint {list(got)} vs model {list(want)}" for key, got, want in self.mismatched
        ]
        lines = [
            *listed_section("missing from checkpoint", self.missing, limit),
            *listed_section("unexpected in checkpoint", self.unexpected, limit),
            *listed_section("shape mismatches", shapes, limit),
        ]
        return "\n".join(lines) if lines else "state dict matches"


@dataclass
class RawCheckpoint:
    """Weights as read from disk, before renaming, plus whatever configuration came with them."""

    state_dict: dict[str, Tensor]
    source_format: str  # "safetensors", "torch" or "fairseq"
    config: OFAConfig | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# reading files


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; if the pickle names classes outside torch's allowlist
    and every one of them is a known inert container, retry allowing exactly those."""
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            raise OFACheckpointError(f"{path}: cannot be read with weights_only=True ({error})") from error
        refused = [name for name in names if not _INERT_GLOBALS.match(name)]
        if refused or not names:
            raise OFACheckpointError(
                f"{path}: the pickle references classes that weights-only loading refuses: "
                f"{', '.join(refused or ['(unknown)'])}. Re-save just the model weights (e.g. as "
                "safetensors) in an environment you trust."
            ) from error
        allowed = []
        for name in names:
            module, _, attr = name.rpartition(".")
            allowed.append(getattr(importlib.import_module(module), attr))
        if any(name.startswith("numpy.") for name in names):
            # A pickled numpy dtype rebuilds through its DType class, which the scan above
            # does not list; these classes only describe dtypes.
            dtypes = importlib.import_module("numpy.dtypes")
            allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _load_weights_file(path: Path) -> dict[str, Tensor]:
    if path.name.endswith(".index.json"):
        with open(path, encoding="utf-8") as handle:
            shards = sorted(set(json.load(handle)["weight_map"].values()))
        merged: dict[str, Tensor] = {}
        for shard in shards:
            merged.update(_load_weights_file(path.parent / shard))
        return merged
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    loaded = _torch_load(path)
    if not isinstance(loaded, Mapping):
        raise OFACheckpointError(f"{path}: expected a state dict, found {type(loaded).__name__}")
    return dict(loaded)


def _fairseq_args(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    cfg = checkpoint.get("cfg")
    if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping):
        return dict(cfg["model"])
    if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), argparse.Namespace):
        return vars(cfg["model"])
    args = checkpoint.get("args")
    if isinstance(args, argparse.Namespace):
        return vars(args)
    if isinstance(args, Mapping):
        return dict(args)
    return None


def _fairseq_task(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    cfg = checkpoint.get("cfg")
    task = cfg.get("task") if isinstance(cfg, Mapping) else None
    if isinstance(task, argparse.Namespace):
        return vars(task)
    return dict(task) if isinstance(task, Mapping) else {}


def read_checkpoint(path: str | Path) -> RawCheckpoint:
    """Read a hub-style folder, a weights file (.safetensors/.bin/.pt) or a fairseq checkpoint."""
    path = Path(path)
    if path.is_dir():
        config_path = path / "config.json"
        config = OFAConfig.from_json_file(config_path) if config_path.exists() else None
        for name in WEIGHT_FILES:
            if (path / name).exists():
                fmt = "safetensors" if "safetensors" in name else "torch"
                return RawCheckpoint(_load_weights_file(path / name), fmt, config)
        raise OFACheckpointError(f"{path}: no weights file found (looked for {', '.join(WEIGHT_FILES)})")
    if not path.exists():
        raise OFACheckpointError(f"{path}: no such file or folder")
    if path.suffix == ".safetensors" or path.name.endswith(".index.json"):
        fmt = "safetensors" if "safetensors" in path.name else "torch"
        return RawCheckpoint(_load_weights_file(path), fmt)
    loaded = _torch_load(path)
    if not isinstance(loaded, Mapping):
        raise OFACheckpointError(f"{path}: expected a dict, found {type(loaded).__name__}")
    model = loaded.get("model")
    if isinstance(model, Mapping) and ("cfg" in loaded or "args" in loaded):
        args = _fairseq_args(loaded)
        task = _fairseq_task(loaded)
        metadata = {"patch_image_size": task["patch_image_size"]} if "patch_image_size" in task else {}
        config = OFAConfig.from_fairseq_args(args) if args else None
        return RawCheckpoint(dict(model), "fairseq", config, metadata)
    return RawCheckpoint(dict(loaded), "torch")


# ---------------------------------------------------------------------------------------------
# key normalisation and checking


def _rename_key(key: str) -> str:
    if key.startswith("model."):
        key = key[len("model.") :]
    return ".".join(FAIRSEQ_RENAMES.get(part, part) for part in key.split("."))


def _is_index_buffer(key: str) -> bool:
    side, _, name = key.partition(".")
    return side in ("encoder", "decoder") and name in INDEX_BUFFERS


def _same(a: Tensor, b: Tensor) -> bool:
    if a.shape != b.shape:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return torch.equal(a, b)


def normalize_state_dict(
    state_dict: Mapping[str, Tensor], share_output_projection: bool | None = True
) -> dict[str, Tensor]:
    """Port-style keys: leading ``model.`` stripped, fairseq names translated, ``*.version``
    and index tables dropped, the tied embedding reduced to ``encoder.embed_tokens.weight``.

    ``share_output_projection``: True (the OFA default) requires the output projection to equal
    the token embedding; False keeps it as a separate weight; None decides by comparing them.
    """
    renamed: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new_key = _rename_key(key)
        if new_key.endswith(".version") or new_key == "version" or _is_index_buffer(new_key):
            continue
        if new_key in renamed:
            raise OFACheckpointError(f"two checkpoint keys map to {new_key!r} (one of them is {key!r})")
        renamed[new_key] = value

    # Encoder and decoder always share one embedding; the output projection usually does too.
    tied = [DECODER_EMBED_KEY]
    projection = renamed.get(OUTPUT_PROJECTION_KEY)
    reference = renamed.get(EMBED_KEY, renamed.get(DECODER_EMBED_KEY))
    if share_output_projection is None:
        share_output_projection = projection is None or reference is None or _same(projection, reference)
    if share_output_projection:
        tied.append(OUTPUT_PROJECTION_KEY)
    present = [key for key in [EMBED_KEY, *tied] if key in renamed]
    if present:
        first = renamed[present[0]]
        for key in present[1:]:
            if not _same(first, renamed[key]):
                raise OFACheckpointError(
                    f"tied embeddings differ: {present[0]} and {key} should hold the same tensor "
                    f"(shapes {list(first.shape)} and {list(renamed[key].shape)})"
                )
        for key in present:
            del renamed[key]
        renamed[EMBED_KEY] = first
    return renamed


def _aliases(model: OFAModel) -> list[str]:
    aliases = [DECODER_EMBED_KEY]
    if model.config.share_decoder_input_output_embed:
        aliases.append(OUTPUT_PROJECTION_KEY)
    return aliases


def diff_state_dict(model: OFAModel, state_dict: Mapping[str, Tensor]) -> StateDictDiff:
    """Compare a normalised state dict with the model's own (tied aliases excluded).

    A missing BatchNorm ``num_batches_tracked`` counter is not reported: it does not affect
    inference and frozen-BatchNorm checkpoints do not store it.
    """
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    for alias in _aliases(model):
        expected.pop(alias, None)
    diff = StateDictDiff()
    for key in expected:
        if key not in state_dict and not key.endswith("num_batches_tracked"):
            diff.missing.append(key)
    for key, value in state_dict.items():
        if key not in expected:
            diff.unexpected.append(key)
        elif tuple(value.shape) != expected[key]:
            diff.mismatched.append((key, tuple(value.shape), expected[key]))
    return diff


def load_weights(
    model: OFAModel,
    state_dict: Mapping[str, Tensor],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> OFAModel:
    """Strictly load a (raw or normalised) state dict into ``model``.

    A model built on the meta device receives the checkpoint tensors themselves (converted to
    ``dtype``/``device``), so large checkpoints are never held twice.
    """
    normalized = normalize_state_dict(state_dict, model.config.share_decoder_input_output_embed)
    diff = diff_state_dict(model, normalized)
    if not diff.ok:
        config = model.config
        raise OFACheckpointError(
            f"checkpoint does not fit the OFA model (d_model={config.d_model}, "
            f"{config.encoder_layers}+{config.decoder_layers} layers, vocab {config.vocab_size}, "
            f"ResNet stages {list(config.resnet_blocks)}):\n{diff.render()}"
        )
    own = model.state_dict()
    full = dict(normalized)
    for alias in _aliases(model):
        full[alias] = normalized[EMBED_KEY]
    for key in own:
        if key.endswith("num_batches_tracked") and key not in full:
            full[key] = torch.zeros((), dtype=torch.long)

    on_meta = any(parameter.is_meta for parameter in model.parameters())
    if on_meta:
        target = torch.device(device or "cpu")

        def convert(value: Tensor) -> Tensor:
            if value.is_floating_point() and dtype is not None:
                value = value.to(dtype)
            return value.to(target)

        # Convert each distinct tensor once so the tied embedding stays a single tensor.
        converted: dict[int, Tensor] = {}
        for key, value in full.items():
            if id(value) not in converted:
                converted[id(value)] = convert(value)
            full[key] = converted[id(value)]
        model.load_state_dict(full, strict=True, assign=True)
        model.tie_weights()
        model.rebuild_index_buffers(target)
    else:
        model.load_state_dict(full, strict=True)
        model.tie_weights()
        if dtype is not None or device is not None:
            model.to(device=device, dtype=dtype)
    return model


# ---------------------------------------------------------------------------------------------
# configuration from weights


def _count_indexed(keys: list[str], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(match.group(1)) for key in keys if (match := pattern.match(key))}
    return max(found) + 1 if found else 0


def infer_config(state_dict: Mapping[str, Tensor], base: OFAConfig | None = None) -> OFAConfig:
    """Architecture read off a *normalised* state dict's keys and shapes; fields that weights
    cannot reveal (activation, pre/post norm order when ambiguous, code image size) come from
    ``base`` (default: the port defaults)."""
    base = base or OFAConfig()
    keys = list(state_dict)
    try:
        vocab, dim = state_dict[EMBED_KEY].shape
        heads_enc = state_dict["encoder.token_rel_pos_table_list.0.weight"].shape[1]
        heads_dec = state_dict["decoder.token_rel_pos_table_list.0.weight"].shape[1]
        token_rows = state_dict["encoder.token_rel_pos_table_list.0.weight"].shape[0]
        image_rows = state_dict["encoder.image_rel_pos_table_list.0.weight"].shape[0]
        positions = state_dict["encoder.embed_positions.weight"].shape[0]
        ffn_enc = state_dict["encoder.layers.0.fc1.weight"].shape[0]
        ffn_dec = state_dict["decoder.layers.0.fc1.weight"].shape[0]
    except KeyError as error:
        raise OFACheckpointError(f"cannot infer the OFA configuration: {error.args[0]} is missing") from error
    blocks = tuple(_count_indexed(keys, f"encoder.embed_images.layer{stage}.") for stage in (1, 2, 3))
    names = {layers: name for name, layers in RESNET_LAYERS.items() if name != "resnet34"}
    image_bucket = (math.isqrt(image_rows - 3) + 1) // 2
    projection = state_dict.get(OUTPUT_PROJECTION_KEY)
    return dataclasses.replace(
        base,
        vocab_size=vocab,
        d_model=dim,
        encoder_layers=_count_indexed(keys, "encoder.layers."),
        decoder_layers=_count_indexed(keys, "decoder.layers."),
        encoder_attention_heads=heads_enc,
        decoder_attention_heads=heads_dec,
        encoder_ffn_dim=ffn_enc,
        decoder_ffn_dim=ffn_dec,
        max_position_embeddings=positions - 2,
        token_bucket_size=(token_rows + 1) // 2,
        image_bucket_size=image_bucket,
        normformer="encoder.layers.0.self_attn.c_attn" in state_dict,
        layernorm_embedding="encoder.layernorm_embedding.weight" in state_dict,
        patch_layernorm_embedding="encoder.patch_layernorm_embedding.weight" in state_dict,
        add_type_embedding="encoder.type_embedding.weight" in state_dict,
        code_layernorm_embedding="decoder.code_layernorm_embedding.weight" in state_dict,
        encoder_normalize_before="encoder.layer_norm.weight" in state_dict,
        decoder_normalize_before="decoder.layer_norm.weight" in state_dict,
        share_decoder_input_output_embed=projection is None,
        resnet_type=names.get(blocks, base.resnet_type),
        resnet_layers=None if blocks in names else blocks,
        extra={},
    )


# ---------------------------------------------------------------------------------------------
# entry point


@dataclass
class LoadedOFA:
    model: OFAModel
    source_format: str  # "safetensors", "torch" or "fairseq"
    metadata: dict[str, Any]


def load_ofa(
    path: str | Path,
    config: OFAConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedOFA:
    """Load an OFA checkpoint (hub folder, weights file or fairseq ``.pt``) in eval mode.

    The configuration is, in order of preference: ``config``; the folder's ``config.json``;
    the architecture read off the weights (with fairseq's stored arguments for the rest).
    """
    raw = read_checkpoint(path)
    if config is None and raw.config is not None and raw.source_format != "fairseq":
        config = raw.config
    if config is None:
        normalized = normalize_state_dict(raw.state_dict, share_output_projection=None)
        config = infer_config(normalized, base=raw.config)
    with torch.device("meta"):
        model = OFAModel(config)
    load_weights(model, raw.state_dict, dtype=dtype, device=device)
    return LoadedOFA(model.eval(), raw.source_format, raw.metadata)


def load_ofa_model(path: str | Path, config: OFAConfig | None = None, **options: Any) -> OFAModel:
    """:func:`load_ofa` (the same ``device`` and ``dtype`` options) without the provenance."""
    return load_ofa(path, config, **options).model
