"""OFA (One For All, Wang et al. 2022): a self-contained PyTorch implementation with loaders for
the Hugging Face port and fairseq checkpoints, parity checking against the official code,
VQA decoding (free, Trie-constrained, all-candidate scoring) and the ``ofa`` model plugin
(:mod:`.plugin`).

Submodules import torch; importing this package does not.
"""

__all__ = [
    "OFAConfig",
    "OFAForVQA",
    "OFAModel",
    "Trie",
    "VQAInputs",
    "beam_search",
    "check_parity",
    "load_ofa",
    "load_ofa_model",
    "load_ofa_tokenizer",
    "render_parity_report",
    "score_candidates",
]

_LOCATIONS = {
    "OFAConfig": "config",
    "OFAForVQA": "vqa",
    "OFAModel": "modeling",
    "Trie": "generation",
    "VQAInputs": "vqa",
    "beam_search": "generation",
    "check_parity": "parity",
    "load_ofa": "loading",
    "load_ofa_model": "loading",
    "load_ofa_tokenizer": "tokenization",
    "render_parity_report": "parity",
    "score_candidates": "generation",
}


def __getattr__(name: str):
    # Lazy re-exports keep `import vlmbench_plugins.models.ofa` cheap (no torch import).
    if name in _LOCATIONS:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_LOCATIONS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
