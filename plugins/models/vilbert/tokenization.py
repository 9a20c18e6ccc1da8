"""Question tokenisation as in the original VQA pipeline of ViLBERT.

Uncased WordPiece (the ``bert-base-uncased`` vocabulary), ``[CLS] question [SEP]``, truncated so that
the whole sequence fits ``max_length`` (23 for VQA), right-padded with id 0, attention mask 1/0 and
segment ids 0. The task token is not part of the text: the model inserts it after ``[CLS]``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

VQA_MAX_LENGTH = 23
PADDING_ID = 0  # the original pads with 0 whatever the vocabulary's [PAD] id is


@dataclass
class QuestionBatch:
    """Model-ready text tensors, named after the original forward arguments."""

    input_txt: Tensor  # [B, max_length] long
    attention_mask: Tensor  # [B, max_length] long, 1 for tokens
    token_type_ids: Tensor  # [B, max_length] long, zeros

    def to(self, device: str | torch.device) -> QuestionBatch:
        return QuestionBatch(
            self.input_txt.to(device), self.attention_mask.to(device), self.token_type_ids.to(device)
        )


def load_bert_tokenizer(vocab: str | Path):
    """An uncased ``BertTokenizerFast`` from a local ``vocab.txt`` or a tokenizer folder (never the hub)."""
    from transformers import BertTokenizerFast

    path = Path(vocab)
    if path.is_dir():
        return BertTokenizerFast.from_pretrained(str(path), local_files_only=True, do_lower_case=True)
    if not path.is_file():
        raise FileNotFoundError(
            f"ViLBERT vocabulary not found: {path} (give the bert-base-uncased vocab.txt or a tokenizer folder)"
        )
    # transformers 5 takes the file as `vocab`, 4.x as `vocab_file`
    params = inspect.signature(BertTokenizerFast.__init__).parameters
    key = "vocab" if "vocab" in params else "vocab_file"
    return BertTokenizerFast(**{key: str(path)}, do_lower_case=True)


class QuestionTokenizer:
    """Turns questions into the padded ``[CLS] q [SEP]`` id tensors ViLBERT was trained on."""

    def __init__(self, vocab: str | Path, max_length: int = VQA_MAX_LENGTH) -> None:
        if max_length < 2:
            raise ValueError("max_length must leave room for [CLS] and [SEP]")
        self.tokenizer = load_bert_tokenizer(vocab)
        self.max_length = max_length

    def __call__(self, questions: str | Sequence[str]) -> QuestionBatch:
        if isinstance(questions, str):
            questions = [questions]
        encoded = self.tokenizer(
            list(questions),
            add_special_tokens=True,
            truncation=True,
            max_length=self.max_length,
            padding="max_length",
            return_attention_mask=True,
            return_tensors="pt",
        )
        mask = encoded["attention_mask"].long()
        ids = encoded["input_ids"].long().masked_fill(mask == 0, PADDING_ID)
        return QuestionBatch(input_txt=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))

    def tokens(self, question: str) -> list[str]:
        """The WordPiece tokens of one question with [CLS]/[SEP], without padding (for inspection)."""
        batch = self([question])
        length = int(batch.attention_mask[0].sum())
        return self.tokenizer.convert_ids_to_tokens(batch.input_txt[0, :length].tolist())
