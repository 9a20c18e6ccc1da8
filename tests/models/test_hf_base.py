"""The shared Hugging Face base: arguments, dtype, fingerprints, missing checkpoints, quantisation, adapters."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import tiny_models

from vlmbench import hf
from vlmbench.errors import ArgError
from vlmbench.plugin.args import Arg
from vlmbench.tasks.spec import GenerationSpec

from .conftest import GENERATIVE, create_model, run_model


def test_resolve_dtype():
    assert hf.resolve_dtype("auto", "cpu") == "float32"
    assert hf.resolve_dtype("bf16", "cpu") == "bfloat16"
    assert hf.resolve_dtype("fp16", "cuda") == "float16"
    assert hf.resolve_dtype("float32", "cuda") == "float32"
    with pytest.raises(ArgError, match="unknown dtype"):
        hf.resolve_dtype("int3", "cpu")


@pytest.mark.parametrize("name", GENERATIVE)
def test_every_hf_plugin_takes_the_standard_arguments(name):
    model = create_model(name, pretrained="owner/some-checkpoint")
    assert set(hf.HF_ARGS) <= set(model.args)
    assert set(hf.LIKELIHOOD_ARGS) <= set(model.args)
    assert model.arg_values["trust_remote_code"] is False
    assert model.checkpoint == "owner/some-checkpoint"
    assert create_model(name).checkpoint == model.entry.default_checkpoint


def test_argument_conflicts_are_errors(tiny_checkpoint):
    ckpt = tiny_checkpoint("blip")
    with pytest.raises(ArgError, match="exclude each other"):
        create_model("blip", pretrained=ckpt, load_in_8bit=True, load_in_4bit=True)
    with pytest.raises(ArgError, match="revision applies to Hub checkpoints"):
        create_model("blip", pretrained=ckpt, revision="main")
    with pytest.raises(ArgError, match="merge_adapter needs adapter"):
        create_model("blip", pretrained=ckpt, merge_adapter=True)
    with pytest.raises(ArgError, match="did you mean 'load_in_8bit'"):
        create_model("blip", pretrained=ckpt, load_in_8bits=True)


def test_fingerprint_follows_content_not_location(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint("blip")
    copy = shutil.copytree(ckpt, tmp_path / "elsewhere" / ckpt.name)
    a = create_model("blip", pretrained=ckpt)
    b = create_model("blip", pretrained=copy)
    assert a.fingerprint() == b.fingerprint()
    assert a.identity()["checkpoint_sha256"] == hf.tree_sha256(ckpt)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert create_model("blip", pretrained=copy).fingerprint() != a.fingerprint()
    # Options that cannot change answers do not change the fingerprint; those that can do.
    assert create_model("blip", pretrained=ckpt, rank_batch_size=3).fingerprint() == a.fingerprint()
    assert create_model("blip", pretrained=ckpt, rank_normalize="mean").fingerprint() != a.fingerprint()
    assert create_model("blip", pretrained=ckpt, load_in_8bit=True).identity()["quantization"] == "8bit"


def test_hub_fingerprint_names_checkpoint_and_revision():
    ident = create_model("qwen2.5-vl", revision="a" * 40).identity()
    assert ident["checkpoint"] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert ident["revision"] == ident["commit"] == "a" * 40
    other = create_model("qwen2.5-vl", revision="b" * 40)
    assert other.fingerprint() != create_model("qwen2.5-vl", revision="a" * 40).fingerprint()


def test_generation_is_greedy_whatever_the_checkpoint_suggests():
    from transformers import GenerationConfig

    model = create_model("qwen2.5-vl")
    shipped = GenerationConfig(do_sample=True, temperature=0.1, top_k=1, top_p=0.001, repetition_penalty=1.05,
                               eos_token_id=[7, 8], pad_token_id=0)  # fmt: skip
    model.model = SimpleNamespace(generation_config=shipped)
    config = model.generation_config(GenerationSpec(max_new_tokens=3))
    assert config.do_sample is False and config.num_beams == 1 and config.max_new_tokens == 3
    assert config.temperature is None and config.top_p is None and config.top_k is None
    assert config.repetition_penalty is None
    assert config.eos_token_id == [7, 8]  # special tokens are kept
    assert shipped.do_sample is True  # the model's own config is untouched
    sampled = model.generation_config(GenerationSpec(max_new_tokens=3, do_sample=True, temperature=0.5))
    assert sampled.do_sample is True and sampled.temperature == 0.5


def _skipped(run) -> str:
    assert run.exit_code == 4, run.output  # the only model was skipped: nothing was evaluated
    results = run.results
    assert results["status"] == "skipped"
    assert "skipped" in run.output
    return results["reason"]


@pytest.mark.parametrize("workers", [0, 2])
def test_missing_hub_checkpoint_is_reported_as_skipped(model_task, tmp_path, workers):
    run = run_model("blip", model_task.generate, tmp_path / "runs", workers=workers)
    reason = _skipped(run)
    assert "Salesforce/blip-vqa-base" in reason
    assert "HF_HUB_OFFLINE" in reason
    assert "--model-args pretrained=PATH" in reason
    assert "Salesforce/blip-vqa-base" in run.output and "pretrained=PATH" in run.output


def test_missing_directory_is_reported_as_skipped(model_task, tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    run = run_model("smolvlm", model_task.generate, tmp_path / "runs", model_args=f"pretrained={missing}")
    reason = _skipped(run)
    assert str(missing) in reason and "--model-args pretrained=PATH" in reason


def test_local_files_only_never_downloads(model_task, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    run = run_model("qwen2.5-vl", model_task.rank, tmp_path / "runs", model_args="local_files_only=true")
    reason = _skipped(run)
    assert "Qwen/Qwen2.5-VL-3B-Instruct" in reason and "local_files_only" in reason


def test_incomplete_directory_is_reported_as_skipped(tiny_checkpoint, model_task, tmp_path):
    broken = shutil.copytree(tiny_checkpoint("blip2"), tmp_path / "broken")
    (broken / "model.safetensors").unlink()
    run = run_model("blip2", model_task.generate, tmp_path / "runs", model_args=f"pretrained={broken}")
    reason = _skipped(run)
    assert str(broken) in reason and "pretrained=PATH" in reason


def test_wrong_family_is_a_clear_error(tiny_checkpoint, model_task, tmp_path):
    run = run_model("qwen2.5-vl", model_task.generate, tmp_path / "runs",
                    model_args=f"pretrained={tiny_checkpoint('smolvlm')}")  # fmt: skip
    assert run.exit_code == 2
    assert "expects a checkpoint of type" in run.output and "idefics3" in run.output


def test_parameters_are_counted_exactly(tiny_checkpoint):
    model = create_model("blip2", pretrained=tiny_checkpoint("blip2"))
    assert model.describe()["parameters"] is None  # not loaded yet
    model.load()
    assert model.describe()["parameters"] == sum(p.numel() for p in model.model.parameters())
    assert model.describe()["model_class"] == "Blip2ForConditionalGeneration"


@pytest.mark.filterwarnings("ignore")
def test_8bit_loading_on_cpu(tiny_checkpoint, model_task, tmp_path):
    import bitsandbytes as bnb

    ckpt = tiny_checkpoint("blip")
    model = create_model("blip", pretrained=ckpt, load_in_8bit=True)
    model.load()
    quantised = [m for m in model.model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert quantised, "no linear layer was loaded in 8 bits"
    full = create_model("blip", pretrained=ckpt)
    full.load()
    assert model.describe()["parameters"] == full.describe()["parameters"]

    run = run_model(
        "blip", model_task.generate, tmp_path / "runs", model_args=f"pretrained={ckpt},load_in_8bit=true"
    )
    assert run.exit_code == 0, run.output
    results = run.results
    assert results["status"] == "ok" and results["model"]["quantization"] == "8bit"
    assert results["model"]["identity"]["quantization"] == "8bit"
    assert results["model"]["fingerprint"] != full.fingerprint()
    assert all(p["status"] == "ok" and isinstance(p["raw"], str) for p in run.predictions)


@pytest.mark.filterwarnings("ignore")
def test_4bit_loading_on_cpu(tiny_checkpoint):
    import bitsandbytes as bnb

    ckpt = tiny_checkpoint("blip")
    model = create_model("blip", pretrained=ckpt, load_in_4bit=True)
    model.load()
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.model.modules())
    full = create_model("blip", pretrained=ckpt)
    full.load()
    # Packed 4-bit weights are counted by their logical shape.
    assert model.describe()["parameters"] == full.describe()["parameters"]


ADAPTER_TARGETS = {
    "blip": ("BlipForQuestionAnswering", ["query", "value"]),
    "qwen2.5-vl": ("Qwen2_5_VLForConditionalGeneration", ["q_proj", "v_proj"]),
}


@pytest.mark.parametrize("name", sorted(ADAPTER_TARGETS))
def test_adapter_loading(name, tiny_checkpoint, model_task, tmp_path):
    ckpt = tiny_checkpoint(name)
    model_class, targets = ADAPTER_TARGETS[name]
    adapter = tiny_models.make_lora_adapter(ckpt, tmp_path / "adapter", model_class, targets)
    base = run_model(name, model_task.generate, tmp_path / "base", model_args=f"pretrained={ckpt}")
    tuned = run_model(
        name, model_task.generate, tmp_path / "tuned", model_args=f"pretrained={ckpt},adapter={adapter}"
    )
    merged = run_model(name, model_task.generate, tmp_path / "merged",
                       model_args=f"pretrained={ckpt},adapter={adapter},merge_adapter=true")  # fmt: skip
    for run in (base, tuned, merged):
        assert run.exit_code == 0 and run.results["status"] == "ok", run.output
    b, t, m = base.results["model"], tuned.results["model"], merged.results["model"]
    assert t["adapter_sha256"] == hf.tree_sha256(adapter) == t["identity"]["adapter_sha256"]
    assert len({b["fingerprint"], t["fingerprint"], m["fingerprint"]}) == 3
    assert t["parameters"] > b["parameters"]  # the LoRA matrices
    assert m["parameters"] == b["parameters"]  # merged into the base weights
    tuned_answers = [p["raw"] for p in tuned.predictions]
    assert tuned_answers != [p["raw"] for p in base.predictions]
    assert [p["raw"] for p in merged.predictions] == tuned_answers


def test_missing_adapter_is_reported_as_skipped(tiny_checkpoint, model_task, tmp_path):
    missing = tmp_path / "no-adapter"
    run = run_model("blip", model_task.generate, tmp_path / "runs",
                    model_args=f"pretrained={tiny_checkpoint('blip')},adapter={missing}")  # fmt: skip
    reason = _skipped(run)
    assert "no-adapter" in reason and "adapter=PATH" in reason


class _ThirdPartyVLM(hf.HFModel):
    """The example of docs/models.md, pointed at BLIP-2 (whose processor inserts the image tokens)."""

    model_class = "AutoModelForImageTextToText"
    model_types = ("blip-2",)
    padding_side = "left"
    default_prompt = "Q: {question} A:"
    args = {"image_size": Arg(int, 32, "resize images to this size before the processor")}

    def prepare(self, requests):
        size = self.arg_values["image_size"]
        images = [r.image.resize((size, size)) for r in requests]
        text = [r.prompt for r in requests]
        return dict(self.processor(text=text, images=images, padding=True, return_tensors="pt"))

    def generate(self, batch, generation):
        inputs = self.to_device(self.batch_inputs(batch))
        out = self.model.generate(**inputs, generation_config=self.generation_config(generation))
        answers = out[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(answers, skip_special_tokens=True)


def test_a_third_party_subclass_gets_the_standard_machinery(tiny_checkpoint):
    from vlmbench.plugin.registry import ModelEntry
    from vlmbench.plugin.request import Batch

    from .conftest import sample_requests

    entry = ModelEntry(
        "my-vlm", "example:MyVLM", default_checkpoint="owner/my-vlm", request_types=("generate",)
    )
    assert set(hf.HF_ARGS) | {"image_size"} == set(_ThirdPartyVLM.args)
    assert _ThirdPartyVLM.create(entry).checkpoint == "owner/my-vlm"
    model = _ThirdPartyVLM.create(entry, {"pretrained": str(tiny_checkpoint("blip2")), "image_size": "40"})
    requests = sample_requests("generate", model.default_prompt)
    batch = Batch(requests, model.collate(requests))  # prepared before the weights, as in a worker
    model.load()
    answers = model.generate(batch, GenerationSpec(max_new_tokens=3))
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert model.describe()["parameters"] > 0 and model.identity()["checkpoint_sha256"]


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("qwen2.5-vl", {"max_pixels": 28 * 28 * 4}),
        ("smolvlm", {"do_image_splitting": False}),
        ("smolvlm", {"image_longest_edge": 32}),
    ],
)
def test_image_settings_reach_the_processor(name, args, tiny_checkpoint):
    from .conftest import sample_requests

    ckpt = tiny_checkpoint(name)
    default = create_model(name, pretrained=ckpt)
    changed = create_model(name, pretrained=ckpt, **args)
    requests = sample_requests("generate", default.default_prompt)
    # Fewer image tokens in the prompt, and a different fingerprint.
    assert changed.collate(requests)["input_ids"].shape[1] < default.collate(requests)["input_ids"].shape[1]
    assert changed.fingerprint() != default.fingerprint()


def test_image_settings_end_to_end(tiny_checkpoint, model_task, tmp_path):
    ckpt = tiny_checkpoint("qwen2.5-vl")
    run = run_model(
        "qwen2.5-vl", model_task.rank, tmp_path / "runs", model_args=f"pretrained={ckpt},max_pixels=3136"
    )
    assert run.exit_code == 0 and run.results["status"] == "ok", run.output
    with pytest.raises(ArgError, match="min_pixels"):
        create_model("qwen2.5-vl", pretrained=ckpt, min_pixels=5000, max_pixels=4000)
