"""Builders for the OFA tests: tiny models with non-trivial weights and a tiny BPE vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vlmbench_plugins.models.ofa.config import OFAConfig
from vlmbench_plugins.models.ofa.modeling import OFAModel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ofa"
SIZES = ("tiny", "medium", "base", "large", "huge")

# Words the tiny tokenizer encodes as single tokens (with the byte-level space marker "Ġ").
TOKEN_WORDS = ("what", "color", "is", "the", "this", "red", "blue", "green", "dark", "chair", "wood")


def tiny_config(vocab_size: int = 120, **overrides) -> OFAConfig:
    values = dict(
        vocab_size=vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        resnet_layers=(1, 1, 1),
        dropout=0.0,
    )
    values.update(overrides)
    return OFAConfig(**values)


def randomize(model: OFAModel, seed: int = 0) -> OFAModel:
    """Non-trivial weights everywhere (the default init zeroes the relative-position tables and
    sets every norm to identity, which would hide mistakes in those paths)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            scale = 0.5 if "rel_pos_table" in name else 0.2
            noise = torch.randn(parameter.shape, generator=generator) * scale
            if name.endswith("weight") and ("norm" in name or "ln" in name.split(".")[-2] or "bn" in name):
                noise = noise + 1.0
            parameter.copy_(noise)
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
    return model.eval()


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2's scheme)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in symbols:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[byte] for byte in range(256)]


def write_tiny_bpe(folder: Path) -> dict[str, int]:
    """vocab.json / merges.txt of a small byte-level BPE in BART's layout (<s>, <pad>, </s>,
    <unk> first, <mask> last), with merges that make " word" one token for TOKEN_WORDS."""
    vocab: dict[str, int] = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in _byte_alphabet():
        vocab.setdefault(symbol, len(vocab))
    merges: list[str] = []
    for word in TOKEN_WORDS:
        current = "Ġ"
        for char in word:
            merge = f"{current} {char}"
            current += char
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(current, len(vocab))
    vocab["<mask>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab
