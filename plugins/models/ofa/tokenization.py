"""OFA's tokenizer: BART's byte-level BPE plus 8192 image-code tokens ``<code_i>`` and 1000
location tokens ``<bin_i>``, appended in that order (ids 50265.. and 58457.. for the real
50265-entry BART vocabulary; total 59457)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from transformers import BartTokenizerFast, PreTrainedTokenizerBase

NUM_CODE_TOKENS = 8192
NUM_BIN_TOKENS = 1000


def code_token(index: int) -> str:
    return f"<code_{index}>"


def bin_token(index: int) -> str:
    return f"<bin_{index}>"


def load_ofa_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """BART tokenizer from a local folder holding ``vocab.json`` and ``merges.txt``, extended
    with the code and bin tokens (no-op if the folder's tokenizer already has them).

    Raises ValueError if the added tokens do not sit in one contiguous block right after the
    BPE vocabulary, which would silently shift every id the model predicts.
    """
    folder = Path(folder)
    missing = [name for name in ("vocab.json", "merges.txt") if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(f"{folder}: OFA tokenizer files missing: {', '.join(missing)}")
    tokenizer = BartTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    tokenizer.add_tokens([code_token(i) for i in range(NUM_CODE_TOKENS)])
    tokenizer.add_tokens([bin_token(i) for i in range(NUM_BIN_TOKENS)])
    first_code = tokenizer.convert_tokens_to_ids(code_token(0))
    expected = {
        code_token(NUM_CODE_TOKENS - 1): first_code + NUM_CODE_TOKENS - 1,
        bin_token(0): first_code + NUM_CODE_TOKENS,
        bin_token(NUM_BIN_TOKENS - 1): first_code + NUM_CODE_TOKENS + NUM_BIN_TOKENS - 1,
    }
    for token, token_id in expected.items():
        if tokenizer.convert_tokens_to_ids(token) != token_id:
            raise ValueError(
                f"{folder}: {token} has id {tokenizer.convert_tokens_to_ids(token)}, expected {token_id}"
            )
    if len(tokenizer) != first_code + NUM_CODE_TOKENS + NUM_BIN_TOKENS:
        raise ValueError(f"{folder}: tokens after the bin block ({len(tokenizer)} in total)")
    return tokenizer


def code_token_range(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """[start, end) ids of the code and bin tokens (everything that is not text)."""
    start = tokenizer.convert_tokens_to_ids(code_token(0))
    return start, start + NUM_CODE_TOKENS + NUM_BIN_TOKENS


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """BPE ids of ``text`` without special tokens (callers add the leading space OFA expects)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_sources(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """``<s> text </s>`` ids per text."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return [[bos, *encode_text(tokenizer, text), eos] for text in texts]


def pad_right(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device | str | None = None
) -> Tensor:
    """[B, max_len] long tensor, shorter rows padded on the right (the encoder's layout)."""
    width = max(len(seq) for seq in sequences)
    out = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    return out.to(device) if device is not None else out
