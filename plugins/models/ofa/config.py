"""OFA architecture configuration: one dataclass, five published presets, and readers for the
config.json of the Hugging Face port and for fairseq model arguments."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Blocks per ResNet stage (stages 1-3 only: the trunk stops at stride 16). The port names its
# two-stage-cheaper trunks "resnet18"/"resnet34" but still builds Bottleneck blocks, so these are
# not torchvision's BasicBlock ResNet-18/34.
RESNET_LAYERS: dict[str, tuple[int, int, int]] = {
    "resnet18": (2, 2, 2),
    "resnet34": (3, 4, 6),
    "resnet50": (3, 4, 6),
    "resnet101": (3, 4, 23),
    "resnet152": (3, 8, 36),
}

# Keys written by transformers' PretrainedConfig (or by training-only options) that do not change
# the inference graph; accepted and ignored.
_IGNORED_KEYS = frozenset(
    {
        "architectures",
        "model_type",
        "torch_dtype",
        "dtype",
        "transformers_version",
        "use_cache",
        "is_encoder_decoder",
        "init_std",
        "classifier_dropout",
        "encoder_layerdrop",
        "decoder_layerdrop",
        "encoder_drop_path_rate",
        "decoder_drop_path_rate",
        "resnet_drop_path_rate",
        "resnet_model_path",
        "num_hidden_layers",
        "decoder_start_token_id",
        "forced_eos_token_id",
        "forced_bos_token_id",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "id2label",
        "label2id",
        "name_or_path",
        "_name_or_path",
    }
)


@dataclass
class OFAConfig:
    """Hyper-parameters of an OFA encoder-decoder.

    Field names and defaults follow the Hugging Face port's ``OFAConfig`` so that a partial
    ``config.json`` means the same thing here as there.
    """

    vocab_size: int = 59457
    max_position_embeddings: int = 1024
    d_model: int = 512
    encoder_layers: int = 4
    decoder_layers: int = 4
    encoder_attention_heads: int = 8
    decoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    activation_function: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    scale_embedding: bool = False
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    encoder_normalize_before: bool = True
    decoder_normalize_before: bool = True
    normformer: bool = True
    layernorm_embedding: bool = True
    patch_layernorm_embedding: bool = True
    resnet_type: str = "resnet101"
    # Explicit blocks per stage; overrides ``resnet_type`` (handy for tiny test models).
    resnet_layers: tuple[int, int, int] | None = None
    token_bucket_size: int = 256
    image_bucket_size: int = 42
    add_type_embedding: bool = True
    share_decoder_input_output_embed: bool = True
    attn_scale_factor: float = 2.0
    code_layernorm_embedding: bool = True
    code_image_size: int = 128
    entangle_position_embedding: bool = False
    # Unrecognised config.json keys, kept for provenance only.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.resnet_layers is not None:
            self.resnet_layers = tuple(int(n) for n in self.resnet_layers)  # type: ignore[assignment]
            if len(self.resnet_layers) != 3:
                raise ValueError(f"resnet_layers needs three stage depths, got {self.resnet_layers}")
        elif self.resnet_type not in RESNET_LAYERS:
            raise ValueError(f"unknown resnet_type {self.resnet_type!r}; known: {sorted(RESNET_LAYERS)}")
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            if self.d_model % heads:
                raise ValueError(f"d_model {self.d_model} is not divisible by {side}_attention_heads {heads}")

    @property
    def resnet_blocks(self) -> tuple[int, int, int]:
        return self.resnet_layers if self.resnet_layers is not None else RESNET_LAYERS[self.resnet_type]

    # -- constructors ---------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> OFAConfig:
        """One of the published sizes (tiny, medium, base, large, huge), optionally modified."""
        key = name.lower().removeprefix("ofa-").removeprefix("ofa_")
        if key not in PRESETS:
            raise ValueError(f"unknown OFA size {name!r}; known: {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[key], **{"extra": {}, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> OFAConfig:
        """Build from a port-style ``config.json`` mapping; unknown keys are kept in ``extra``."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in values.items() if k in names}
        extra = {k: v for k, v in values.items() if k not in names and k not in _IGNORED_KEYS}
        if "resnet_layers" in known and known["resnet_layers"] is not None:
            known["resnet_layers"] = tuple(known["resnet_layers"])
        return cls(**known, extra=extra)

    @classmethod
    def from_json_file(cls, path: str | Path) -> OFAConfig:
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    @classmethod
    def from_fairseq_args(cls, args: dict[str, Any]) -> OFAConfig:
        """Translate fairseq model arguments (``cfg["model"]`` or a Namespace's ``vars``)."""
        translated: dict[str, Any] = {}
        mapping = {
            "encoder_embed_dim": "d_model",
            "encoder_layers": "encoder_layers",
            "decoder_layers": "decoder_layers",
            "encoder_attention_heads": "encoder_attention_heads",
            "decoder_attention_heads": "decoder_attention_heads",
            "encoder_ffn_embed_dim": "encoder_ffn_dim",
            "decoder_ffn_embed_dim": "decoder_ffn_dim",
            "activation_fn": "activation_function",
            "dropout": "dropout",
            "attention_dropout": "attention_dropout",
            "activation_dropout": "activation_dropout",
            "encoder_normalize_before": "encoder_normalize_before",
            "decoder_normalize_before": "decoder_normalize_before",
            "layernorm_embedding": "layernorm_embedding",
            "patch_layernorm_embedding": "patch_layernorm_embedding",
            "resnet_type": "resnet_type",
            "token_bucket_size": "token_bucket_size",
            "image_bucket_size": "image_bucket_size",
            "add_type_embedding": "add_type_embedding",
            "share_decoder_input_output_embed": "share_decoder_input_output_embed",
            "attn_scale_factor": "attn_scale_factor",
            "code_layernorm_embedding": "code_layernorm_embedding",
            "code_image_size": "code_image_size",
            "entangle_position_embedding": "entangle_position_embedding",
            "max_source_positions": "max_position_embeddings",
        }
        for source, target in mapping.items():
            if args.get(source) is not None:
                translated[target] = args[source]
        if args.get("no_scale_embedding") is not None:
            translated["scale_embedding"] = not args["no_scale_embedding"]
        # fairseq spells NormFormer as three switches; the port folds them into one.
        if args.get("scale_attn") is not None:
            translated["normformer"] = bool(args["scale_attn"])
        return cls.from_dict(translated)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values.pop("extra")
        if values["resnet_layers"] is not None:
            values["resnet_layers"] = list(values["resnet_layers"])
        return values


def _preset(d_model: int, layers: tuple[int, int], heads: int, resnet: str) -> OFAConfig:
    return OFAConfig(
        d_model=d_model,
        encoder_layers=layers[0],
        decoder_layers=layers[1],
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=4 * d_model,
        decoder_ffn_dim=4 * d_model,
        resnet_type=resnet,
    )


PRESETS: dict[str, OFAConfig] = {
    "tiny": _preset(256, (4, 4), 4, "resnet50"),
    "medium": _preset(512, (4, 4), 8, "resnet101"),
    "base": _preset(768, (6, 6), 12, "resnet101"),
    "large": _preset(1024, (12, 12), 16, "resnet152"),
    "huge": _preset(1280, (24, 12), 16, "resnet152"),
}
