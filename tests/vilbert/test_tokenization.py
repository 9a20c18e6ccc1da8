from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlmbench_plugins.models.vilbert.tokenization import VQA_MAX_LENGTH, QuestionTokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "color", "is", "the", "chair", "?", "sofa", "##s",
         "made", "of", "wood", "cafe"]  # fmt: skip


@pytest.fixture()
def vocab_file(tmp_path: Path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


def test_cls_question_sep_padded_to_23(vocab_file):
    tokenizer = QuestionTokenizer(vocab_file)
    batch = tokenizer(["What color is the Chairs?", "is the sofa made of wood"])
    assert batch.input_txt.shape == (2, VQA_MAX_LENGTH) and batch.input_txt.dtype == torch.long
    ids = {token: i for i, token in enumerate(VOCAB)}
    first = ["[CLS]", "what", "color", "is", "the", "chair", "##s", "?", "[SEP]"]
    assert batch.input_txt[0, :9].tolist() == [ids[t] for t in first]
    assert batch.input_txt[0, 9:].eq(0).all()
    assert batch.attention_mask[0].tolist() == [1] * 9 + [0] * 14
    assert batch.attention_mask[1].sum() == 8
    assert batch.token_type_ids.eq(0).all()
    assert tokenizer.tokens("What color is the Chairs?") == first


def test_uncased_and_accents_stripped(vocab_file):
    tokenizer = QuestionTokenizer(vocab_file)
    assert tokenizer.tokens("WHAT CAFÉ") == ["[CLS]", "what", "cafe", "[SEP]"]
    assert tokenizer.tokens("what lamp") == ["[CLS]", "what", "[UNK]", "[SEP]"]


def test_long_question_is_cut_before_sep(vocab_file):
    tokenizer = QuestionTokenizer(vocab_file, max_length=6)
    batch = tokenizer("what color is the chair made of")
    assert batch.input_txt.shape == (1, 6)
    assert batch.attention_mask.eq(1).all()
    assert tokenizer.tokens("what color is the chair made of") == [
        "[CLS]",
        "what",
        "color",
        "is",
        "the",
        "[SEP]",
    ]


def test_tokenizer_folder(vocab_file, tmp_path):
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    (folder / "vocab.txt").write_text(vocab_file.read_text())
    assert QuestionTokenizer(folder).tokens("what is the sofa?") == [
        "[CLS]",
        "what",
        "is",
        "the",
        "sofa",
        "?",
        "[SEP]",
    ]


def test_missing_vocab_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab"):
        QuestionTokenizer(tmp_path / "nope.txt")
