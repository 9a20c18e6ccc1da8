"""The ``ofa`` model plugin end to end (a tiny random OFA saved in the Hugging Face layout, read
back through the real tokenizer and loader) and ``vlmbench check-parity ofa``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from ofa_testing import FIXTURES, randomize, tiny_config, write_tiny_bpe
from PIL import Image
from safetensors.torch import save_file

from vlmbench import hashing
from vlmbench.cli import cli
from vlmbench.errors import ArgError
from vlmbench.plugin.loading import load_plugins, resolve_task
from vlmbench_plugins.models.ofa import checkpoint as ofa_checkpoint
from vlmbench_plugins.models.ofa import plugin as ofa_plugin
from vlmbench_plugins.models.ofa.modeling import OFAModel
from vlmbench_plugins.models.ofa.tokenization import load_ofa_tokenizer
from vlmbench_plugins.models.ofa.vqa import OFAForVQA

from vlmbench_testing import SAMPLE_TASK

SAMPLE = SAMPLE_TASK
FIXTURE = FIXTURES / "ofa_tiny_parity.pt"
N = 6
TOP_K = 8

load_plugins().call_each("register_commands", cli=cli)


def _tiny_model(vocab_size: int, seed: int = 0) -> OFAModel:
    return randomize(OFAModel(tiny_config(vocab_size=vocab_size)), seed=seed)


def _save_hub_folder(folder: Path, model: OFAModel) -> Path:
    """config.json + model.safetensors as the port's save_pretrained writes them (one of the tied
    embedding names kept), next to the tokenizer files already in ``folder``."""
    config = {**model.config.to_dict(), "architectures": ["OFAModel"], "model_type": "ofa"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    tied = ("decoder.embed_tokens.weight", "decoder.output_projection.weight")
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k not in tied}
    save_file(state, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ofa_checkpoint")
    write_tiny_bpe(folder)
    return _save_hub_folder(folder, _tiny_model(len(load_ofa_tokenizer(folder))))


@pytest.fixture(scope="module")
def rank_task(tmp_path_factory) -> Path:
    """abo_sample asked as a rank task over its most frequent answers (absolute data paths)."""
    spec = {
        "task": "abo_sample_rank",
        "version": 1,
        "dataset": {"path": str(SAMPLE / "abo_sample.csv"), "image_root": str(SAMPLE / "images")},
        "request_type": "rank",
        "candidates": {"source": "task_answers", "top_k": TOP_K},
        "metrics": ["exact_match"],
    }
    path = tmp_path_factory.mktemp("rank_task") / "abo_sample_rank.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def _run(tmp_path: Path, task: str | Path, model_args: str, *extra: str) -> tuple[dict, list[dict]]:
    out = tmp_path / "runs"
    result = CliRunner().invoke(
        cli,
        ["run", "--model", "ofa", "--task", str(task), "--limit", str(N), "--model-args", model_args,
         "--output-dir", str(out), "--quiet", *extra],
    )  # fmt: skip
    (results_path,) = out.glob("*/*/results.json")
    results = json.loads(results_path.read_text())
    # exit status 4: the only model was skipped, so nothing was evaluated
    assert result.exit_code == (0 if results["status"] == "ok" else 4), result.output
    predictions_path = results_path.with_name("predictions.jsonl")
    rows = (
        [json.loads(line) for line in predictions_path.read_text().splitlines()]
        if predictions_path.exists()
        else []
    )
    return results, rows


# -- check-parity ----------------------------------------------------------------------------------


def test_check_parity_command_passes_on_the_shipped_fixture():
    result = CliRunner().invoke(cli, ["check-parity", "ofa", str(FIXTURE)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1] == "PASSED"
    assert any(
        line.startswith("logits [2, 4, 120]: max |diff| = ") and line.endswith(" ok") for line in lines
    )
    for name in ("token_rp_bucket[:64,:64]", "image_rp_bucket[:300,:300]", "decoder.image_position_idx"):
        assert f"index buffer {name} " in result.output


def _nudge(fixture: dict, part: str, key: str, index: tuple[int, int], delta: float) -> None:
    """Change one element of the tensor ``fixture[part][key]`` by ``delta``, on copies."""
    tensors = dict(fixture[part])
    changed = tensors[key].clone()
    changed[index] += delta
    tensors[key] = changed
    fixture[part] = tensors


def _perturbed(tmp_path: Path, *, weight: bool, buffer: bool) -> Path:
    fixture = torch.load(FIXTURE, weights_only=True)
    if weight:
        _nudge(fixture, "state_dict", "decoder.layers.0.fc1.weight", (3, 7), 0.05)
    if buffer:
        _nudge(fixture, "buffer_slices", "image_rp_bucket[:300,:300]", (10, 20), 1)
    path = tmp_path / "perturbed.pt"
    torch.save(fixture, path)
    return path


def test_check_parity_command_fails_on_perturbed_weights(tmp_path):
    result = CliRunner().invoke(
        cli, ["check-parity", "ofa", str(_perturbed(tmp_path, weight=True, buffer=False))]
    )
    assert result.exit_code == 1, result.output
    logits_line = next(line for line in result.output.splitlines() if line.startswith("logits"))
    assert logits_line.endswith("FAIL")
    assert "index buffer image_rp_bucket[:300,:300] [300, 300]: ok" in result.output
    assert result.output.splitlines()[-1] == "FAILED"


def test_check_parity_command_checks_buffer_slices_whatever_the_tolerance(tmp_path):
    path = _perturbed(tmp_path, weight=False, buffer=True)
    result = CliRunner().invoke(cli, ["check-parity", "ofa", str(path), "--tolerance", "10"])
    assert result.exit_code == 1, result.output
    assert "index buffer image_rp_bucket[:300,:300] [300, 300]: FAIL (1 entries differ)" in result.output
    assert "index buffer token_rp_bucket[:64,:64] [64, 64]: ok" in result.output


def test_check_parity_command_rejects_a_file_that_is_not_a_fixture(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"config": {}, "state_dict": {}, "inputs": {"input_ids": torch.zeros(1)}}, path)
    result = CliRunner().invoke(cli, ["check-parity", "ofa", str(path)])
    assert result.exit_code == 2
    assert "missing inputs.patch_images" in result.output and "outputs" in result.output


# -- the plugin ------------------------------------------------------------------------------------


def _sample_inputs(limit: int = N):
    task = resolve_task("abo_sample", load_plugins())
    samples = task.samples[:limit]
    images = [Image.open(SAMPLE / "images" / s.image).convert("RGB") for s in samples]
    return samples, images


def test_generate_end_to_end_matches_the_library(tmp_path, checkpoint):
    results, rows = _run(
        tmp_path, "abo_sample", f"pretrained={checkpoint},resolution=64", "--batch-size", "3"
    )
    assert results["status"] == "ok" and len(rows) == N
    model = results["model"]
    assert model["parameters"] == _tiny_model(len(load_ofa_tokenizer(checkpoint))).num_parameters()
    assert (model["checkpoint_format"], model["prompt_style"], model["resolution"]) == (
        "folder",
        "pretrained",
        64,
    )
    identity = model["identity"]
    assert identity["num_beams"] == 5 and identity["rank_mode"] == "allcand"
    assert len(identity["weights_sha256"]) == 64 and len(identity["tokenizer_sha256"]) == 64

    # The plugin gives exactly what the library gives for the same inputs, with the task's
    # max_new_tokens (10) and the plugin's default beam width (5).
    vqa = OFAForVQA.from_pretrained(checkpoint, resolution=64)
    samples, images = _sample_inputs()
    expected = vqa.generate(images, [s.question for s in samples], max_new_tokens=10, num_beams=5)
    by_id = {row["sample_id"]: row for row in rows}
    assert [by_id[s.id]["raw"] for s in samples] == expected
    assert all(row["raw"] and row["answer"] == row["raw"].split()[0] for row in rows)


def test_max_new_tokens_overrides_the_task(tmp_path, checkpoint):
    _, rows = _run(
        tmp_path, "abo_sample", f"pretrained={checkpoint},resolution=64,max_new_tokens=2,num_beams=2",
        "--num-workers", "0",
    )  # fmt: skip
    tokenizer = load_ofa_tokenizer(checkpoint)
    lengths = [len(tokenizer(" " + row["raw"], add_special_tokens=False)["input_ids"]) for row in rows]
    assert max(lengths) <= 2 and min(lengths) >= 1


@pytest.mark.parametrize(
    ("request_type", "mode"), [("generate", "allcand"), ("rank", "allcand"), ("rank", "trie")]
)
def test_batched_and_unbatched_answers_agree(tmp_path, checkpoint, rank_task, request_type, mode):
    task = "abo_sample" if request_type == "generate" else rank_task
    args = f"pretrained={checkpoint},resolution=64,num_beams=3,rank_mode={mode}"
    runs = []
    for batch_size in ("1", "3"):
        _, rows = _run(
            tmp_path / batch_size, task, args, "--batch-size", batch_size, "--no-cache", "--num-workers", "0"
        )
        runs.append({row["sample_id"]: row for row in rows})
    alone, batched = runs
    assert len(alone) == N and alone.keys() == batched.keys()
    for sample_id, row in alone.items():
        assert batched[sample_id]["raw"] == row["raw"]
        if request_type == "rank":  # the scores too: rows never leak into each other
            names = [name for name, _ in row["top_candidates"]]
            assert [name for name, _ in batched[sample_id]["top_candidates"]] == names
            assert [score for _, score in batched[sample_id]["top_candidates"]] == pytest.approx(
                [score for _, score in row["top_candidates"]], abs=1e-4
            )


def test_rank_modes_choose_among_the_candidates(tmp_path, checkpoint, rank_task):
    candidates = resolve_task(rank_task, load_plugins()).candidates
    assert len(candidates) == TOP_K
    runs = {}
    for mode in ("allcand", "trie"):
        # With at least as many beams as candidates the constrained beam search is exact.
        args = f"pretrained={checkpoint},resolution=64,rank_mode={mode},num_beams={TOP_K}"
        results, rows = _run(tmp_path / mode, rank_task, args, "--num-workers", "0")
        assert results["status"] == "ok" and len(rows) == N
        for row in rows:
            assert row["answer"] in candidates
            assert all(name in candidates for name, _ in row["top_candidates"])
        runs[mode] = {row["sample_id"]: row for row in rows}
    for sample_id, full in runs["allcand"].items():
        constrained = runs["trie"][sample_id]
        assert constrained["answer"] == full["answer"]
        # Both rank by the same log-likelihood: the candidates the beam finished carry the
        # all-candidate scores, the others the documented floor.
        full_scores = dict(full["top_candidates"])
        reached = dict(constrained["top_candidates"])
        assert reached[full["answer"]] == pytest.approx(full_scores[full["answer"]], abs=1e-4)
        for name, score in reached.items():
            if name in full_scores and score > ofa_plugin.UNREACHED_SCORE:
                assert score == pytest.approx(full_scores[name], abs=1e-4)


def test_fairseq_file_with_a_tokenizer_folder(tmp_path, checkpoint):
    model = _tiny_model(len(load_ofa_tokenizer(checkpoint)), seed=1)
    path = tmp_path / "weights" / "vqa_tiny_best.pt"
    path.parent.mkdir()
    fairseq_args = {"encoder_embed_dim": 32, "activation_fn": "gelu"}
    torch.save(
        {"cfg": {"model": fairseq_args, "task": {"patch_image_size": 64}}, "model": model.state_dict()}, path
    )
    results, rows = _run(
        tmp_path, "abo_sample", f"pretrained={path},tokenizer={checkpoint}", "--num-workers", "0"
    )
    assert results["status"] == "ok" and len(rows) == N
    described = results["model"]
    assert (described["checkpoint_format"], described["prompt_style"], described["resolution"]) == (
        "fairseq",
        "finetuned",
        64,  # the checkpoint's stored image size
    )
    assert described["parameters"] == model.num_parameters()


def test_missing_checkpoint_is_reported_as_skipped(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    results, rows = _run(tmp_path, "abo_sample", f"pretrained={missing}")
    assert results["status"] == "skipped" and rows == []
    assert str(missing) in results["reason"] and "--model-args pretrained=PATH" in results["reason"]


def test_hub_checkpoint_absent_offline_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    results, _ = _run(tmp_path, "abo_sample", "pretrained=OFA-Sys/ofa-tiny")
    assert results["status"] == "skipped"
    assert (
        "'OFA-Sys/ofa-tiny'" in results["reason"]
        and "not in the local Hugging Face cache" in results["reason"]
    )


def test_fairseq_file_without_tokenizer_offline_names_the_tokenizer(tmp_path, monkeypatch, checkpoint):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    path = tmp_path / "vqa.pt"
    torch.save({"cfg": {"model": {}}, "model": {}}, path)
    results, _ = _run(tmp_path, "abo_sample", f"pretrained={path}")
    assert results["status"] == "skipped" and "tokenizer=FOLDER" in results["reason"]


def test_arguments_are_validated():
    entry = load_plugins().models.get("ofa")
    for bad in ({"resolution": "50"}, {"num_beams": "0"}, {"rank_mode": "greedy"}, {"size": "giant"}):
        with pytest.raises(ArgError):
            ofa_plugin.OFAModel.create(entry, bad)


def test_identity_follows_the_weights_and_hashes_are_cached(tmp_path, checkpoint, monkeypatch):
    entry = load_plugins().models.get("ofa")
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("vocab.json", "merges.txt", "config.json", "model.safetensors"):
        (folder / name).write_bytes((checkpoint / name).read_bytes())
    first = ofa_plugin.OFAModel.create(entry, {"pretrained": str(folder), "resolution": "64"})
    same = ofa_plugin.OFAModel.create(entry, {"pretrained": str(folder), "resolution": "64"})
    fingerprint = first.fingerprint()
    tokenizer_hash = first.identity()["tokenizer_sha256"]

    def no_hashing(path):
        raise AssertionError(f"{path} hashed again")

    with monkeypatch.context() as patch:  # unchanged weights: the remembered hash is used
        patch.setattr(hashing, "_sha256", no_hashing)
        patch.setattr(ofa_checkpoint, "_tokenizer_hash", lambda folder: tokenizer_hash)
        assert same.fingerprint() == fingerprint

    _save_hub_folder(folder, _tiny_model(len(load_ofa_tokenizer(folder)), seed=2))
    changed = ofa_plugin.OFAModel.create(entry, {"pretrained": str(folder), "resolution": "64"})
    assert changed.fingerprint() != fingerprint
    wider = ofa_plugin.OFAModel.create(
        entry, {"pretrained": str(folder), "resolution": "64", "num_beams": "3"}
    )
    assert wider.fingerprint() != changed.fingerprint()
