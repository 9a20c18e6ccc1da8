"""Properties of the recomputed index tables beyond the slices the parity fixture covers."""

from __future__ import annotations

import torch

from vlmbench_plugins.models.ofa.config import OFAConfig
from vlmbench_plugins.models.ofa.modeling import (
    image_position_ids,
    make_code_position_idx,
    make_image_bucket_position,
    make_token_bucket_position,
)


def test_token_buckets_are_linear_near_and_log_spaced_far():
    table = make_token_bucket_position(256, 1024)
    assert table.shape == (1024, 1024) and table.dtype == torch.long
    assert int(table.min()) == 0 and int(table.max()) == 510  # 2·256 - 1 rows in each layer's table
    index = torch.arange(1024)
    distance = index[:, None] - index[None, :]
    near = distance.abs() <= 128
    assert torch.equal(table[near], (distance + 255)[near])
    # Depends only on i - j, antisymmetric around bucket 255, non-decreasing in the distance.
    row = table[1023]  # distances 1023 .. 0
    assert torch.equal(table[500, 400], table[900, 800])
    assert torch.equal(table[400, 500] - 255, -(table[500, 400] - 255))
    assert (row[:-1] >= row[1:]).all()
    far = row[: 1023 - 128]
    assert far.unique().numel() < far.numel() / 4  # many distances share a far bucket


def test_image_buckets_follow_the_2d_offset():
    table = make_image_bucket_position(42, 83 * 83 + 3)
    assert table.shape == (1765, 1765)
    slot = image_position_ids(42, 42, 42)
    # Patch (r1, c1) against patch (r2, c2): (r1 - r2 + 41)·83 + (c1 - c2 + 41).
    assert int(table[slot[2 * 42 + 5], slot[7 * 42 + 1]]) == (2 - 7 + 41) * 83 + (5 - 1 + 41)
    assert int(table[slot[0], slot[0]]) == 41 * 83 + 41
    assert (table[0, 1:] == 6889).all() and (table[1:, 0] == 6890).all() and int(table[0, 0]) == 6891


def test_patch_slots_and_code_positions():
    assert image_position_ids(2, 3, 42).tolist() == [1, 2, 3, 43, 44, 45]
    code = make_code_position_idx(128, 42)  # 16×16 code grid
    assert code.shape == (1025,) and code[:3].tolist() == [0, 1, 2] and int(code[16 + 1]) == 43
    assert (code[257:] == 1024).all()
    assert make_code_position_idx(256, 42).shape == (1 + 32 * 32 + 768,)


def test_presets_follow_the_published_table():
    rows = {name: OFAConfig.preset(name) for name in ("tiny", "medium", "base", "large", "huge")}
    summary = {
        name: (
            c.d_model,
            c.encoder_ffn_dim,
            c.encoder_attention_heads,
            c.encoder_layers,
            c.decoder_layers,
            c.resnet_blocks,
        )
        for name, c in rows.items()
    }
    assert summary == {
        "tiny": (256, 1024, 4, 4, 4, (3, 4, 6)),
        "medium": (512, 2048, 8, 4, 4, (3, 4, 23)),
        "base": (768, 3072, 12, 6, 6, (3, 4, 23)),
        "large": (1024, 4096, 16, 12, 12, (3, 8, 36)),
        "huge": (1280, 5120, 16, 24, 12, (3, 8, 36)),
    }
    assert OFAConfig.preset("OFA-large", dropout=0.0).dropout == 0.0
    assert OFAConfig.preset("large").dropout == 0.1  # presets are copies
