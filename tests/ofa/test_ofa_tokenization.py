"""Tokenizer (BPE + code/bin tokens) and VQA input preparation."""

from __future__ import annotations

import json

import pytest
import torch
from ofa_testing import TOKEN_WORDS
from PIL import Image

from vlmbench_plugins.models.ofa.preprocess import (
    build_image_transform,
    normalize_question,
    preprocess_images,
    question_text,
)
from vlmbench_plugins.models.ofa.tokenization import (
    NUM_BIN_TOKENS,
    NUM_CODE_TOKENS,
    code_token_range,
    encode_sources,
    encode_text,
    load_ofa_tokenizer,
    pad_right,
)


def test_code_and_bin_tokens_follow_the_bpe_vocabulary(tiny_bpe_dir):
    base = len(json.loads((tiny_bpe_dir / "vocab.json").read_text()))
    tokenizer = load_ofa_tokenizer(tiny_bpe_dir)
    assert len(tokenizer) == base + NUM_CODE_TOKENS + NUM_BIN_TOKENS
    ids = tokenizer.convert_tokens_to_ids(["<code_0>", "<code_8191>", "<bin_0>", "<bin_999>"])
    assert ids == [base, base + 8191, base + 8192, base + 9191]
    assert code_token_range(tokenizer) == (base, base + 9192)
    # The real BART vocabulary has 50265 entries, which puts the blocks where OFA has them.
    assert (50265 + NUM_CODE_TOKENS, 50265 + NUM_CODE_TOKENS + NUM_BIN_TOKENS) == (58457, 59457)
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    # Added tokens are recognised inside text.
    assert encode_text(tokenizer, "<bin_7>") == [base + NUM_CODE_TOKENS + 7]


def test_bpe_words_and_sources(tiny_bpe_dir):
    tokenizer = load_ofa_tokenizer(tiny_bpe_dir)
    vocab = json.loads((tiny_bpe_dir / "vocab.json").read_text())
    assert encode_text(tokenizer, " what color is this?") == [
        vocab["Ġwhat"],
        vocab["Ġcolor"],
        vocab["Ġis"],
        vocab["Ġthis"],
        vocab["?"],
    ]
    for word in TOKEN_WORDS:
        assert encode_text(tokenizer, " " + word) == [vocab["Ġ" + word]]
    sources = encode_sources(tokenizer, [" red", " dark blue"])
    assert sources == [[0, vocab["Ġred"], 2], [0, vocab["Ġdark"], vocab["Ġblue"], 2]]
    assert pad_right(sources, 1).tolist() == [[0, vocab["Ġred"], 2, 1], sources[1]]
    assert tokenizer.decode([0, vocab["Ġdark"], vocab["Ġblue"], 2], skip_special_tokens=True) == " dark blue"


def test_missing_tokenizer_files_are_named(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"merges\.txt"):
        load_ofa_tokenizer(tmp_path)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("What color is the chair", "what color is the chair?"),
        ("...What is it made of?", "what is it made of?"),
        ("  ?why", "?why?"),  # as in OFA: punctuation is stripped before spaces
        ("Is the T-shirt black/white?", "is the t shirt black white?"),
        ("what   brand\n", "what brand?"),
    ],
)
def test_question_normalisation(raw, expected):
    assert normalize_question(raw) == expected
    assert question_text(raw) == " " + expected


def test_question_truncation():
    assert normalize_question("one two three four five", max_words=3) == "one two three?"


def test_image_transform_resizes_and_normalises():
    image = Image.new("RGB", (40, 20), (255, 0, 128))
    pixels = build_image_transform(32)(image)
    assert pixels.shape == (3, 32, 32)
    assert torch.allclose(pixels[:, 5, 5], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=1e-6)
    grey = Image.new("L", (10, 10), 0)
    batch = preprocess_images([image, grey], 16)
    assert batch.shape == (2, 3, 16, 16) and batch[1].eq(-1).all()
    assert preprocess_images(batch, 999) is batch  # already transformed tensors pass through
