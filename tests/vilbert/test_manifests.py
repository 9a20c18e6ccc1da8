from __future__ import annotations

import json

import pytest
import torch

from vlmbench_plugins.models.vilbert.config import VilbertConfig
from vlmbench_plugins.models.vilbert.modeling import VilbertForPreTraining, VilbertForVLTasks

from .conftest import FIXTURES

# config/bert_base_6layer_6conect.json of the original project
BASE_JSON = {
    "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768,
    "initializer_range": 0.02, "intermediate_size": 3072, "max_position_embeddings": 512,
    "num_attention_heads": 12, "num_hidden_layers": 12, "type_vocab_size": 2, "vocab_size": 30522,
    "v_feature_size": 2048, "v_target_size": 1601, "v_hidden_size": 1024, "v_num_hidden_layers": 6,
    "v_num_attention_heads": 8, "v_intermediate_size": 1024, "bi_hidden_size": 1024, "bi_num_attention_heads": 8,
    "bi_intermediate_size": 1024, "bi_attention_type": 1, "v_attention_probs_dropout_prob": 0.1,
    "v_hidden_act": "gelu", "v_hidden_dropout_prob": 0.1, "v_initializer_range": 0.02,
    "v_biattention_id": [0, 1, 2, 3, 4, 5], "t_biattention_id": [6, 7, 8, 9, 10, 11], "pooling_method": "mul",
}  # fmt: skip


def _manifest(name: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / name).read_text())


def _layout(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("cls", "manifest", "count"),
    [
        (VilbertForVLTasks, "vilbert_multitask_keys.json", 560),
        (VilbertForPreTraining, "vilbert_pretrained_keys.json", 533),
    ],
)
def test_base_config_matches_manifest(cls, manifest, count):
    with torch.device("meta"):
        model = cls(VilbertConfig.base())
    layout, expected = _layout(model), _manifest(manifest)
    assert len(layout) == count
    assert sorted(set(expected) - set(layout)) == []
    assert sorted(set(layout) - set(expected)) == []
    assert {k: v for k, v in layout.items() if expected[k] != v} == {}
    assert list(layout) == list(expected)  # same order too


def test_official_json_gives_the_base_config():
    from_json = VilbertConfig.from_dict({**BASE_JSON, "task_specific_tokens": True})
    assert from_json == VilbertConfig.base()
    assert from_json.extra["pooling_method"] == "mul"
    with torch.device("meta"):
        model = VilbertForVLTasks(from_json)
    assert _layout(model) == _manifest("vilbert_multitask_keys.json")


def test_base_parameter_count():
    with torch.device("meta"):
        model = VilbertForVLTasks(VilbertConfig.base())
    unique = sum(p.numel() for p in model.parameters())  # tied decoder counted once
    with_tied = sum(torch.Size(shape).numel() for shape in _manifest("vilbert_multitask_keys.json").values())
    vocab, hidden = 30522, 768
    assert unique == with_tied - vocab * hidden
