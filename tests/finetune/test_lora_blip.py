"""The lora-blip model plugin: adapter required, base model from the adapter, skip reports, identity."""

from __future__ import annotations

import json

import pytest
import tiny_models
from click.testing import CliRunner

from vlmbench import hf
from vlmbench.cli import cli
from vlmbench.errors import ArgError

from .test_finetune import _create


@pytest.fixture(scope="module")
def adapter(tiny_blip, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter") / "qv"
    return tiny_models.make_lora_adapter(tiny_blip, out, "BlipForQuestionAnswering", ["query", "value"])


def test_adapter_is_required():
    with pytest.raises(ArgError, match="needs an adapter"):
        _create("lora-blip")


def test_base_checkpoint_comes_from_the_adapter(adapter, tiny_blip, tmp_path):
    model = _create("lora-blip", adapter=adapter)
    assert model.local_dir == tiny_blip.resolve()
    assert model.describe()["default_checkpoint"] == str(tiny_blip.resolve())
    ident = model.identity()
    assert ident["adapter_sha256"] == hf.tree_sha256(adapter)
    assert ident["checkpoint_sha256"] == hf.tree_sha256(tiny_blip)
    assert model.label() == "lora-blip[qv]"
    # pretrained= overrides the base named by the adapter
    other = tiny_models.build("blip", tmp_path / "other")
    assert _create("lora-blip", adapter=adapter, pretrained=other).local_dir == other.resolve()


def test_adapter_without_a_base_name_needs_pretrained(adapter, tiny_blip, tmp_path):
    import shutil

    nameless = shutil.copytree(adapter, tmp_path / "nameless")
    config = json.loads((nameless / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    (nameless / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ArgError, match="does not name its base model"):
        _create("lora-blip", adapter=nameless)
    assert _create("lora-blip", adapter=nameless, pretrained=tiny_blip).local_dir == tiny_blip.resolve()


def test_answers_differ_from_the_base_model_and_follow_the_adapter(adapter, tiny_blip, squares, tmp_path):
    import vlmbench

    common = {"output_dir": tmp_path / "runs", "num_workers": 0, "cache": False, "progress": False}
    base = vlmbench.evaluate("blip", squares.yaml, model_args={"pretrained": str(tiny_blip)}, **common)
    tuned = vlmbench.evaluate("lora-blip", squares.yaml, model_args={"adapter": str(adapter)}, **common)
    explicit = vlmbench.evaluate(
        "blip", squares.yaml, model_args={"pretrained": str(tiny_blip), "adapter": str(adapter)}, **common
    )
    raw = [[json.loads(x)["raw"] for x in (r.run_dir / "predictions.jsonl").read_text().splitlines()]
           for r in (base, tuned, explicit)]  # fmt: skip
    assert raw[1] == raw[2] != raw[0]  # lora-blip is blip with adapter=, and the adapter matters
    assert tuned.results["model"]["adapter_sha256"] == hf.tree_sha256(adapter)
    assert tuned.run_dir != base.run_dir


def test_missing_adapter_is_reported_as_skipped(squares, tmp_path):
    result = CliRunner().invoke(cli, [
        "run", "-m", "lora-blip", "-t", str(squares.yaml), "-o", str(tmp_path / "runs"), "--no-cache", "-q",
        "--num-workers", "0", "-a", f"adapter={tmp_path / 'nowhere'}",
    ])  # fmt: skip
    assert result.exit_code == 4, result.output  # the only model was skipped: nothing was evaluated
    assert "lora-blip[nowhere]: skipped" in result.output and "nowhere" in result.output


def test_listed_with_the_other_models():
    result = CliRunner().invoke(cli, ["list", "models"])
    assert result.exit_code == 0 and "lora-blip" in result.output


def test_the_blip_package_paths():
    from vlmbench_plugins.models.blip import BlipVQA
    from vlmbench_plugins.models.blip.vqa import BlipVQA as Moved

    assert BlipVQA is Moved
