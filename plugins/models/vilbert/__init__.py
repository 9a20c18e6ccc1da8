"""ViLBERT (12-in-1 multi-task and pretrained checkpoints) implemented in plain PyTorch.

Submodules: ``config`` (VilbertConfig), ``modeling`` (the networks), ``loading`` (strict checkpoint
loading), ``parity`` (comparison with the original implementation's outputs), ``features`` (region
features), ``tokenization`` (questions) and ``inference`` (answer logits for a model plugin).

Names are resolved lazily so that importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VilbertConfig": "config",
    "VilbertForVLTasks": "modeling",
    "VilbertForPreTraining": "modeling",
    "VilbertOutput": "modeling",
    "build_model": "modeling",
    "load_vilbert": "loading",
    "save_safetensors": "loading",
    "CheckpointError": "loading",
    "CheckpointMismatchError": "loading",
    "check_parity": "parity",
    "render_parity_report": "parity",
    "ParityReport": "parity",
    "QuestionTokenizer": "tokenization",
    "RegionFeatures": "features",
    "RegionFeatureExtractor": "features",
    "ResNetRegionExtractor": "grid_features",
    "NumpyFeatureReader": "features",
    "LmdbFeatureReader": "features",
    "answer_logits": "inference",
    "AnswerVocabulary": "inference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
