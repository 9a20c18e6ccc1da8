"""Checkpoint reading: hub folders (bin/safetensors, with or without ``model.``), fairseq .pt
files (renamed modules, version keys, stored arguments), tied embeddings, readable diffs."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch
from ofa_testing import tiny_config
from safetensors.torch import save_file

from vlmbench_plugins.models.ofa.config import OFAConfig
from vlmbench_plugins.models.ofa.loading import (
    OFACheckpointError,
    infer_config,
    load_ofa,
    load_ofa_model,
    load_weights,
    normalize_state_dict,
)
from vlmbench_plugins.models.ofa.modeling import OFAModel


class NotAllowed:
    """Stands for an arbitrary class in a pickle; weights-only loading must refuse it."""


def _inputs():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.tensor([[0, 11, 12, 13, 2], [0, 21, 2, 1, 1]])
    images = torch.randn(2, 3, 64, 64, generator=generator)
    decoder_ids = torch.tensor([[0, 31, 32], [0, 41, 42]])
    return input_ids, images, decoder_ids


def _outputs(model: OFAModel) -> torch.Tensor:
    with torch.no_grad():
        return model(*_inputs()).logits


def _port_state_dict(model: OFAModel, prefix: str = "") -> dict[str, torch.Tensor]:
    """A state dict as the port saves it: all three tied names, plus the index buffers (with a
    code-position table one entry longer than ours, as one published checkpoint has)."""
    state = {prefix + k: v for k, v in model.state_dict().items()}
    for side in ("encoder", "decoder"):
        state[f"{prefix}{side}.token_rp_bucket"] = getattr(model, side).token_rp_bucket.clone()
        state[f"{prefix}{side}.image_rp_bucket"] = getattr(model, side).image_rp_bucket.clone()
    state[f"{prefix}decoder.image_position_idx"] = torch.cat(
        [model.decoder.image_position_idx, torch.tensor([1024])]
    )
    return state


def _write_hub_folder(folder, model, prefix="", fmt="bin"):
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({**model.config.to_dict(), "architectures": ["OFAModel"], "model_type": "ofa"})
    )
    state = _port_state_dict(model, prefix)
    if fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:
        # safetensors refuses aliased tensors: keep one of the tied names, as save_pretrained does.
        state.pop(prefix + "decoder.embed_tokens.weight")
        state.pop(prefix + "decoder.output_projection.weight")
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize(
    ("prefix", "fmt"), [("", "bin"), ("model.", "bin"), ("", "safetensors"), ("model.", "safetensors")]
)
def test_hub_folder_round_trip(tmp_path, tiny_model, prefix, fmt):
    folder = _write_hub_folder(tmp_path / "hub", tiny_model, prefix, fmt)
    loaded = load_ofa(folder)
    assert loaded.source_format == ("safetensors" if fmt == "safetensors" else "torch")
    model = loaded.model
    assert not model.training
    assert model.config == tiny_model.config
    assert model.decoder.output_projection.weight is model.encoder.embed_tokens.weight
    assert model.decoder.embed_tokens is model.encoder.embed_tokens
    assert torch.equal(model.decoder.image_position_idx, tiny_model.decoder.image_position_idx)
    assert torch.allclose(_outputs(model), _outputs(tiny_model), atol=1e-6)


def test_load_with_dtype_keeps_counters_and_tie(tmp_path, tiny_model):
    folder = _write_hub_folder(tmp_path / "hub", tiny_model)
    model = load_ofa_model(folder, dtype=torch.float64)
    assert model.encoder.embed_tokens.weight.dtype == torch.float64
    assert model.encoder.embed_images.bn1.num_batches_tracked.dtype == torch.long
    assert model.decoder.output_projection.weight is model.encoder.embed_tokens.weight


def test_tied_embeddings_must_agree(tiny_model):
    state = _port_state_dict(tiny_model)
    state["decoder.output_projection.weight"] = state["decoder.output_projection.weight"] + 0.5
    with pytest.raises(OFACheckpointError, match=r"tied embeddings differ.*output_projection"):
        normalize_state_dict(state)
    with pytest.raises(OFACheckpointError, match="tied embeddings differ"):
        load_weights(OFAModel(tiny_model.config), state)
    # An untied output projection is fine when the configuration says so.
    untied = OFAModel(tiny_config(share_decoder_input_output_embed=False))
    load_weights(untied, state)
    assert not torch.equal(untied.decoder.output_projection.weight, untied.encoder.embed_tokens.weight)


def _fairseq_state_dict(model: OFAModel) -> dict[str, torch.Tensor]:
    renames = {
        "self_attn_mid_layer_norm": None,  # encoder: attn_ln, decoder: self_attn_ln
        "cross_attn_mid_layer_norm": "cross_attn_ln",
        "ffn_layer_norm": "ffn_layernorm",
        "cross_attn_layer_norm": "encoder_attn_layer_norm",
        "cross_attn": "encoder_attn",
    }
    state = {}
    for key, value in _port_state_dict(model).items():
        parts = key.split(".")
        for i, part in enumerate(parts):
            if part in renames:
                parts[i] = renames[part] or ("attn_ln" if parts[0] == "encoder" else "self_attn_ln")
        state[".".join(parts)] = value
    state["encoder.version"] = torch.tensor([3.0])
    state["decoder.version"] = torch.tensor([3.0])
    return state


def test_fairseq_checkpoint(tmp_path, tiny_model):
    state = _fairseq_state_dict(tiny_model)
    assert any(".attn_ln." in k for k in state) and any(".encoder_attn." in k for k in state)
    args = argparse.Namespace(encoder_embed_dim=32, activation_fn="gelu", encoder_normalize_before=True)
    path = tmp_path / "vqa_tiny.pt"
    torch.save(
        {
            "args": args,
            "cfg": {"model": vars(args), "task": {"patch_image_size": 64}},
            "model": state,
            "extra_state": {"best": np.float64(0.5)},  # numpy scalars occur in fairseq metadata
        },
        path,
    )
    loaded = load_ofa(path)
    assert loaded.source_format == "fairseq"
    assert loaded.metadata == {"patch_image_size": 64}
    config = loaded.model.config
    assert (config.d_model, config.encoder_layers, config.encoder_attention_heads, config.resnet_blocks) == (
        32,
        2,
        4,
        (1, 1, 1),
    )
    assert torch.allclose(_outputs(loaded.model), _outputs(tiny_model), atol=1e-6)


def test_fairseq_checkpoint_with_foreign_class_is_refused(tmp_path, tiny_model):
    path = tmp_path / "unsafe.pt"
    torch.save(
        {"args": None, "cfg": {"model": {}}, "model": _fairseq_state_dict(tiny_model), "x": NotAllowed()},
        path,
    )
    with pytest.raises(OFACheckpointError, match="NotAllowed"):
        load_ofa_model(path)


def test_infer_config_from_weights(tiny_model):
    inferred = infer_config(normalize_state_dict(_port_state_dict(tiny_model)))
    # Dropout leaves no trace in weights; everything structural must be recovered.
    assert dataclasses.replace(inferred, dropout=tiny_model.config.dropout) == tiny_model.config


def test_readable_diff_lists_missing_unexpected_and_shapes(tiny_model):
    state = _port_state_dict(tiny_model)
    del state["decoder.layers.1.fc1.bias"]
    state["decoder.layers.1.adapter.weight"] = torch.zeros(3)
    state["encoder.image_proj.weight"] = torch.zeros(32, 512)
    with pytest.raises(OFACheckpointError) as error:
        load_weights(OFAModel(tiny_model.config), state)
    message = str(error.value)
    assert "missing from checkpoint (1):\n  decoder.layers.1.fc1.bias" in message
    assert "unexpected in checkpoint (1):\n  decoder.layers.1.adapter.weight" in message
    assert (
        "shape mismatches (1):\n  encoder.image_proj.weight: checkpoint [32, 512] vs model [32, 1024]"
        in message
    )


def test_wrong_size_configuration_is_reported_not_crashed(tmp_path, tiny_model):
    folder = _write_hub_folder(tmp_path / "hub", tiny_model)
    with pytest.raises(
        OFACheckpointError, match=r"shape mismatches.*\n.*embed_tokens.weight: checkpoint \[120, 32\]"
    ):
        load_ofa_model(folder, config=tiny_config(vocab_size=150))
    with pytest.raises(OFACheckpointError, match="no weights file"):
        load_ofa_model(tmp_path)


def test_config_from_port_json_keys():
    values = {
        "activation_function": "gelu",
        "architectures": ["OFAModel"],
        "d_model": 256,
        "encoder_layers": 4,
        "decoder_layers": 4,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 1024,
        "decoder_ffn_dim": 1024,
        "resnet_type": "resnet50",
        "encoder_drop_path_rate": 0.1,
        "init_std": 0.02,
        "transformers_version": "4.18.0.dev0",
        "use_ofasys": False,
    }
    config = OFAConfig.from_dict(values)
    assert config == OFAConfig.preset("tiny")
    assert config.extra == {"use_ofasys": False}
    assert OFAConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown resnet_type"):
        OFAConfig(resnet_type="resnet9")
