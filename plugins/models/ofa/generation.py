"""Decoding for OFA: beam search (greedy is one beam) over the key/value cache, Trie-constrained
decoding over a candidate list, and all-candidate scoring.

Conventions shared by every function here:

* a *prefix* is the decoder prompt of one example, starting with BOS (``[bos]`` for
  pre-trained checkpoints, ``[bos] + question tokens`` for VQA fine-tuned ones); prefixes of a
  batch are left-padded and given per-row position ids, so each row is computed exactly as if
  it were alone;
* a *candidate* is the token ids of one answer without BOS/EOS; the Trie holds
  ``[bos] + candidate + [eos]``, and generated tokens are looked up behind BOS;
* ``renormalize`` picks how a Trie restricts the next-token distribution: True masks the
  logits before the softmax (probabilities renormalised over the allowed tokens: the
  fine-tuned VQA setting), False masks after it (plain model probabilities: the zero-shot one).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .modeling import DecoderCache, EncoderOutput, OFAModel


class Trie:
    """Prefix tree over token sequences (node 0 is the root)."""

    def __init__(self, eos_token_id: int, sequences: Iterable[Sequence[int]] = ()) -> None:
        self.eos_token_id = eos_token_id
        self._children: list[dict[int, int]] = [{}]
        for sequence in sequences:
            self.insert(sequence)

    def insert(self, sequence: Sequence[int]) -> None:
        node = 0
        for token in sequence:
            node = self._children[node].setdefault(int(token), len(self._children))
            if node == len(self._children):
                self._children.append({})

    def child(self, node: int | None, token: int) -> int | None:
        return None if node is None else self._children[node].get(int(token))

    def walk(self, prefix: Sequence[int]) -> int | None:
        node: int | None = 0
        for token in prefix:
            node = self.child(node, token)
        return node

    def allowed(self, node: int | None) -> list[int]:
        """Tokens that may follow; a prefix outside the tree (or a finished one) may only end."""
        children = self._children[node] if node is not None else {}
        return list(children) if children else [self.eos_token_id]

    def next_tokens(self, prefix: Sequence[int]) -> list[int]:
        return self.allowed(self.walk(prefix))

    def allowed_mask(self, nodes: Sequence[int | None], vocab_size: int, device: torch.device) -> Tensor:
        """[len(nodes), vocab_size] bool: True where a token may follow the node."""
        rows, cols = [], []
        for row, node in enumerate(nodes):
            allowed = self.allowed(node)
            rows.extend([row] * len(allowed))
            cols.extend(allowed)
        mask = torch.zeros(len(nodes), vocab_size, dtype=torch.bool, device=device)
        mask[torch.tensor(rows, device=device), torch.tensor(cols, device=device)] = True
        return mask

    def __len__(self) -> int:
        return len(self._children)


@dataclass
class Hypothesis:
    tokens: list[int]  # generated tokens, without the prefix and without EOS
    score: float  # ranking score: log-probability / (len+1) ** length_penalty
    log_prob: float  # summed log-probability of tokens + EOS


def left_pad(
    prefixes: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Left-padded ids [B, P], padding mask (True at padding) and position ids (0 at the first
    real token of each row)."""
    width = max(len(prefix) for prefix in prefixes)
    ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)
    for row, prefix in enumerate(prefixes):
        ids[row, width - len(prefix) :] = torch.as_tensor(list(prefix), dtype=torch.long)
    padding = torch.zeros_like(ids, dtype=torch.bool)
    for row, prefix in enumerate(prefixes):
        padding[row, : width - len(prefix)] = True
    positions = ((~padding).long().cumsum(dim=1) - 1).clamp(min=0)
    return ids.to(device), padding.to(device), positions.to(device)


def _next_log_probs(
    logits: Tensor,
    *,
    eos_id: int,
    pad_id: int,
    step: int,
    max_new_tokens: int,
    min_new_tokens: int,
    allowed: Tensor | None,
    renormalize: bool,
    suppress: Tensor | None,
) -> Tensor:
    logits = logits.float()
    if allowed is not None and renormalize:
        logits = logits.masked_fill(~allowed, float("-inf"))
    log_probs = F.log_softmax(logits, dim=-1)
    if allowed is not None and not renormalize:
        log_probs = log_probs.masked_fill(~allowed, float("-inf"))
    log_probs[:, pad_id] = float("-inf")
    if allowed is None:
        if suppress is not None:
            log_probs[:, suppress] = float("-inf")
        if step < min_new_tokens:
            log_probs[:, eos_id] = float("-inf")
    if step >= max_new_tokens:
        only_eos = torch.full_like(log_probs, float("-inf"))
        only_eos[:, eos_id] = log_probs[:, eos_id]
        log_probs = only_eos
    return log_probs


@torch.no_grad()
def beam_search(
    model: OFAModel,
    encoder_out: EncoderOutput,
    prefixes: Sequence[Sequence[int]],
    *,
    num_beams: int = 5,
    max_new_tokens: int = 5,
    min_new_tokens: int = 1,
    trie: Trie | None = None,
    renormalize: bool = True,
    length_penalty: float = 0.0,
    suppress_token_ids: Sequence[int] | Tensor | None = None,
    use_cache: bool = True,
) -> list[list[Hypothesis]]:
    """Beam search after each row's prefix; returns each row's finished hypotheses, best first.

    As in fairseq: 2·beams candidates per step; an EOS candidate among the top ``num_beams``
    finishes a hypothesis, other candidates continue; a row is done once it has ``num_beams``
    finished hypotheses. At most ``max_new_tokens`` tokens precede the EOS. Scores are summed
    log-probabilities divided by (tokens + 1) ** ``length_penalty`` (0: unnormalised, the
    setting of OFA's VQA evaluation). ``num_beams=1`` is greedy decoding.
    ``suppress_token_ids`` are never generated in free decoding; ``min_new_tokens`` forbids an
    early EOS, also in free decoding only (a Trie already decides where answers may end).
    ``use_cache=False`` recomputes the decoder over the whole sequence at every step.
    """
    config = model.config
    eos_id, pad_id, vocab = config.eos_token_id, config.pad_token_id, config.vocab_size
    device = encoder_out.last_hidden_state.device
    batch, beams = len(prefixes), num_beams
    rows = torch.arange(batch, device=device).repeat_interleave(beams)
    expanded = encoder_out.select(rows)
    suppress = None
    if suppress_token_ids is not None:
        suppress = torch.as_tensor(suppress_token_ids, dtype=torch.long, device=device)

    ids, padding, positions = left_pad(prefixes, pad_id, device)
    if use_cache:
        logits, cache = model.decode(ids, encoder_out, positions, padding, use_cache=True)
        assert cache is not None
        logits = logits[:, -1].index_select(0, rows)
        cache = cache.select(rows)
    else:
        ids, padding, positions = ids[rows], padding[rows], positions[rows]
        logits = model.decode(ids, expanded, positions, padding)[0][:, -1]

    scores = torch.zeros(batch, beams, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep one
    scores = scores.view(-1)
    generated = torch.empty(batch * beams, 0, dtype=torch.long, device=device)
    start_node = trie.child(0, config.bos_token_id) if trie is not None else None
    nodes: list[int | None] = [start_node] * (batch * beams)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    done = [False] * batch
    candidates = 2 * beams
    rank = torch.arange(candidates, device=device)

    for step in range(max_new_tokens + 1):
        allowed = trie.allowed_mask(nodes, vocab, device) if trie is not None else None
        log_probs = _next_log_probs(
            logits,
            eos_id=eos_id,
            pad_id=pad_id,
            step=step,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            allowed=allowed,
            renormalize=renormalize,
            suppress=suppress,
        )
        totals = (scores[:, None] + log_probs).view(batch, beams * vocab)
        top_scores, top_index = totals.topk(candidates, dim=1)
        top_beams = torch.div(top_index, vocab, rounding_mode="floor")
        top_tokens = top_index % vocab

        is_eos = top_tokens.eq(eos_id)
        finishing = is_eos & torch.isfinite(top_scores)
        finishing[:, beams:] = False
        for row, slot in finishing.nonzero().tolist():
            if done[row]:
                continue
            source = row * beams + int(top_beams[row, slot])
            tokens = generated[source].tolist()
            log_prob = float(top_scores[row, slot])
            finished[row].append(Hypothesis(tokens, log_prob / (len(tokens) + 1) ** length_penalty, log_prob))
        for row in range(batch):
            done[row] = done[row] or len(finished[row]) >= beams
        if all(done) or step == max_new_tokens:
            break

        # The best `beams` candidates that do not end continue (EOS ones are pushed last).
        order = is_eos.long() * candidates + rank
        active = order.topk(beams, dim=1, largest=False).indices
        new_scores = top_scores.gather(1, active)
        new_tokens = top_tokens.gather(1, active)
        new_scores = new_scores.masked_fill(new_tokens.eq(eos_id), float("-inf"))
        sources = (torch.arange(batch, device=device)[:, None] * beams + top_beams.gather(1, active)).view(-1)
        scores = new_scores.view(-1)
        new_tokens = new_tokens.view(-1, 1)
        generated = torch.cat([generated.index_select(0, sources), new_tokens], dim=1)
        if trie is not None:
            nodes = [
                trie.child(nodes[s], t)
                for s, t in zip(sources.tolist(), new_tokens.view(-1).tolist(), strict=True)
            ]
        live = torch.isfinite(scores.view(batch, beams)).any(dim=1).tolist()
        done = [d or not alive for d, alive in zip(done, live, strict=True)]
        if all(done):
            break

        if use_cache:
            cache = cache.select(sources, include_cross=False)
            logits, cache = model.decode(new_tokens, expanded, cache=cache, use_cache=True)
        else:
            ids = torch.cat([ids.index_select(0, sources), new_tokens], dim=1)
            padding = torch.cat(
                [padding.index_select(0, sources), new_tokens.new_zeros(new_tokens.shape, dtype=torch.bool)],
                1,
            )
            positions = positions.index_select(0, sources)
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
            logits, _ = model.decode(ids, expanded, positions, padding)
        logits = logits[:, -1]

    results = []
    for row in range(batch):
        hypotheses = sorted(finished[row], key=lambda h: h.score, reverse=True)[:beams]
        if not hypotheses:  # nothing reached EOS (e.g. every candidate was blocked): best live beam
            best = int(scores.view(batch, beams)[row].argmax())
            log_prob = float(scores.view(batch, beams)[row, best])
            tokens = generated[row * beams + best].tolist()
            hypotheses = [Hypothesis(tokens, log_prob, log_prob)]
        results.append(hypotheses)
    return results


@torch.no_grad()
def score_candidates(
    model: OFAModel,
    encoder_out: EncoderOutput,
    prefixes: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[Sequence[int]]],
    *,
    tries: Sequence[Trie | None] | None = None,
    renormalize: bool = True,
    length_normalize: bool = False,
    chunk_size: int = 128,
) -> Tensor:
    """Log-likelihood of every candidate answer (its tokens and EOS) after each row's prefix.

    ``candidates[b]`` lists row b's candidates; the result is [B, max C] (float32, on the
    model's device) with -inf where a row has fewer. With a Trie per row and ``renormalize``,
    each step's distribution is renormalised over the tokens the Trie allows (OFA's
    "allcand" evaluation); otherwise it is the model's full-vocabulary distribution.
    ``length_normalize`` divides by the number of scored tokens.

    Each row's prefix is decoded once; its cache (and the cross-attention keys/values) is then
    shared, as views, by chunks of ``chunk_size`` candidates.
    """
    config = model.config
    eos_id, pad_id, bos_id = config.eos_token_id, config.pad_token_id, config.bos_token_id
    device = encoder_out.last_hidden_state.device
    width = max(len(row) for row in candidates)
    result = torch.full((len(prefixes), width), float("-inf"), device=device)
    for row, (prefix, row_candidates) in enumerate(zip(prefixes, candidates, strict=True)):
        trie = tries[row] if tries is not None else None
        single = encoder_out.select(torch.tensor([row], device=device))
        prefix_ids = torch.as_tensor([list(prefix)], dtype=torch.long, device=device)
        prefix_logits, cache = model.decode(prefix_ids, single, use_cache=True)
        assert cache is not None
        first_logits = prefix_logits[:, -1:]  # predicts each candidate's first token
        for start in range(0, len(row_candidates), chunk_size):
            chunk = [list(c) for c in row_candidates[start : start + chunk_size]]
            count, longest = len(chunk), max(len(c) for c in chunk)
            if longest > 0:
                answer_ids = torch.full((count, longest), pad_id, dtype=torch.long, device=device)
                for i, tokens in enumerate(chunk):
                    answer_ids[i, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.long)
                logits, _ = model.decode(answer_ids, single, cache=_broadcast(cache, count))
                logits = torch.cat([first_logits.expand(count, -1, -1), logits], dim=1).float()
            else:
                logits = first_logits.expand(count, -1, -1).float()
            targets = torch.full((count, longest + 1), pad_id, dtype=torch.long, device=device)
            for i, tokens in enumerate(chunk):
                targets[i, : len(tokens) + 1] = torch.as_tensor([*tokens, eos_id], dtype=torch.long)
            valid = targets.ne(pad_id)
            if trie is not None:
                allowed = _trie_masks(trie, bos_id, chunk, longest + 1, config.vocab_size, device)
                if renormalize:
                    logits = logits.masked_fill(~allowed, float("-inf"))
            log_probs = F.log_softmax(logits, dim=-1)
            if trie is not None and not renormalize:
                log_probs = log_probs.masked_fill(~allowed, float("-inf"))
            picked = log_probs.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
            picked = picked.masked_fill(~valid, 0.0)
            totals = picked.sum(dim=1)
            if length_normalize:
                totals = totals / valid.sum(dim=1)
            result[row, start : start + count] = totals
    return result


def _broadcast(cache: DecoderCache, count: int) -> DecoderCache:
    """A one-row cache seen as ``count`` identical rows, without copying."""

    def grow(tensor: Tensor) -> Tensor:
        return tensor.expand(count, *tensor.shape[1:])

    return DecoderCache(
        [(grow(k), grow(v)) for k, v in cache.self_kv],
        [(grow(k), grow(v)) for k, v in cache.cross_kv],
        grow(cache.self_pos_k),
        grow(cache.positions),
        grow(cache.key_padding),
    )


def _trie_masks(
    trie: Trie, bos_id: int, chunk: list[list[int]], steps: int, vocab: int, device: torch.device
) -> Tensor:
    """[len(chunk), steps, vocab]: tokens the Trie allows at each step of each candidate."""
    mask = torch.zeros(len(chunk), steps, vocab, dtype=torch.bool, device=device)
    for i, tokens in enumerate(chunk):
        node = trie.child(0, bos_id)
        for step in range(len(tokens) + 1):
            mask[i, step, trie.allowed(node)] = True
            if step < len(tokens):
                node = trie.child(node, tokens[step])
        mask[i, len(tokens) + 1 :] = True  # padding steps: unrestricted, never scored
    return mask
