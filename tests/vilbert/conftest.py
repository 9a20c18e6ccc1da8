from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlmbench_plugins.models.vilbert.config import VilbertConfig
from vlmbench_plugins.models.vilbert.loading import load_state_dict_strict
from vlmbench_plugins.models.vilbert.modeling import VilbertForVLTasks

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vilbert"
TINY_FIXTURE = FIXTURES / "vilbert_tiny_parity.pt"
ALT_FIXTURE = FIXTURES / "vilbert_tiny_alt_parity.pt"
PRETRAINED_FIXTURE = FIXTURES / "vilbert_tiny_pretrained_parity.pt"


@pytest.fixture(scope="session")
def tiny_fixture() -> dict:
    return torch.load(TINY_FIXTURE, map_location="cpu", weights_only=True)


@pytest.fixture()
def tiny_model(tiny_fixture: dict) -> VilbertForVLTasks:
    model = VilbertForVLTasks(VilbertConfig.from_dict(tiny_fixture["config"]))
    load_state_dict_strict(model, tiny_fixture["state_dict"])
    return model.eval()


def small_config(**overrides) -> VilbertConfig:
    """A small random-weight config for tests that do not compare with the original outputs."""
    values = {
        "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
        "intermediate_size": 24, "max_position_embeddings": 32, "v_feature_size": 12, "v_target_size": 5,
        "v_hidden_size": 16, "v_num_hidden_layers": 2, "v_num_attention_heads": 2, "v_intermediate_size": 20,
        "bi_hidden_size": 8, "bi_num_attention_heads": 2, "v_biattention_id": [0, 1], "t_biattention_id": [1, 2],
    }  # fmt: skip
    values.update(overrides)
    return VilbertConfig.from_dict(values)
