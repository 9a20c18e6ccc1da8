"""Bases for model plugins built on Hugging Face ``transformers``.

- :class:`HFModel`: checkpoints (local, cache, Hub), dtype, devices, 8/4-bit, adapters, fingerprints.
- :class:`DecoderVLM`: decoder-only VLMs — left-padded generation and likelihood ranking.
- :class:`ChatVLM`: instruction-tuned VLMs whose requests become a chat conversation.
"""

from vlmbench.devices import resolve_dtype
from vlmbench.hashing import tree_sha256
from vlmbench.hf.base import HFModel
from vlmbench.hf.chat import ChatVLM
from vlmbench.hf.decoder import DecoderVLM
from vlmbench.hf.likelihood import LIKELIHOOD_ARGS, CandidateTokens, LikelihoodRanking, cache_kwarg, cache_of
from vlmbench.hf.options import HF_ARGS
from vlmbench.hf.weights import count_parameters, keep_cpu_4bit_layout
from vlmbench.hub import cached_commit, is_hub_id

__all__ = [
    "HF_ARGS",
    "LIKELIHOOD_ARGS",
    "CandidateTokens",
    "ChatVLM",
    "DecoderVLM",
    "HFModel",
    "LikelihoodRanking",
    "cache_kwarg",
    "cache_of",
    "cached_commit",
    "count_parameters",
    "is_hub_id",
    "keep_cpu_4bit_layout",
    "resolve_dtype",
    "tree_sha256",
]
