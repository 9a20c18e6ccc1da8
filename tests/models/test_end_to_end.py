"""Every model plugin through the real command line on tiny checkpoints: generate, rank, batching."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from vlmbench.cli import cli

from .conftest import ALL_MODELS, GENERATIVE, run_model
from vlmbench_testing import SAMPLE_TASK

DEFAULTS = {
    "blip": "Salesforce/blip-vqa-base",
    "blip2": "Salesforce/blip2-opt-2.7b",
    "qwen2.5-vl": "Qwen/Qwen2.5-VL-3B-Instruct",
    "smolvlm": "HuggingFaceTB/SmolVLM-500M-Instruct",
    "clip": "ViT-B-32",
}


def test_list_models_describes_each_plugin():
    result = CliRunner().invoke(cli, ["list", "models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in ALL_MODELS:
        i = next(i for i, line in enumerate(lines) if line.split() and line.split()[0] == name)
        details = lines[i + 1]
        assert DEFAULTS[name] in details
        assert "parameters:" in details
        expected = "requests: rank" if name == "clip" else "requests: generate, rank"
        assert expected in details


@pytest.mark.parametrize("name", GENERATIVE)
def test_generate_end_to_end(name, tiny_checkpoint, model_task, tmp_path):
    ckpt = tiny_checkpoint(name)
    run = run_model(name, model_task.generate, tmp_path / "runs", model_args=f"pretrained={ckpt}")
    assert run.exit_code == 0, run.output
    results = run.results
    assert results["status"] == "ok"
    model = results["model"]
    assert model["checkpoint"] == str(ckpt)
    assert model["checkpoint_sha256"] and model["identity"]["checkpoint_sha256"] == model["checkpoint_sha256"]
    assert isinstance(model["parameters"], int) and 10_000 < model["parameters"] < 1_000_000
    assert model["dtype"] == "float32" and model["quantization"] is None
    preds = run.predictions
    assert len(preds) == model_task.n and all(p["status"] == "ok" for p in preds)
    # Raw output and the filtered single-word answer are both kept.
    assert all(isinstance(p["raw"], str) and isinstance(p["answer"], str) for p in preds)
    assert any(p["raw"] for p in preds)
    assert all(len(p["answer"].split()) <= 1 for p in preds)
    # A random model still looks at its inputs: not every sample gets the same output.
    assert len({p["raw"] for p in preds}) > 1


@pytest.mark.parametrize("name", ALL_MODELS)
def test_rank_end_to_end(name, tiny_checkpoint, model_task, tmp_path):
    run = run_model(
        name, model_task.rank, tmp_path / "runs", model_args=f"pretrained={tiny_checkpoint(name)}"
    )
    assert run.exit_code == 0, run.output
    assert run.results["status"] == "ok"
    candidates = {"red", "green", "blue", "yellow", "yes", "two", "bedroom", "no"}
    for p in run.predictions:
        assert p["raw"] in candidates
        top = p["top_candidates"]
        assert top[0][0] == p["raw"]
        scores = [s for _, s in top]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_batched_equals_unbatched(name, tiny_checkpoint, model_task, tmp_path):
    """Padding must not change answers: batch size 1 and 4 give the same outputs (and scores)."""
    args = f"pretrained={tiny_checkpoint(name)}"
    tasks = [model_task.rank] if name == "clip" else [model_task.generate, model_task.rank]
    for task in tasks:
        one = run_model(name, task, tmp_path / f"{task.stem}-b1", model_args=args, batch_size=1)
        four = run_model(name, task, tmp_path / f"{task.stem}-b4", model_args=args, batch_size=4)
        assert one.exit_code == 0 and four.exit_code == 0, one.output + four.output
        a, b = one.predictions, four.predictions
        assert [p["raw"] for p in a] == [p["raw"] for p in b], task.stem
        for p, q in zip(a, b, strict=True):
            if "top_candidates" in p:
                assert [c for c, _ in p["top_candidates"]] == [c for c, _ in q["top_candidates"]]
                for (_, s), (_, t) in zip(p["top_candidates"], q["top_candidates"], strict=True):
                    assert s == pytest.approx(t, abs=1e-3)


@pytest.mark.parametrize("name", ["qwen2.5-vl", "clip"])
def test_dataloader_workers_give_the_same_answers(name, tiny_checkpoint, model_task, tmp_path):
    """With workers, preprocessing runs in other processes before the weights are loaded."""
    args = f"pretrained={tiny_checkpoint(name)}"
    task = model_task.rank if name == "clip" else model_task.generate
    inline = run_model(name, task, tmp_path / "w0", model_args=args, workers=0)
    workers = run_model(name, task, tmp_path / "w2", model_args=args, workers=2)
    assert inline.exit_code == 0 and workers.exit_code == 0, inline.output + workers.output
    assert [p["raw"] for p in inline.predictions] == [p["raw"] for p in workers.predictions]


ABO_SAMPLE = SAMPLE_TASK / "abo_sample.csv"


@pytest.mark.slow
@pytest.mark.skipif(not ABO_SAMPLE.exists(), reason="the bundled abo_sample data is not in this checkout")
@pytest.mark.parametrize("name", ALL_MODELS)
def test_bundled_abo_sample(name, tiny_checkpoint, tmp_path):
    args = f"pretrained={tiny_checkpoint(name)}"
    task: Path | str = "abo_sample"
    if name == "clip":  # abo_sample asks for free-form answers; CLIP needs its rank variant
        task = tmp_path / "abo_sample_rank.yaml"
        task.write_text(
            "task: abo_sample_rank\nversion: 1\n"
            f"dataset: {{path: {ABO_SAMPLE}, image_root: {ABO_SAMPLE.parent / 'images'}}}\n"
            "request_type: rank\ncandidates: {source: task_answers}\nbootstrap_samples: 0\n",
            encoding="utf-8",
        )
    run = run_model(name, task, tmp_path / "runs", "--limit", "6", model_args=args)
    assert run.exit_code == 0, run.output
    assert run.results["status"] == "ok"
    assert len(run.predictions) == 6 and all(p["status"] == "ok" for p in run.predictions)
