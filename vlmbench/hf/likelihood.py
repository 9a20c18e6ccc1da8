"""Likelihood ranking for generative models: the log-probability of each candidate answer.

The image and prompt are run once; their key/value cache is shared by every candidate, and the
candidates are scored in batches. That lets any generative model answer ``rank`` requests.
"""

from __future__ import annotations

import copy
import inspect
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from vlmbench.errors import VlmbenchError
from vlmbench.plugin.args import Arg

#: Options of likelihood ranking, for plugins that answer ``rank`` requests by scoring candidates.
LIKELIHOOD_ARGS: dict[str, Arg] = {
    "rank_batch_size": Arg(int, 64, "candidate answers scored per forward pass", affects_output=False),
    "rank_normalize": Arg(
        str,
        "sum",
        "candidate score: 'sum' of token log-probabilities, or their 'mean' (favours longer answers less)",
        choices=("sum", "mean"),
    ),
    "rank_eos": Arg(
        bool, True, "score the end-of-answer token too, so a candidate must be the whole answer, not a prefix"
    ),
}


class LikelihoodRanking:
    """Mixin of :class:`vlmbench.hf.HFModel`: scores continuations after a prompt with ``self.model``."""

    def prefill(self, inputs: dict[str, Any]) -> tuple[Any, Any]:
        """Run the prompt (batch of one): the logits of the next token, shape (1, vocab), and the cache."""
        out = self.model(**inputs, use_cache=True)
        return out.logits[:, -1], cache_of(out)

    def continue_from(self, input_ids: Any, cache: Any) -> Any:
        """Run ``input_ids`` (batch, length) after a cached prompt; the logits (batch, length, vocab)."""
        return self.model(input_ids=input_ids, use_cache=True, **{cache_kwarg(self.model): cache}).logits

    def score_continuations(
        self, inputs: dict[str, Any], continuations: Sequence[Sequence[int]], *, normalize: str = "sum"
    ) -> list[float]:
        """Log-likelihood of each token sequence in ``continuations`` after the prompt ``inputs``
        (one unpadded sequence on the model's device): the prompt runs once and its cache is repeated
        for each batch of ``rank_batch_size`` continuations, padded on the right (causal attention:
        padding after a token cannot change it)."""
        import torch

        if not continuations:
            return []
        if any(len(c) == 0 for c in continuations):
            raise VlmbenchError(f"model {self.name!r}: a candidate answer has no tokens")
        chunk = max(1, int(self.arg_values.get("rank_batch_size") or 64))
        with torch.inference_mode():
            first_logits, cache = self.prefill(inputs)
            first = torch.log_softmax(first_logits.float(), dim=-1)[0]
            scores: list[float] = []
            for start in range(0, len(continuations), chunk):
                part = continuations[start : start + chunk]
                width = max(len(c) for c in part)
                ids = torch.zeros(len(part), width, dtype=torch.long)
                mask = torch.zeros(len(part), width, dtype=torch.bool)
                for i, c in enumerate(part):
                    ids[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
                    mask[i, : len(c)] = True
                ids, mask = ids.to(first.device), mask.to(first.device)
                token_lp = torch.zeros(len(part), width, device=first.device)
                token_lp[:, 0] = first[ids[:, 0]]
                if width > 1:
                    expanded = copy.deepcopy(cache)
                    expanded.batch_repeat_interleave(len(part))
                    logits = self.continue_from(ids[:, :-1], expanded)
                    lp = torch.log_softmax(logits.float(), dim=-1)
                    token_lp[:, 1:] = lp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
                total = (token_lp * mask).sum(dim=1)
                if normalize == "mean":
                    total = total / mask.sum(dim=1)
                scores.extend(total.tolist())
        return scores


class CandidateTokens:
    """Token ids of candidate answers, computed once per candidate set (per process)."""

    def __init__(self, max_sets: int = 64):
        self._cache: OrderedDict[tuple, list[list[int]]] = OrderedDict()
        self.max_sets = max_sets

    def get(
        self, tokenizer: Any, candidates: tuple[str, ...], prefix: str, end_id: int | None
    ) -> list[list[int]]:
        key = (candidates, prefix, end_id)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        encoded = tokenizer([prefix + c for c in candidates], add_special_tokens=False)["input_ids"]
        ids = [list(e) + ([end_id] if end_id is not None else []) for e in encoded]
        self._cache[key] = ids
        if len(self._cache) > self.max_sets:
            self._cache.popitem(last=False)
        return ids


def cache_kwarg(model: Any) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    if cache is None:
        cache = getattr(output, "past_key_values", None)
    if cache is None:
        raise VlmbenchError("the model returned no key/value cache; likelihood ranking needs one")
    return cache
