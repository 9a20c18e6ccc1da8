from __future__ import annotations

import math

import pytest
import torch

from vlmbench_plugins.models.vilbert.parity import check_parity, load_fixture, render_parity_report

from .conftest import ALT_FIXTURE, PRETRAINED_FIXTURE, TINY_FIXTURE

MULTITASK_OUTPUTS = [
    "vil_prediction", "vil_prediction_gqa", "vil_logit", "vil_binary_prediction", "vil_tri_prediction",
    "vision_prediction", "vision_logit", "linguisic_prediction", "linguisic_logit",
]  # fmt: skip


def test_shipped_fixture_every_output_within_tolerance():
    report = check_parity(TINY_FIXTURE)
    assert report.variant == "multitask"
    assert [o.name for o in report.outputs] == MULTITASK_OUTPUTS
    for output in report.outputs:
        assert output.shape == output.expected_shape
        assert output.max_abs_diff <= 1e-5, (output.name, output.max_abs_diff)
    assert report.passed


def test_second_config_from_original_code():
    # other widths and schedule, no task tokens, sum fusion, relu, dynamic attention, odd batch
    report = check_parity(ALT_FIXTURE)
    assert report.config["task_specific_tokens"] is False
    assert report.config["dynamic_attention"] is True
    for output in report.outputs:
        assert output.max_abs_diff <= 1e-5, (output.name, output.max_abs_diff)
    # odd batch: the original returns the pretraining alignment score, one row per sample
    binary = next(o for o in report.outputs if o.name == "vil_binary_prediction")
    assert binary.shape == (3, 2)
    assert report.passed


def test_pretraining_layout_fixture():
    report = check_parity(PRETRAINED_FIXTURE)
    assert report.variant == "pretrained"
    assert [o.name for o in report.outputs] == [
        "prediction_scores_t",
        "prediction_scores_v",
        "seq_relationship_score",
    ]
    assert all(o.max_abs_diff <= 1e-5 for o in report.outputs)
    assert report.passed


def test_parity_detects_a_small_weight_change():
    data = load_fixture(TINY_FIXTURE)
    state = dict(data["state_dict"])
    key = "bert.encoder.c_layer.1.biattention.value2.weight"
    state[key] = state[key].clone()
    state[key][0, 0] += 1e-2
    report = check_parity({**data, "state_dict": state})
    assert not report.passed
    failing = {o.name for o in report.outputs if not o.passed}
    assert "vil_prediction" in failing
    text = render_parity_report(report)
    assert text.splitlines()[-1].startswith("FAIL")
    assert any(line.startswith("vil_prediction ") and line.endswith("FAIL") for line in text.splitlines())


def test_shape_mismatch_and_missing_output_fail():
    data = load_fixture(TINY_FIXTURE)
    outputs = dict(data["outputs"])
    outputs["vil_logit"] = outputs["vil_logit"][:1]
    outputs["not_an_output"] = torch.zeros(1)
    report = check_parity({**data, "outputs": outputs})
    rows = {o.name: o for o in report.outputs}
    assert not rows["vil_logit"].passed and math.isinf(rows["vil_logit"].max_abs_diff)
    assert not rows["not_an_output"].passed and rows["not_an_output"].shape is None
    assert not report.passed


def test_render_report_lists_every_output():
    report = check_parity(TINY_FIXTURE, tolerance=1e-5)
    text = render_parity_report(report)
    for name in MULTITASK_OUTPUTS:
        assert name in text
    assert text.splitlines()[-1].startswith("PASS")
    assert "tolerance: 1.0e-05" in text
    summary = report.to_dict()
    assert summary["passed"] is True and summary["max_abs_diff"] <= 1e-5


def test_bad_fixture_is_reported():
    with pytest.raises(ValueError, match="lacks"):
        load_fixture({"config": {}, "state_dict": {}})
