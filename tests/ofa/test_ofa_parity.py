"""Numerical parity with the official implementation on the shipped reference fixture."""

from __future__ import annotations

import torch
from ofa_testing import FIXTURES

from vlmbench_plugins.models.ofa.parity import check_parity, main, render_parity_report

FIXTURE = FIXTURES / "ofa_tiny_parity.pt"


def test_shipped_fixture_matches_within_tolerance():
    report = check_parity(FIXTURE)
    logits, encoder = report.output("logits"), report.output("encoder_last_hidden_state")
    assert logits.max_abs_diff <= 1e-5 and encoder.max_abs_diff <= 1e-5
    assert logits.shape == (2, 4, 120)
    assert encoder.shape == (2, 22, 32)  # 4x4 patches + 6 text tokens
    assert {check.name for check in report.buffers} == {
        "token_rp_bucket[:64,:64]",
        "image_rp_bucket[:300,:300]",
        "decoder.image_position_idx",
    }
    assert all(check.equal and check.mismatches == 0 for check in report.buffers)
    assert report.passed


def test_report_rendering_and_cli_entry(capsys):
    text = render_parity_report(check_parity(FIXTURE))
    assert "PASSED" in text and "logits [2, 4, 120]" in text and "FAIL" not in text
    assert main([str(FIXTURE)]) == 0
    assert "PASSED" in capsys.readouterr().out


def test_a_perturbed_fixture_fails(tmp_path):
    fixture = torch.load(FIXTURE, weights_only=True)
    fixture["state_dict"] = dict(fixture["state_dict"])
    key = "encoder.layers.1.fc2.weight"
    weight = fixture["state_dict"][key].clone()
    weight[0, 0] += 0.1  # one entry: a uniform shift would vanish in the next LayerNorm
    fixture["state_dict"][key] = weight
    sliced = fixture["buffer_slices"]["token_rp_bucket[:64,:64]"].clone()
    sliced[3, 5] += 1
    fixture["buffer_slices"]["token_rp_bucket[:64,:64]"] = sliced
    path = tmp_path / "perturbed.pt"
    torch.save(fixture, path)
    report = check_parity(path)
    assert not report.passed
    assert all(check.max_abs_diff > 1e-5 and not check.passed for check in report.outputs)
    assert [c.mismatches for c in report.buffers if c.name.startswith("token")] == [1]
    assert "FAILED" in render_parity_report(report)
    assert main([str(path)]) == 1
