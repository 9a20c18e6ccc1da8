"""Evaluation protocols: a protocol file applied to a task (filters, metric options, prompts, candidates),
``--metric-args`` over it, the run's identity, ``score --protocol``, and the options the study protocol
relies on (whole-answer Exact Match and WUPS, the 8-bit scope)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vlmbench.cli import cli
from vlmbench.errors import SpecError, VlmbenchError
from vlmbench.evaluation.plan import metric_specs_for
from vlmbench.evaluation.run_spec import find_protocol
from vlmbench.plugin.loading import load_plugins, resolve_task
from vlmbench.tasks.protocol import load_protocol


@pytest.fixture(scope="module")
def study():
    return find_protocol("study", load_plugins())


def test_the_study_protocol_changes_how_a_task_is_asked_and_scored(study):
    task = resolve_task("abo_sample", load_plugins())
    assert task.samples
    under = study.apply(task)
    assert under.samples is task.samples  # the data already read is shared
    assert under.spec.filters == [] and task.spec.filters != []
    assert under.spec.prompt_template("ofa") == "Question: {question} Answer:"
    assert under.spec.prompt_template("blip") == task.spec.prompt_template("blip")
    sample = under.samples[0]
    assert under.candidates_for(sample) == ("yes", "no", "cannot determine", sample.answers[0])
    assert under.hash != task.hash  # other requests: other cached answers
    specs = {m.name: m.options for m in metric_specs_for(under, None, {"wups": {"weight": "0.6"}})}
    assert specs["wups"] == {"mode": "lowercase", "weight": "0.6"} and specs["bertscore"] == {
        "rescale": False
    }
    assert [m.name for m in metric_specs_for(under, ["exact_match"], {})] == ["exact_match"]
    assert metric_specs_for(under, ["exact_match"], {})[0].options == {"normalize": False, "lowercase": True}
    with pytest.raises(VlmbenchError, match="not among the metrics scored"):
        metric_specs_for(under, ["exact_match"], {"wups": {"weight": "0.6"}})
    assert study.hash == find_protocol("study", load_plugins()).hash
    assert study.identity()["name"] == "study" and study.finetune["prompt"] == "Question:{question}"


def test_a_protocol_file_is_checked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("protocol: x\nversion: '1'\nfilterz: []\n")
    with pytest.raises(SpecError, match="did you mean 'filters'"):
        load_protocol(bad)
    bad.write_text("protocol: x\nversion: '1'\nfilters: [first_wurd]\n")
    with pytest.raises(SpecError, match="first_word"):
        load_protocol(bad)
    res = CliRunner().invoke(cli, ["run", "-m", "prior", "-t", "abo_sample", "--protocol", "studdy"])
    assert res.exit_code == 2 and "did you mean 'study'" in res.stderr


def test_whole_answer_matching_options():
    plugins = load_plugins()
    em = plugins.create_metric("exact_match", {"normalize": "false", "lowercase": "true"})
    assert em.score(["Gray ", "gray chair", "grey"], ["gray", "Gray", "gray"])["exact_match"] == [
        1.0,
        0.0,
        0.0,
    ]
    default = plugins.create_metric("exact_match")
    assert default.score(["The gray."], ["gray"])["exact_match"] == [1.0]
    from vlmbench_plugins.metrics.wups import answer_items

    assert answer_items(" The Red., Blue", "lowercase") == ["the red.", "blue"]
    assert answer_items(" The Red., Blue", "normalized") == ["red", "blue"]


def test_score_with_a_protocol_records_it(tmp_path, study):
    source = tmp_path / "preds.csv"
    source.write_text("prediction,answer,difficulty\nGray,gray,0\nthe gray one,gray,1\nwood,Wood,2\n")
    res = CliRunner().invoke(cli, ["score", str(source), "--protocol", "study", "--metrics", "exact_match",
                                   "-o", str(tmp_path / "out"), "-q", "--no-cache"])  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["protocol"]["hash"] == study.hash and data["config"]["filters"] == []
    assert data["metrics"]["exact_match"]["value"] == pytest.approx(2 / 3)  # the verbose answer is wrong


@pytest.mark.slow(seconds=4)
def test_the_8bit_scope_keeps_small_linear_layers(tiny_checkpoint):
    """``int8_min_out_features=N``: every Linear layer with at most N outputs stays in full precision."""
    plugins = load_plugins()
    model = plugins.create_model(
        "blip",
        {"pretrained": str(tiny_checkpoint("blip")), "load_in_8bit": "true", "int8_min_out_features": "32"},
    )
    import torch
    import transformers

    skipped = {name.replace("\\", "") for name in model._int8_skip_modules()}
    loaded = transformers.BlipForQuestionAnswering.from_pretrained(tiny_checkpoint("blip"))
    linear = {n: m.out_features for n, m in loaded.named_modules() if isinstance(m, torch.nn.Linear)}
    assert skipped == {n for n, out in linear.items() if out <= 32} and len(skipped) < len(linear)
    assert model.identity()["int8_scope"] == {"linear_out_features_above": 32}
    plain = plugins.create_model("blip", {"pretrained": str(tiny_checkpoint("blip")), "load_in_8bit": "true"})
    assert plain._int8_skip_modules() is None and "int8_scope" not in plain.identity()
