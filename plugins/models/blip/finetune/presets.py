"""LoRA target-module presets for BLIP VQA, named as in the study, as explicit module patterns.

PEFT matches a *list* of names by suffix, so a bare ``dense`` would hit every layer called ``dense``:
the attention output projections, both feed-forward projections and the answer decoder's prediction
head transform (``text_decoder.cls.predictions.transform.dense``). Each preset is therefore one
regular expression that PEFT matches against the whole module name (``re.fullmatch``), naming exactly
the layers meant.

BLIP VQA (``BlipForQuestionAnswering``) has three parts. Its Linear layers are:

- image encoder (ViT): ``vision_model.encoder.layers.N.self_attn.{qkv,projection}`` and
  ``vision_model.encoder.layers.N.mlp.{fc1,fc2}``;
- question encoder (BERT, cross-attends to the image):
  ``text_encoder.encoder.layer.N.{attention,crossattention}.self.{query,key,value}``,
  ``text_encoder.encoder.layer.N.{attention,crossattention}.output.dense``,
  ``text_encoder.encoder.layer.N.intermediate.dense``, ``text_encoder.encoder.layer.N.output.dense``;
- answer decoder (BERT, cross-attends to the question): the same names under
  ``text_decoder.bert.encoder.layer.N.``, plus its prediction head
  ``text_decoder.cls.predictions.{transform.dense,decoder}``.

The study's names (query, key, value, output, dense) are BERT names: every preset adapts the question
encoder and the answer decoder, in their self-attention and their cross-attention; the image encoder
(whose attention is one fused ``qkv`` layer) stays frozen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vlmbench.api import ArgError, unknown_message

# The BERT layers of the question encoder and of the answer decoder.
_TEXT_LAYER = r"(?:text_encoder|text_decoder\.bert)\.encoder\.layer\.\d+"
_ATTENTION = r"(?:attention|crossattention)"


@dataclass(frozen=True)
class Preset:
    name: str
    study_name: str
    description: str
    pattern: str


def _preset(name: str, study_name: str, description: str, *alternatives: str) -> Preset:
    body = "|".join(alternatives)
    return Preset(name, study_name, description, rf"^{_TEXT_LAYER}\.(?:{body})$")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _preset(
            "query_value",
            "query+value",
            "attention query and value projections",
            rf"{_ATTENTION}\.self\.(?:query|value)",
        ),
        _preset(
            "query_value_out",
            "query+value+output",
            "query and value, plus each attention block's output projection",
            rf"{_ATTENTION}\.self\.(?:query|value)",
            rf"{_ATTENTION}\.output\.dense",
        ),
        _preset(
            "query_key_value",
            "query+key+value",
            "attention query, key and value projections",
            rf"{_ATTENTION}\.self\.(?:query|key|value)",
        ),
        _preset(
            "query_value_dense",
            "query+value+dense",
            "query and value, plus every dense layer of the transformer blocks: attention output "
            "projections and both feed-forward projections (not the prediction head)",
            rf"{_ATTENTION}\.self\.(?:query|value)",
            rf"{_ATTENTION}\.output\.dense",
            r"intermediate\.dense",
            r"output\.dense",
        ),
    )
}


def target_pattern(preset: str | None = None, pattern: str | None = None) -> str:
    """The module pattern to adapt: an explicit ``pattern`` (a regular expression over full module
    names), else the named ``preset``."""
    if pattern:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ArgError(f"invalid target pattern {pattern!r}: {exc}") from None
        return pattern
    name = preset or "query_value"
    if name not in PRESETS:
        raise ArgError(unknown_message("LoRA target preset", name, PRESETS))
    return PRESETS[name].pattern


def matching_modules(names: Iterable[str], pattern: str) -> list[str]:
    """The module names ``pattern`` selects, as PEFT selects them from a string ``target_modules``."""
    compiled = re.compile(pattern)
    return [n for n in names if compiled.fullmatch(n)]


def linear_names(model: Any) -> list[str]:
    """Names of a model's Linear layers (the layers LoRA can adapt)."""
    import torch

    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
