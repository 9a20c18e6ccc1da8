"""Decoding: KV cache vs full recomputation, left-padded batches, greedy and beam search, the
Trie constraint and all-candidate scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ofa_testing import randomize, tiny_config
from PIL import Image

from vlmbench_plugins.models.ofa.generation import Trie, beam_search, left_pad, score_candidates
from vlmbench_plugins.models.ofa.modeling import OFAModel
from vlmbench_plugins.models.ofa.tokenization import encode_text, load_ofa_tokenizer
from vlmbench_plugins.models.ofa.vqa import OFAForVQA

PREFIXES = [[0, 5, 6, 7], [0, 8]]
CANDIDATES = [[30, 31], [40], [30, 32, 33], [50, 51]]


def _encode(model: OFAModel):
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.tensor([[0, 11, 12, 13, 2], [0, 21, 2, 1, 1]])
    with torch.no_grad():
        return model.encode(input_ids, torch.randn(2, 3, 64, 64, generator=generator))


def _trie(candidates=CANDIDATES) -> Trie:
    return Trie(2, ([0, *c, 2] for c in candidates))


def test_incremental_decoding_matches_full_forward(tiny_model):
    encoder_out = _encode(tiny_model)
    tokens = torch.tensor([[1, 1, 0, 5, 9, 17, 4], [0, 8, 3, 3, 60, 2, 44]])
    ids, padding, positions = left_pad([[0, 5, 9, 17, 4], [0, 8, 3, 3, 60, 2, 44]], 1, torch.device("cpu"))
    assert torch.equal(ids, tokens) and positions[0].tolist() == [0, 0, 0, 1, 2, 3, 4]
    with torch.no_grad():
        full, _ = tiny_model.decode(ids, encoder_out, positions, padding)
        logits, cache = tiny_model.decode(
            ids[:, :3], encoder_out, positions[:, :3], padding[:, :3], use_cache=True
        )
        steps = [logits]
        for t in range(3, ids.shape[1]):
            logits, cache = tiny_model.decode(ids[:, t : t + 1], encoder_out, cache=cache, use_cache=True)
            steps.append(logits)
        incremental = torch.cat(steps, dim=1)
        # Row 0 alone, unpadded, must see exactly the same numbers as inside the padded batch.
        alone, _ = tiny_model.decode(ids[:1, 2:], encoder_out.select(torch.tensor([0])))
    real = ~padding
    assert torch.allclose(incremental[real], full[real], atol=1e-5)
    assert torch.allclose(full[0, 2:], alone[0], atol=1e-5)


@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("constrained", [False, True])
def test_cached_and_uncached_beam_search_agree(tiny_model, beams, constrained):
    encoder_out = _encode(tiny_model)
    options = dict(num_beams=beams, max_new_tokens=4, trie=_trie() if constrained else None)
    cached = beam_search(tiny_model, encoder_out, PREFIXES, use_cache=True, **options)
    uncached = beam_search(tiny_model, encoder_out, PREFIXES, use_cache=False, **options)
    for a_row, b_row in zip(cached, uncached, strict=True):
        assert [h.tokens for h in a_row] == [h.tokens for h in b_row]
        assert np.allclose([h.score for h in a_row], [h.score for h in b_row], atol=1e-5)


def test_batched_generation_matches_one_row_at_a_time(tiny_model):
    encoder_out = _encode(tiny_model)
    batched = beam_search(tiny_model, encoder_out, PREFIXES, num_beams=3, max_new_tokens=4)
    for row, prefix in enumerate(PREFIXES):
        single = beam_search(
            tiny_model, encoder_out.select(torch.tensor([row])), [prefix], num_beams=3, max_new_tokens=4
        )
        assert [h.tokens for h in single[0]] == [h.tokens for h in batched[row]]
        assert np.allclose([h.score for h in single[0]], [h.score for h in batched[row]], atol=1e-5)


def test_one_beam_is_greedy(tiny_model):
    encoder_out = _encode(tiny_model).select(torch.tensor([1]))
    result = beam_search(
        tiny_model, encoder_out, [PREFIXES[1]], num_beams=1, max_new_tokens=4, min_new_tokens=0
    )
    tokens = list(PREFIXES[1])
    with torch.no_grad():
        for _ in range(4):
            logits, _ = tiny_model.decode(torch.tensor([tokens]), encoder_out)
            logits[0, -1, 1] = float("-inf")  # pad is never generated
            token = int(logits[0, -1].argmax())
            if token == 2:
                break
            tokens.append(token)
    assert result[0][0].tokens == tokens[len(PREFIXES[1]) :]


def test_trie_lookups():
    trie = _trie()
    assert sorted(trie.next_tokens([0])) == [30, 40, 50]
    assert sorted(trie.next_tokens([0, 30])) == [31, 32]
    assert trie.next_tokens([0, 40]) == [2]
    assert trie.next_tokens([0, 99]) == [2]  # off the tree: may only end
    mask = trie.allowed_mask([trie.walk([0, 30]), None], 60, torch.device("cpu"))
    assert mask[0].nonzero().view(-1).tolist() == [31, 32] and mask[1].nonzero().view(-1).tolist() == [2]


@pytest.mark.parametrize("renormalize", [True, False])
def test_trie_restricts_outputs_to_candidates(renormalize):
    for seed in range(3):
        model = randomize(OFAModel(tiny_config()), seed)
        encoder_out = _encode(model)
        free = beam_search(model, encoder_out, PREFIXES, num_beams=3, max_new_tokens=3)
        constrained = beam_search(
            model, encoder_out, PREFIXES, num_beams=3, max_new_tokens=3, trie=_trie(), renormalize=renormalize
        )
        # The unconstrained model says something else: the constraint is what keeps it in line.
        assert any(row[0].tokens not in CANDIDATES for row in free)
        for row in constrained:
            assert row and all(h.tokens in CANDIDATES for h in row)


@pytest.mark.parametrize("renormalize", [True, False])
def test_exhaustive_constrained_search_agrees_with_scoring(tiny_model, renormalize):
    """With as many beams as candidates nothing is pruned, so the constrained winner is the
    best-scored candidate and its log-probability is that candidate's score."""
    encoder_out = _encode(tiny_model)
    trie = _trie()
    scores = score_candidates(
        tiny_model,
        encoder_out,
        PREFIXES,
        [CANDIDATES, CANDIDATES],
        tries=[trie, trie],
        renormalize=renormalize,
    )
    results = beam_search(
        tiny_model,
        encoder_out,
        PREFIXES,
        num_beams=len(CANDIDATES),
        max_new_tokens=3,
        trie=trie,
        renormalize=renormalize,
    )
    for row, hypotheses in enumerate(results):
        best = int(scores[row].argmax())
        assert hypotheses[0].tokens == CANDIDATES[best]
        by_tokens = {tuple(h.tokens): h.log_prob for h in hypotheses}
        for index, candidate in enumerate(CANDIDATES):
            assert by_tokens[tuple(candidate)] == pytest.approx(float(scores[row, index]), abs=1e-4)
    if renormalize:  # renormalised over the Trie, the candidates' probabilities sum to one
        assert torch.allclose(scores.exp().sum(dim=1), torch.ones(2), atol=1e-5)
    else:
        assert (scores.exp().sum(dim=1) < 1).all()


def test_scoring_is_chunk_invariant_and_pads_ragged_rows(tiny_model):
    encoder_out = _encode(tiny_model)
    trie = _trie()
    whole = score_candidates(tiny_model, encoder_out, PREFIXES, [CANDIDATES, CANDIDATES], tries=[trie, trie])
    chunked = score_candidates(
        tiny_model, encoder_out, PREFIXES, [CANDIDATES, CANDIDATES], tries=[trie, trie], chunk_size=1
    )
    assert torch.allclose(whole, chunked, atol=1e-5)
    ragged = score_candidates(tiny_model, encoder_out, PREFIXES, [CANDIDATES, CANDIDATES[:2]])
    assert ragged.shape == (2, 4) and torch.isinf(ragged[1, 2:]).all() and torch.isfinite(ragged[0]).all()
    normalised = score_candidates(tiny_model, encoder_out, PREFIXES, [CANDIDATES] * 2, length_normalize=True)
    plain = score_candidates(tiny_model, encoder_out, PREFIXES, [CANDIDATES] * 2)
    lengths = torch.tensor([len(c) + 1 for c in CANDIDATES], dtype=torch.float32)
    assert torch.allclose(normalised, plain / lengths, atol=1e-5)


# -- end to end through OFAForVQA --------------------------------------------------------------


@pytest.fixture(scope="module")
def vqa_parts(tiny_bpe_dir):
    tokenizer = load_ofa_tokenizer(tiny_bpe_dir)
    model = randomize(OFAModel(tiny_config(vocab_size=len(tokenizer))), seed=5)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)) for _ in range(2)]
    return tokenizer, model, images


def _prefer(model: OFAModel, token_id: int) -> None:
    """Make the decoder's final state a constant pointing at one token's embedding, so that token
    is by far the most likely at every step whatever the input."""
    with torch.no_grad():
        embeddings = model.encoder.embed_tokens.weight
        embeddings /= embeddings.norm(dim=1, keepdim=True)
        model.decoder.layer_norm.weight.zero_()
        model.decoder.layer_norm.bias.copy_(30 * embeddings[token_id])


@pytest.mark.parametrize("style", ["pretrained", "finetuned"])
@pytest.mark.parametrize("preferred", ["green", "blue"])
def test_scoring_ranks_the_preferred_candidate_first(vqa_parts, style, preferred):
    tokenizer, model, images = vqa_parts
    model = randomize(OFAModel(model.config), seed=6)
    _prefer(model, encode_text(tokenizer, " " + preferred)[0])
    vqa = OFAForVQA(model, tokenizer, resolution=64, prompt_style=style)
    candidates = ["red", "dark blue", "blue", "green"]
    questions = ["What color is the chair?", "what colour is this"]
    scores = vqa.score_candidates(images, questions, candidates)
    assert scores.shape == (2, 4)
    assert [candidates[i] for i in scores.argmax(dim=1).tolist()] == [preferred, preferred]
    assert vqa.constrained(images, questions, candidates) == [preferred, preferred]
    assert all(answer.split()[0] == preferred for answer in vqa.generate(images, questions, max_new_tokens=3))


def test_vqa_helpers_accept_per_row_candidates(vqa_parts):
    tokenizer, model, images = vqa_parts
    vqa = OFAForVQA(model, tokenizer, resolution=64, prompt_style="finetuned")
    per_row = [["red", "blue"], ["wood", "green", "dark blue"]]
    questions = ["what color?", "what is it made of?"]
    answers = vqa.constrained(images, questions, per_row, num_beams=3)
    assert [answer in row for answer, row in zip(answers, per_row, strict=True)] == [True, True]
    scores = vqa.score_candidates(images, questions, per_row)
    assert scores.shape == (2, 3) and torch.isinf(scores[0, 2])
    assert answers == [row[i] for row, i in zip(per_row, scores.argmax(dim=1).tolist(), strict=True)]
    with pytest.raises(ValueError, match="2 images but 1 questions"):
        vqa.generate(images, questions[:1])
    with pytest.raises(ValueError, match="vocabulary"):
        OFAForVQA(OFAModel(tiny_config()), tokenizer)
