"""Likelihood ranking gives the exact log-probability of each candidate, as a plain forward pass would."""

from __future__ import annotations

import pytest
import torch

from vlmbench.plugin.request import Batch

from .conftest import create_model, sample_requests

CANDIDATES = ("red", "two", "yellow wood", "no")


def _full_sequence_logprob(model, request, answer_ids: list[int]) -> float:
    """Reference: one forward pass over prompt + answer, no cache, no batching."""
    inputs = model.to_device(model._encode([request]))
    width = inputs["input_ids"].shape[1]
    ids = torch.tensor([answer_ids])
    full = dict(inputs)
    full["input_ids"] = torch.cat([inputs["input_ids"], ids], dim=1)
    for key in ("attention_mask", "mm_token_type_ids", "token_type_ids"):
        if key in inputs:
            fill = torch.ones_like(ids) if key == "attention_mask" else torch.zeros_like(ids)
            full[key] = torch.cat([inputs[key], fill], dim=1)
    with torch.no_grad():
        logits = model.model(**full).logits
    lp = torch.log_softmax(logits[0, width - 1 : -1].float(), dim=-1)
    return float(lp.gather(-1, ids[0].unsqueeze(-1)).sum())


@pytest.mark.parametrize("name", ["blip2", "qwen2.5-vl", "smolvlm"])
def test_decoder_rank_scores_are_log_likelihoods(name, tiny_checkpoint):
    model = create_model(name, pretrained=tiny_checkpoint(name), rank_batch_size=3)
    model.load()
    requests = sample_requests("rank", model.default_prompt, CANDIDATES)
    scores = model.rank(Batch(requests, model.collate(requests)))
    tokenizer = model.processor.tokenizer
    end = model.end_of_answer_id()
    assert end is not None
    for request, row in zip(requests, scores, strict=True):
        assert len(row) == len(CANDIDATES)
        for candidate, score in zip(CANDIDATES, row, strict=True):
            ids = tokenizer(model.answer_prefix + candidate, add_special_tokens=False)["input_ids"] + [end]
            assert score == pytest.approx(_full_sequence_logprob(model, request, ids), abs=1e-3)


def test_rank_options(tiny_checkpoint):
    ckpt = tiny_checkpoint("qwen2.5-vl")
    plain = create_model("qwen2.5-vl", pretrained=ckpt)
    plain.load()
    requests = sample_requests("rank", plain.default_prompt, CANDIDATES)
    total = plain.rank(Batch(requests, plain.collate(requests)))
    mean = create_model("qwen2.5-vl", pretrained=ckpt, rank_normalize="mean")
    mean.model, mean._processor = plain.model, plain.processor
    averaged = mean.rank(Batch(requests, mean.collate(requests)))
    tokenizer = plain.processor.tokenizer
    lengths = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) + 1 for c in CANDIDATES]
    for row_sum, row_mean in zip(total, averaged, strict=True):
        assert row_mean == pytest.approx([s / n for s, n in zip(row_sum, lengths, strict=True)], abs=1e-4)
    no_eos = create_model("qwen2.5-vl", pretrained=ckpt, rank_eos=False)
    no_eos.model, no_eos._processor = plain.model, plain.processor
    without = no_eos.rank(Batch(requests, no_eos.collate(requests)))
    # Leaving out the end-of-answer token removes a (negative) log-probability from every score.
    assert all(
        w > s for row_w, row_s in zip(without, total, strict=True) for w, s in zip(row_w, row_s, strict=True)
    )


def test_blip_rank_scores_match_unbatched_decoder(tiny_checkpoint):
    """Batched BLIP ranking (padded questions, candidates in chunks) equals scoring one pair at a time."""
    model = create_model("blip", pretrained=tiny_checkpoint("blip"), rank_batch_size=2)
    model.load()
    requests = sample_requests("rank", "{question}", CANDIDATES)
    scores = model.rank(Batch(requests, model.collate(requests)))
    tokenizer = model.processor.tokenizer
    for request, row in zip(requests, scores, strict=True):
        inputs = model.to_device(model._encode([request]))
        with torch.no_grad():
            question, mask = model.encode_questions(inputs)
            for candidate, score in zip(CANDIDATES, row, strict=True):
                ids = [model.model.decoder_start_token_id]
                ids += tokenizer(candidate, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
                ids_t = torch.tensor([ids])
                logits = model.model.text_decoder(
                    input_ids=ids_t, encoder_hidden_states=question, encoder_attention_mask=mask
                ).logits
                lp = torch.log_softmax(logits[0, :-1], dim=-1).gather(-1, ids_t[0, 1:].unsqueeze(-1)).sum()
                assert score == pytest.approx(float(lp), abs=1e-3)
