"""LoRA fine-tuning of a tiny BLIP on CPU: it learns, reloads through lora-blip, resumes exactly,
stops early, accumulates gradients correctly, and trains on 8-/4-bit (QLoRA) base weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from vlmbench.errors import VlmbenchError
from vlmbench.plugin.request import Batch, Request
from vlmbench_plugins.models.blip.finetune.checkpoints import latest_checkpoint
from vlmbench_plugins.models.blip.finetune.config import FinetuneConfig
from vlmbench_plugins.models.blip.finetune.data import epoch_batches
from vlmbench_plugins.models.blip.finetune.trainer import finetune

from .squares import make_squares_task

# Tuned so that the tiny model learns the colours within a few seconds on one CPU thread (every seed
# from 0 to 5 reaches a validation exact match of 0.8 or more; the test uses seed 0).
LEARNING = {"rank": 8, "learning_rate": 2e-2, "lr_scheduler": "constant", "epochs": 8, "batch_size": 8,
            "dropout": 0.0, "num_workers": 0, "log_every": 4, "device": "cpu"}  # fmt: skip
QUIET = {"log": lambda _text: None}


def _config(task, ckpt, out, **options) -> FinetuneConfig:
    return FinetuneConfig(
        task=str(task.yaml), output_dir=out, pretrained=str(ckpt), **{**LEARNING, **options}
    )


def _adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _create(name: str, **args):
    from vlmbench.plugin.loading import load_plugins
    from vlmbench.plugin.registry import load_target

    entry = load_plugins().models.get(name)
    given = {k: str(v) for k, v in args.items() if v is not None}
    return load_target(entry.target).create(entry, given, device="cpu")


def _requests(task, split: str) -> list[Request]:
    from vlmbench.plugin.loading import resolve_task
    from vlmbench.tasks.dataset import load_split
    from vlmbench.tasks.images import decode_image

    spec = resolve_task(task.yaml).spec
    loaded, source = load_split(spec.dataset, split)
    return [
        Request(s.id, "generate", s.question, s.question, s.image, s.image_id,
                image=decode_image(source.read(s.image)))
        for s in loaded.samples
    ]  # fmt: skip


@pytest.fixture(scope="module")
def squares64(tmp_path_factory):
    return make_squares_task(tmp_path_factory.mktemp("squares64"), {"train": 64, "val": 16, "test": 16})


@pytest.fixture(scope="module")
def trained(squares64, tiny_blip, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("VLMBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        torch.set_num_threads(1)
        out = tmp_path_factory.mktemp("trained") / "colours"
        return finetune(_config(squares64, tiny_blip, out), **QUIET)


def test_validation_exact_match_rises_from_chance(trained):
    state = trained.state
    start = state.initial_validation["val_em"]
    best = max(v["val_em"] for v in state.validations)
    assert start <= 0.3, start  # four colours: an untrained model is at chance or worse
    assert best >= 0.8, [v["val_em"] for v in state.validations]
    assert state.validations[-1]["val_loss"] < state.initial_validation["val_loss"] / 2
    assert state.status == "completed"
    assert state.global_step == 8 * 8  # 8 epochs of 64 samples in batches of 8
    assert state.best_value == best and state.validations[-1]["n"] == 16
    # The metrics log holds the start, every epoch's validation and the training loss.
    events = [json.loads(line) for line in (trained.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "val"] == [0, *range(8, 65, 8)]
    assert len([e for e in events if e["event"] == "train"]) == 64 // 4
    saved = json.loads((trained.output_dir / "train_state.json").read_text())
    assert saved["global_step"] == 64 and saved["status"] == "completed"


def test_output_folder_holds_the_adapters(trained, tiny_blip):
    for which in ("best", "last"):
        folder = trained.output_dir / which
        config = json.loads((folder / "adapter_config.json").read_text())
        assert Path(config["base_model_name_or_path"]) == tiny_blip.resolve()
        assert config["r"] == 8 and config["lora_alpha"] == 16
        info = json.loads((folder / "vlmbench_finetune.json").read_text())
        assert info["lora"]["targets"] == "query_value" and info["lora"]["modules"] == 16
    best = json.loads((trained.output_dir / "best" / "vlmbench_finetune.json").read_text())
    assert best["step"] == trained.state.best_step
    assert best["validation"]["val_em"] == trained.state.best_value
    assert len(trained.adapted_modules) == 16


@pytest.mark.filterwarnings("ignore")
def test_adapter_reloads_through_lora_blip_with_the_same_answers(trained, squares64):
    from vlmbench.tasks.spec import GenerationSpec

    requests = _requests(squares64, "val")
    spec = GenerationSpec(max_new_tokens=4)
    in_memory = trained.plugin.generate(Batch(requests, trained.plugin.prepare(requests)), spec)
    reloaded = _create("lora-blip", adapter=trained.last_adapter)  # base read from the adapter
    reloaded.load()
    answers = reloaded.generate(Batch(requests, reloaded.prepare(requests)), spec)
    assert answers == in_memory
    merged = _create("lora-blip", adapter=trained.last_adapter, merge_adapter=True)
    merged.load()
    assert merged.generate(Batch(requests, merged.prepare(requests)), spec) == in_memory
    assert merged.fingerprint() != reloaded.fingerprint()


def test_harness_scores_the_best_adapter_as_validation_did(trained, squares64, tmp_path):
    """`vlmbench run --model lora-blip` on the val split gives the exact match validation recorded."""
    import vlmbench

    spec = yaml.safe_load(squares64.yaml.read_text())
    spec.update(split="val", task="squares_val")
    task_file = squares64.folder / "squares_val.yaml"
    task_file.write_text(yaml.safe_dump(spec))
    result = vlmbench.evaluate(
        "lora-blip", task_file, model_args={"adapter": str(trained.output_dir)},  # the folder -> best/
        output_dir=tmp_path / "runs", num_workers=0, cache=False, progress=False,
    )  # fmt: skip
    assert result.status == "ok"
    assert result.results["metrics"]["exact_match"]["value"] == pytest.approx(trained.state.best_value)
    model = result.results["model"]
    assert model["label"] == "lora-blip[colours]"
    assert model["adapter"].endswith("best") and model["identity"]["adapter_sha256"]
    assert model["finetune"]["step"] == trained.state.best_step


def test_resume_continues_the_step_count_exactly(squares, tiny_blip, tmp_path):
    options = {"epochs": 2, "dropout": 0.1, "log_every": 1, "val_limit": 4}  # dropout: RNG state matters
    straight = finetune(_config(squares, tiny_blip, tmp_path / "straight", **options), **QUIET)
    assert straight.state.global_step == 8  # 2 epochs x 32 samples / 8

    first = finetune(_config(squares, tiny_blip, tmp_path / "resumed", max_steps=3, **options), **QUIET)
    assert first.state.global_step == 3 and first.state.status == "max_steps"
    checkpoint = latest_checkpoint(tmp_path / "resumed")
    assert checkpoint.name == "step-00000003"
    saved = json.loads((checkpoint / "state.json").read_text())
    assert (saved["global_step"], saved["epoch"], saved["batch_in_epoch"]) == (3, 0, 3)

    # Resumed with the same max_steps, it has nothing left to do: not one more step.
    again = finetune(_config(squares, tiny_blip, tmp_path / "resumed", max_steps=3, resume="latest", **options),
                     **QUIET)  # fmt: skip
    assert again.state.global_step == 3 and again.state.status == "max_steps"

    with pytest.raises(VlmbenchError, match="already holds a fine-tuning run"):
        finetune(_config(squares, tiny_blip, tmp_path / "resumed", **options), **QUIET)
    with pytest.raises(VlmbenchError, match="rank"):
        finetune(_config(squares, tiny_blip, tmp_path / "resumed", resume="latest", **{**options, "rank": 4}),
                 **QUIET)  # fmt: skip

    resumed = finetune(_config(squares, tiny_blip, tmp_path / "resumed", resume="latest", **options), **QUIET)
    assert resumed.state.global_step == saved["global_step"] + 5  # the 5 steps that were left
    assert resumed.state.status == "completed"
    a, b = _adapter_weights(straight.last_adapter), _adapter_weights(resumed.last_adapter)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    events = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == list(range(1, 9))
    assert any(e["event"] == "resume" and e["step"] == 3 for e in events)


def test_more_epochs_continue_a_finished_run(squares, tiny_blip, tmp_path):
    out = tmp_path / "run"
    finetune(_config(squares, tiny_blip, out, epochs=1, val_limit=4), **QUIET)
    longer = finetune(_config(squares, tiny_blip, out, epochs=2, val_limit=4, resume="latest"), **QUIET)
    assert longer.state.global_step == 4 + 4 and longer.state.epoch == 2
    assert [v["step"] for v in longer.state.validations] == [4, 8]
    assert len(list((out / "checkpoints").glob("step-*"))) == 2  # --keep-checkpoints 2


def test_early_stopping_triggers(squares, tiny_blip, tmp_path):
    # No validation loss can improve by 10 nats: after the first validation sets the best, every
    # following one counts against the patience of 2.
    config = _config(squares, tiny_blip, tmp_path / "early", epochs=10, monitor="val_loss", min_delta=10.0,
                     early_stopping_patience=2, val_limit=4)  # fmt: skip
    result = finetune(config, **QUIET)
    assert result.state.status == "early_stopped"
    assert result.state.epoch == 3 and result.state.global_step == 3 * 4
    assert result.state.best_step == 4 and result.state.evaluations_without_improvement == 2
    events = [json.loads(x) for x in (tmp_path / "early" / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "early_stop"
    assert json.loads((tmp_path / "early" / "best" / "vlmbench_finetune.json").read_text())["step"] == 4


def test_gradient_accumulation_matches_a_larger_batch(squares, tiny_blip, tmp_path):
    """Two accumulated batches of 4 take the step one batch of 8 takes (every answer here has the same
    number of tokens, so the token averages agree)."""
    options = {"epochs": 1, "val_split": None, "max_steps": 2, "log_every": 1}
    big = finetune(_config(squares, tiny_blip, tmp_path / "big", batch_size=8, **options), **QUIET)
    small = finetune(
        _config(squares, tiny_blip, tmp_path / "acc", batch_size=4, grad_accum=2, **options), **QUIET
    )
    assert big.state.global_step == small.state.global_step == 2
    a, b = _adapter_weights(big.last_adapter), _adapter_weights(small.last_adapter)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    # An epoch of 8 batches accumulated 3 at a time takes 3 steps (the last one over 2 batches).
    odd = finetune(_config(squares, tiny_blip, tmp_path / "odd", batch_size=4, grad_accum=3,
                           **{**options, "max_steps": None}), **QUIET)  # fmt: skip
    assert odd.state.global_step == 3


def test_epoch_batches_are_deterministic_and_split_evenly():
    one = epoch_batches(10, 3, seed=1, epoch=0)
    assert one == epoch_batches(10, 3, seed=1, epoch=0) != epoch_batches(10, 3, seed=1, epoch=1)
    assert sorted(i for b in one for i in b) == list(range(10))
    shards = [epoch_batches(10, 2, seed=1, epoch=0, rank=r, world_size=3) for r in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]  # 10 padded to 12: 4 samples per process
    assert set().union(*(set(i for b in s for i in b) for s in shards)) == set(range(10))


def test_no_train_split_is_a_clear_error(tiny_blip, tmp_path):
    task = make_squares_task(tmp_path / "task", {"train": 4, "val": 4, "test": 4})
    spec = yaml.safe_load(task.yaml.read_text())
    spec.pop("train_split")
    task.yaml.write_text(yaml.safe_dump(spec))
    with pytest.raises(VlmbenchError, match="names no train split"):
        finetune(_config(task, tiny_blip, tmp_path / "out"), **QUIET)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_qlora_trains_on_quantised_base_weights(bits, squares, tiny_blip, tmp_path):
    import bitsandbytes as bnb

    config = _config(squares, tiny_blip, tmp_path / bits, quantization=bits, epochs=1, max_steps=2,
                     val_limit=4, gradient_checkpointing=True)  # fmt: skip
    result = finetune(config, **QUIET)
    layer = bnb.nn.Linear8bitLt if bits == "8bit" else bnb.nn.Linear4bit
    assert any(isinstance(m, layer) for m in result.plugin.model.modules())
    assert result.state.global_step == 2
    weights = _adapter_weights(result.last_adapter)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())
    reloaded = _create("lora-blip", adapter=result.last_adapter, **{f"load_in_{bits}": True})
    reloaded.load()
    requests = _requests(squares, "val")[:4]
    from vlmbench.tasks.spec import GenerationSpec

    spec = GenerationSpec(max_new_tokens=4)
    assert reloaded.generate(Batch(requests, reloaded.prepare(requests)), spec) == result.plugin.generate(
        Batch(requests, result.plugin.prepare(requests)), spec
    )


def test_fingerprint_follows_the_adapter_content(trained, tmp_path):
    copy = shutil.copytree(trained.output_dir / "best", tmp_path / "elsewhere" / "best")
    best = _create("lora-blip", adapter=trained.output_dir / "best")
    assert _create("lora-blip", adapter=copy).fingerprint() == best.fingerprint()
    assert _create("lora-blip", adapter=trained.output_dir).fingerprint() == best.fingerprint()
    assert _create("lora-blip", adapter=trained.output_dir / "last").fingerprint() != best.fingerprint()
    assert _create("blip", pretrained=best.checkpoint).fingerprint() != best.fingerprint()
