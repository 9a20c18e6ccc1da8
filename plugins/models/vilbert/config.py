"""ViLBERT configuration: the official JSON keys as a typed dataclass.

Field names are the official ones so that a config JSON shipped with a checkpoint (for example
``bert_base_6layer_6conect.json``) can be read as-is. Defaults are the values of that base
configuration as used by the 12-in-1 multi-task checkpoint (task tokens on, 1601 visual targets).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Number of rows of the task-token embedding table; fixed in the original model, not a config key.
NUM_TASK_EMBEDDINGS = 20
# Size of the VQA and GQA answer heads of the multi-task model; fixed in the original model.
NUM_VQA_ANSWERS = 3129
NUM_GQA_ANSWERS = 1533

# Keys that appear in official config files (or were set on the config by the official training
# scripts) but change nothing in an inference forward pass. They are accepted and kept for round trips.
INERT_KEYS = frozenset(
    {
        "bi_intermediate_size",  # declared in the JSON, never read by the model
        "bi_attention_type",
        "pooling_method",  # superseded by fusion_method in the model code
        "fixed_t_layer",  # only freezes gradients of the first text layers
        "fixed_v_layer",
        "objective",
        "num_negative",
        "visualization",
        # keys of the RoBERTa variant's JSON that configure nothing here
        "finetuning_task",
        "layer_norm_eps",
        "num_labels",
        "output_attentions",
        "output_hidden_states",
        "torchscript",
    }
)

_ACTIVATIONS = ("gelu", "relu", "swish")
_FUSIONS = ("mul", "sum")


class ConfigError(ValueError):
    """A ViLBERT configuration that cannot describe a model this package builds."""


@dataclass(frozen=True)
class VilbertConfig:
    # text stream (BERT-base)
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    # image stream
    v_feature_size: int = 2048
    v_target_size: int = 1601
    v_hidden_size: int = 1024
    v_num_hidden_layers: int = 6
    v_num_attention_heads: int = 8
    v_intermediate_size: int = 1024
    v_attention_probs_dropout_prob: float = 0.1
    v_hidden_act: str = "gelu"
    v_hidden_dropout_prob: float = 0.1
    v_initializer_range: float = 0.02
    # co-attention
    bi_hidden_size: int = 1024
    bi_num_attention_heads: int = 8
    v_biattention_id: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    t_biattention_id: tuple[int, ...] = (6, 7, 8, 9, 10, 11)
    with_coattention: bool = True
    # heads and options
    fusion_method: str = "mul"
    visual_target: int = 0
    task_specific_tokens: bool = True
    dynamic_attention: bool = False
    # options of the original code that this implementation rejects when switched on
    model: str = "bert"
    fast_mode: bool = False
    in_batch_pairs: bool = False
    # accepted keys that do not affect the forward pass (see INERT_KEYS)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so the frozen config stays hashable.
        object.__setattr__(self, "v_biattention_id", tuple(int(i) for i in self.v_biattention_id))
        object.__setattr__(self, "t_biattention_id", tuple(int(i) for i in self.t_biattention_id))
        object.__setattr__(self, "extra", dict(self.extra))
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for configurations the original model would reject or we do not support."""
        problems: list[str] = []
        if len(self.v_biattention_id) != len(self.t_biattention_id):
            problems.append(
                f"v_biattention_id {list(self.v_biattention_id)} and t_biattention_id "
                f"{list(self.t_biattention_id)} must have the same length"
            )
        if self.v_biattention_id and max(self.v_biattention_id) >= self.v_num_hidden_layers:
            problems.append(f"v_biattention_id must index one of the {self.v_num_hidden_layers} image layers")
        if self.t_biattention_id and max(self.t_biattention_id) >= self.num_hidden_layers:
            problems.append(f"t_biattention_id must index one of the {self.num_hidden_layers} text layers")
        for name, size, heads in (
            ("hidden_size", self.hidden_size, self.num_attention_heads),
            ("v_hidden_size", self.v_hidden_size, self.v_num_attention_heads),
            ("bi_hidden_size", self.bi_hidden_size, self.bi_num_attention_heads),
        ):
            if heads <= 0 or size % heads:
                problems.append(f"{name}={size} is not a multiple of its {heads} attention heads")
        for name in ("hidden_act", "v_hidden_act"):
            if getattr(self, name) not in _ACTIVATIONS:
                problems.append(f"{name}={getattr(self, name)!r} is not one of {_ACTIVATIONS}")
        if self.fusion_method not in _FUSIONS:
            problems.append(f"fusion_method={self.fusion_method!r} is not one of {_FUSIONS}")
        if self.model != "bert":
            problems.append(f"model={self.model!r}: only the BERT text stream is implemented")
        if self.fast_mode or self.in_batch_pairs:
            problems.append("fast_mode / in_batch_pairs are retrieval-training options and are not supported")
        if problems:
            raise ConfigError("invalid ViLBERT config: " + "; ".join(problems))

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> VilbertConfig:
        """Build from a dict with the official JSON keys; missing keys take the base values.

        Keys that the original code accepts but that do not change inference are kept in ``extra``;
        any other key is an error, so that a typo cannot silently fall back to a default.
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in values.items():
            if key in known:
                kwargs[key] = value
            elif key in INERT_KEYS:
                extra[key] = value
            elif key == "extra" and isinstance(value, Mapping):
                extra.update(value)
            else:
                unknown.append(key)
        if unknown:
            raise ConfigError(f"unknown ViLBERT config keys: {sorted(unknown)}")
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json_file(cls, path: str | Path) -> VilbertConfig:
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    @classmethod
    def base(cls, **overrides: Any) -> VilbertConfig:
        """``bert_base_6layer_6conect`` as used by the multi-task checkpoint."""
        return cls.from_dict(overrides)

    def to_dict(self) -> dict[str, Any]:
        """Official-style dict (lists, not tuples); inert keys are merged back in."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out.update(self.extra)
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **changes: Any) -> VilbertConfig:
        return dataclasses.replace(self, **changes)


def coerce_config(config: VilbertConfig | Mapping[str, Any] | str | Path | None) -> VilbertConfig:
    """Accept a config object, an official-style dict, a JSON path, or None (base config)."""
    if config is None:
        return VilbertConfig.base()
    if isinstance(config, VilbertConfig):
        return config
    if isinstance(config, Mapping):
        return VilbertConfig.from_dict(config)
    return VilbertConfig.from_json_file(config)
