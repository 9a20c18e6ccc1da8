"""Each published size, built on the meta device, has exactly the official key/shape manifest.

The manifests list the port's ``state_dict``, which includes five index buffers. Here those are
non-persistent (recomputed, never loaded), so they are compared through ``named_buffers``.
"""

from __future__ import annotations

import json

import pytest
import torch
from ofa_testing import FIXTURES, SIZES

from vlmbench_plugins.models.ofa.config import OFAConfig
from vlmbench_plugins.models.ofa.loading import diff_state_dict, normalize_state_dict
from vlmbench_plugins.models.ofa.modeling import INDEX_BUFFERS, OFAModel

# Parameter counts (millions, tied embedding once) published with the checkpoints.
PUBLISHED_PARAMS = {"tiny": 33.5, "medium": 92.9, "base": 182.2, "large": 473.0, "huge": 929.5}
KEY_COUNTS = {"tiny": 541, "medium": 847, "base": 965, "large": 1625, "huge": 1901}
INDEX_BUFFER_KEYS = {
    "encoder.token_rp_bucket",
    "encoder.image_rp_bucket",
    "decoder.token_rp_bucket",
    "decoder.image_rp_bucket",
    "decoder.image_position_idx",
}


def _manifest(size: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / f"ofa_{size}_keys.json").read_text())


def _meta_model(size: str) -> OFAModel:
    with torch.device("meta"):
        return OFAModel(OFAConfig.preset(size))


@pytest.mark.parametrize("size", SIZES)
def test_meta_model_has_exactly_the_manifest(size):
    manifest = _manifest(size)
    assert len(manifest) == KEY_COUNTS[size]
    model = _meta_model(size)
    persistent = {key: list(value.shape) for key, value in model.state_dict().items()}
    buffers = {
        key: list(value.shape)
        for key, value in model.named_buffers(remove_duplicate=False)
        if key.rpartition(".")[2] in INDEX_BUFFERS
    }
    assert set(buffers) == INDEX_BUFFER_KEYS
    assert not set(buffers) & set(persistent)  # index tables never travel in a state dict
    ours = {**persistent, **buffers}
    assert sorted(set(manifest) - set(ours)) == []
    assert sorted(set(ours) - set(manifest)) == []
    assert {k: v for k, v in ours.items() if manifest[k] != v} == {}


@pytest.mark.parametrize("size", SIZES)
def test_parameter_count_matches_published(size):
    assert round(_meta_model(size).num_parameters() / 1e6, 1) == PUBLISHED_PARAMS[size]


@pytest.mark.parametrize("size", SIZES)
def test_manifest_shaped_checkpoint_passes_the_strict_check(size):
    """A checkpoint with every manifest key (index buffers included) normalises to a clean diff."""
    fake = {key: torch.empty(shape, device="meta") for key, shape in _manifest(size).items()}
    # The three tied names hold one tensor in a real checkpoint.
    embed = fake["encoder.embed_tokens.weight"]
    fake["decoder.embed_tokens.weight"] = embed
    fake["decoder.output_projection.weight"] = embed
    normalized = normalize_state_dict(fake)
    assert not INDEX_BUFFER_KEYS & set(normalized)
    assert diff_state_dict(_meta_model(size), normalized).ok
