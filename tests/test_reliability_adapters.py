"""Hostile and broken LoRA adapters (``run -m lora-blip -a adapter=DIR``), with default settings.

Every case is one ``Error:`` line and exit 2 from the plan, before any weights load: the adapter's config,
its weights file and its fit to the checkpoint's layers (a model built on the meta device) are checked
first. Nothing in a pickle runs, nothing the size of a hostile rank is allocated, and an adapter that
matches nothing in the model is refused instead of being reported with the base model's answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import tiny_models
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from vlmbench.cli import cli

GROUP = "Hostile adapters"


class _RunsACommand:
    """Unpickling this runs a shell command (what a hostile weights file does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def blip(tiny_checkpoint) -> Path:
    return tiny_checkpoint("blip")


@pytest.fixture(scope="module")
def adapter(blip, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adapter") / "qv"
    return tiny_models.make_lora_adapter(blip, out, "BlipForQuestionAnswering", ["query", "value"])


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def _config(folder: Path, **changes) -> None:
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _hostile(adapter: Path, root: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """Adapter folders, each with one fault, and a text the error names."""
    cases: dict[str, tuple[Path, str]] = {}

    def case(name: str, expect: str) -> Path:
        folder = shutil.copytree(adapter, root / re.sub(r"[^a-z0-9]+", "-", name))
        cases[name] = (folder, expect)
        return folder

    weights = _weights(adapter)
    evil = case("pickle adapter_model.bin that would run a command", "refusing to load")
    (evil / "adapter_model.safetensors").unlink()
    torch.save({**weights, "payload": _RunsACommand(marker)}, evil / "adapter_model.bin")
    wrong = case("safetensors matrices of the wrong shape for their layer", "do not fit")
    save_file({k: torch.zeros(4, 7) if k.endswith("lora_A.weight") else v for k, v in weights.items()},
              wrong / "adapter_model.safetensors")  # fmt: skip
    blob = (adapter / "adapter_model.safetensors").read_bytes()
    (case("truncated safetensors", "truncated") / "adapter_model.safetensors").write_bytes(
        blob[: len(blob) // 2]
    )
    (
        case("safetensors claiming a 1 TiB header", "not a safetensors file") / "adapter_model.safetensors"
    ).write_bytes((1 << 40).to_bytes(8, "little") + blob[8:])
    (case("random bytes as safetensors", "not a safetensors") / "adapter_model.safetensors").write_bytes(
        os.urandom(4096)
    )
    _config(case("config targeting a layer the model lacks", "do not name"), target_modules=["nonexistent"])
    _config(case("config with r: -1", "r = -1"), r=-1)
    _config(case("config with r: 10^9", "r = 1000000000"), r=10**9)
    _config(case("config of an unknown peft_type", "'EVIL'"), peft_type="EVIL")
    (case("config nested 100,000 deep", "not valid JSON") / "adapter_config.json").write_text("[" * 100_000)
    config_dir = case("adapter_config.json that is a folder", "not a regular file")
    (config_dir / "adapter_config.json").unlink()
    (config_dir / "adapter_config.json").mkdir()
    nothing = case("keys that match no layer of the model", "none of")
    save_file({k.replace(".model.", ".model.other_tower.", 1): v for k, v in weights.items()},
              nothing / "adapter_model.safetensors")  # fmt: skip
    half = case("only lora_A matrices", "only one of the two")
    save_file({k: v for k, v in weights.items() if "lora_A" in k}, half / "adapter_model.safetensors")
    part = case("weights for some of the layers the config targets", "holds no weights for")
    save_file({k: v for k, v in weights.items() if ".value." not in k}, part / "adapter_model.safetensors")
    return cases


def _run(model: str, args: str, task: Path, out: Path):
    return CliRunner().invoke(
        cli, ["run", "-m", model, "-a", args, "-t", str(task), "-o", str(out), "--limit", "2", "-q"]
    )


def test_hostile_adapters_are_refused_before_any_model_work(adapter, blip, tiny_task, tmp_path, reliability):
    marker = tmp_path / "executed"
    cases = _hostile(adapter, tmp_path / "adapters", marker)
    for name, (folder, expect) in cases.items():
        result = _run("lora-blip", f"adapter={folder}", tiny_task, tmp_path / "runs")
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert result.exit_code == 2, (name, result.output[-2000:])
        assert isinstance(result.exception, SystemExit), (name, result.exception)
        assert len(errors) == 1 and expect in errors[0] and str(folder) in errors[0], (name, errors)
    assert not marker.exists()
    assert not list((tmp_path / "runs").rglob("results.json"))  # refused in the plan: no run started
    # Any transformers model takes adapter=: the same checks apply.
    folder = cases["keys that match no layer of the model"][0]
    result = _run("blip", f"pretrained={blip},adapter={folder}", tiny_task, tmp_path / "runs")
    assert result.exit_code == 2 and "none of" in result.output, result.output[-2000:]
    reliability.record_each(GROUP, cases, "one Error: line naming the adapter, exit 2, before any weights load; "
                            "nothing executed or allocated", prefix="adapter: ")  # fmt: skip
    reliability.record(GROUP, "adapter matching nothing, given to blip with adapter=", 1,
                       "one Error: line, exit 2 (never run as the base model)")  # fmt: skip


def _create(name: str, **args: object):
    """A model plugin instance as the plan creates it (weights not loaded)."""
    from vlmbench.plugin.loading import load_plugins
    from vlmbench.plugin.registry import load_target

    entry = load_plugins().models.get(name)
    return load_target(entry.target).create(entry, {k: str(v) for k, v in args.items()}, device="cpu")


def test_an_adapter_changed_after_the_plan_is_checked_again_before_peft(adapter, tmp_path, reliability):
    """What the plan checked may change before the weights load: the loaded model is checked again
    before PEFT injects anything; the meta-device layers the plan checks against are the loaded
    model's; and what PEFT injected is compared with the file."""
    from peft import PeftModel

    from vlmbench.errors import VlmbenchError
    from vlmbench.hf.adapters import check_applied, model_layers, read_adapter

    folder = shutil.copytree(adapter, tmp_path / "changing")
    model = _create("lora-blip", adapter=folder)  # valid when planned
    planned = model._meta_layers()
    save_file({k.replace(".model.", ".model.other_tower.", 1): v for k, v in _weights(adapter).items()},
              folder / "adapter_model.safetensors")  # fmt: skip
    with pytest.raises(VlmbenchError, match="none of its 16 layers"):
        model.load()
    base = model.resolve_model_class().from_pretrained(model.local_dir, local_files_only=True)
    assert planned == model_layers(base)
    injected = PeftModel.from_pretrained(base, str(adapter))
    check_applied(read_adapter(adapter), injected)
    part = shutil.copytree(adapter, tmp_path / "part")
    save_file(
        {k: v for k, v in _weights(adapter).items() if ".value." not in k}, part / "adapter_model.safetensors"
    )
    with pytest.raises(VlmbenchError, match="not applied as its file says"):
        check_applied(read_adapter(part), injected)
    reliability.record(GROUP, "adapter replaced by one matching nothing between the plan and the load", 1,
                       "one Error: before PEFT applies it; the base model never answers as the adapter")  # fmt: skip


def test_adapter_files_read_without_torch_objects(adapter, tmp_path):
    """The reader's account of a good adapter: ranks, shapes and the base it names."""
    from vlmbench.hf.adapters import read_adapter

    checked = read_adapter(adapter)
    assert len(checked.layers) == 16 and {lay.rank for lay in checked.layers.values()} == {4}
    assert all(layer.endswith((".query", ".value")) for layer in checked.layers)
    assert checked.base and Path(checked.base).is_dir()
