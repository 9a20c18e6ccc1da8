from __future__ import annotations

import pickle

import pytest
import torch

from vlmbench_plugins.models.vilbert.config import VilbertConfig
from vlmbench_plugins.models.vilbert.loading import (
    TIED_DECODER_KEY,
    WORD_EMBEDDINGS_KEY,
    CheckpointError,
    CheckpointMismatchError,
    fill_tied_weights,
    load_state_dict_strict,
    load_vilbert,
    normalize_state_dict,
    read_safetensors_metadata,
    read_state_dict,
    save_safetensors,
)
from vlmbench_plugins.models.vilbert.modeling import VilbertForPreTraining, VilbertForVLTasks


def _outputs(model, inputs):
    with torch.inference_mode():
        return model(**inputs)


def _old_names(state: dict) -> dict:
    renamed = {}
    for key, value in state.items():
        if "LayerNorm" in key and key.endswith(".weight"):
            key = key[: -len("weight")] + "gamma"
        elif "LayerNorm" in key and key.endswith(".bias"):
            key = key[: -len("bias")] + "beta"
        renamed[key] = value
    return renamed


def test_gamma_beta_are_renamed(tiny_fixture):
    old = _old_names(tiny_fixture["state_dict"])
    assert any(k.endswith(".gamma") for k in old) and not any(k.endswith("LayerNorm.weight") for k in old)
    assert normalize_state_dict(old).keys() == tiny_fixture["state_dict"].keys()
    model = VilbertForVLTasks(VilbertConfig.from_dict(tiny_fixture["config"]))
    load_state_dict_strict(model, old)
    expected = tiny_fixture["outputs"]["vil_prediction"]
    assert torch.allclose(_outputs(model.eval(), tiny_fixture["inputs"]).vil_prediction, expected, atol=1e-5)


def test_module_prefix_is_stripped(tiny_fixture):
    prefixed = {f"module.{k}": v for k, v in tiny_fixture["state_dict"].items()}
    assert normalize_state_dict(prefixed).keys() == tiny_fixture["state_dict"].keys()


def test_tied_decoder_weight(tiny_fixture):
    state = dict(tiny_fixture["state_dict"])
    del state[TIED_DECODER_KEY]
    model = VilbertForVLTasks(VilbertConfig.from_dict(tiny_fixture["config"]))
    load_state_dict_strict(model, state)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert torch.equal(model.cls.predictions.decoder.weight, state[WORD_EMBEDDINGS_KEY])
    # also after assign-loading, which replaces parameters
    with torch.device("meta"):
        meta = VilbertForVLTasks(VilbertConfig.from_dict(tiny_fixture["config"]))
    load_state_dict_strict(meta, tiny_fixture["state_dict"], assign=True)
    assert meta.cls.predictions.decoder.weight is meta.bert.embeddings.word_embeddings.weight
    # only the decoder name present
    only_decoder = dict(tiny_fixture["state_dict"])
    del only_decoder[WORD_EMBEDDINGS_KEY]
    assert torch.equal(fill_tied_weights(only_decoder)[WORD_EMBEDDINGS_KEY], state[WORD_EMBEDDINGS_KEY])


def test_untied_checkpoint_is_refused(tiny_fixture):
    state = dict(tiny_fixture["state_dict"])
    state[TIED_DECODER_KEY] = state[TIED_DECODER_KEY] + 1.0
    model = VilbertForVLTasks(VilbertConfig.from_dict(tiny_fixture["config"]))
    with pytest.raises(CheckpointError, match="differs from"):
        load_state_dict_strict(model, state)


def test_broken_state_dict_gives_readable_diff(tiny_fixture):
    state = dict(tiny_fixture["state_dict"])
    del state["vil_logit.bias"]
    removed_layer = [k for k in state if k.startswith("bert.encoder.c_layer.1.")]
    for key in removed_layer:
        del state[key]
    state["bert.encoder.c_layer.9.extra.weight"] = torch.zeros(2)
    state["vil_tri_prediction.weight"] = torch.zeros(4, 32)
    model = VilbertForVLTasks(VilbertConfig.from_dict(tiny_fixture["config"]))
    before = model.vil_logit.weight.detach().clone()
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict_strict(model, state)
    message = str(info.value)
    n_missing = len(removed_layer) + 1
    assert f"{n_missing} missing, 1 unexpected, 1 shape-mismatched keys" in message
    assert (
        "missing from the checkpoint" in message
        and "bert.encoder.c_layer.1.biattention.query1.weight" in message
    )
    assert "unexpected in the checkpoint (1):\n  bert.encoder.c_layer.9.extra.weight  [2]" in message
    assert "vil_tri_prediction.weight  [4, 32] vs [3, 32]" in message
    # long lists are cut, with a per-module count of the rest
    assert (
        f"... and {n_missing - 12} more; by module: bert.encoder.c_layer.1 x{len(removed_layer)}, vil_logit x1"
        in message
    )
    assert len(message.splitlines()) < 30
    diff = info.value.diff
    assert ("vil_logit.bias", (1,)) in diff.missing
    assert torch.equal(model.vil_logit.weight, before)  # nothing was loaded


def test_pretrained_checkpoint_into_multitask_model_hints(tmp_path):
    config = VilbertConfig.from_dict(torch.load(_tiny(), weights_only=True)["config"])
    pretrained = VilbertForPreTraining(config)
    path = tmp_path / "pretrained_model.bin"
    torch.save(pretrained.state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="variant='pretrained'"):
        load_vilbert(path, config=config, variant="multitask")
    loaded = load_vilbert(path, config=config)  # auto-detects the layout
    assert isinstance(loaded, VilbertForPreTraining)


def _tiny():
    from .conftest import TINY_FIXTURE

    return TINY_FIXTURE


def test_bin_round_trip(tmp_path, tiny_fixture, tiny_model):
    path = tmp_path / "multi_task_model.bin"
    torch.save(_old_names(tiny_model.state_dict()), path)
    loaded = load_vilbert(path, config=tiny_fixture["config"])
    assert isinstance(loaded, VilbertForVLTasks) and not loaded.training
    expected, got = _outputs(tiny_model, tiny_fixture["inputs"]), _outputs(loaded, tiny_fixture["inputs"])
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b)


def test_bin_with_wrapper_dict(tmp_path, tiny_fixture, tiny_model):
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": tiny_model.state_dict(), "epoch": 3}, path)
    assert read_state_dict(path).keys() == tiny_model.state_dict().keys()


def test_safetensors_round_trip(tmp_path, tiny_fixture, tiny_model):
    path = save_safetensors(tiny_model, tmp_path / "vilbert.safetensors")
    raw = read_state_dict(path)
    assert TIED_DECODER_KEY not in raw and len(raw) == len(tiny_model.state_dict()) - 1
    assert read_safetensors_metadata(path)["vilbert_variant"] == "multitask"
    loaded = load_vilbert(path)  # config comes from the file's metadata
    assert loaded.config == tiny_model.config
    for a, b in zip(
        _outputs(tiny_model, tiny_fixture["inputs"]), _outputs(loaded, tiny_fixture["inputs"]), strict=True
    ):
        assert torch.equal(a, b)


def test_dtype_on_load(tmp_path, tiny_model):
    path = save_safetensors(tiny_model, tmp_path / "vilbert.safetensors")
    half = load_vilbert(path, dtype=torch.bfloat16)
    assert half.bert.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    assert half.cls.predictions.decoder.weight is half.bert.embeddings.word_embeddings.weight


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.bin"
    with open(path, "wb") as handle:
        pickle.dump({"bert.embeddings.word_embeddings.weight": _Exploit()}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="weights-only"):
        read_state_dict(path)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_vilbert(tmp_path / "multi_task_model.bin")
