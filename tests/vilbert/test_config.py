from __future__ import annotations

import json

import pytest

from vlmbench_plugins.models.vilbert.config import ConfigError, VilbertConfig, coerce_config


def test_base_values():
    config = VilbertConfig.base()
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        30522, 768, 12, 12,
    )  # fmt: skip
    assert (config.v_feature_size, config.v_hidden_size, config.v_num_hidden_layers, config.v_intermediate_size) == (
        2048, 1024, 6, 1024,
    )  # fmt: skip
    assert (config.bi_hidden_size, config.bi_num_attention_heads) == (1024, 8)
    assert config.v_biattention_id == (0, 1, 2, 3, 4, 5)
    assert config.t_biattention_id == (6, 7, 8, 9, 10, 11)
    assert config.task_specific_tokens and config.fusion_method == "mul"


def test_from_dict_partial_and_round_trip(tmp_path):
    config = VilbertConfig.from_dict({"hidden_size": 32, "num_attention_heads": 4, "v_biattention_id": [0, 1],
                                      "t_biattention_id": [2, 3], "bi_intermediate_size": 7})  # fmt: skip
    assert config.hidden_size == 32 and config.v_biattention_id == (0, 1)
    assert config.extra == {"bi_intermediate_size": 7}
    path = tmp_path / "config.json"
    path.write_text(config.to_json_string())
    again = VilbertConfig.from_json_file(path)
    assert again == config and again.extra == config.extra
    assert json.loads(path.read_text())["t_biattention_id"] == [2, 3]
    assert coerce_config(path) == config and coerce_config(config.to_dict()) == config
    assert coerce_config(None) == VilbertConfig.base()


def test_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match="hiden_size"):
        VilbertConfig.from_dict({"hiden_size": 768})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"v_biattention_id": [0, 1], "t_biattention_id": [6]}, "same length"),
        ({"v_biattention_id": [0, 6]}, "image layers"),
        ({"t_biattention_id": [6, 7, 8, 9, 10, 12]}, "text layers"),
        ({"hidden_size": 770}, "not a multiple"),
        ({"hidden_act": "tanh"}, "hidden_act"),
        ({"fusion_method": "concat"}, "fusion_method"),
        ({"model": "roberta"}, "BERT"),
        ({"in_batch_pairs": True}, "not supported"),
    ],
)
def test_invalid_configs(values, message):
    with pytest.raises(ConfigError, match=message):
        VilbertConfig.from_dict(values)


def test_package_import_does_not_import_torch():
    # model registrations must stay cheap: the package resolves its names lazily
    import subprocess
    import sys

    code = "import sys, vlmbench_plugins.models.vilbert as v; assert 'torch' not in sys.modules; print(v.__all__[0])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
