"""CLIP zero-shot ranking: templates, prompt ensembling, the candidate-embedding cache, preprocessing."""

from __future__ import annotations

import pytest
import torch

from vlmbench.errors import ArgError
from vlmbench.plugin.request import Batch

from .conftest import create_model, run_model, sample_requests

CANDIDATES = ("red", "green", "blue", "yes")


def _loaded(ckpt, **args):
    model = create_model("clip", pretrained=ckpt, **args)
    model.load()
    return model


def _count_text_encodings(model, monkeypatch) -> list[int]:
    calls: list[int] = []
    real = model._encode_texts
    monkeypatch.setattr(model, "_encode_texts", lambda texts: calls.append(len(texts)) or real(texts))
    return calls


def test_candidate_embeddings_are_computed_once_per_candidate_set(tiny_checkpoint, monkeypatch):
    model = _loaded(tiny_checkpoint("clip"), templates="a photo of {answer}.|{answer}")
    calls = _count_text_encodings(model, monkeypatch)
    requests = sample_requests("rank", "{question}", CANDIDATES)
    for _ in range(2):
        model.rank(Batch(requests, model.collate(requests)))
    assert calls == [2 * len(CANDIDATES)]  # every template x candidate, once
    other = sample_requests("rank", "{question}", CANDIDATES[:2])
    model.rank(Batch(other, model.collate(other)))
    assert calls == [8, 4]


def test_question_templates_are_cached_per_question(tiny_checkpoint, monkeypatch):
    model = _loaded(tiny_checkpoint("clip"), templates="Question: {question} Answer: {answer}")
    calls = _count_text_encodings(model, monkeypatch)
    requests = sample_requests("rank", "{question}", CANDIDATES)  # three different questions
    model.rank(Batch(requests, model.collate(requests)))
    model.rank(Batch(requests, model.collate(requests)))
    assert calls == [len(CANDIDATES)] * 3


def test_scores_are_scaled_cosine_similarities(tiny_checkpoint):
    model = _loaded(tiny_checkpoint("clip"), templates="a photo of {answer}.")
    requests = sample_requests("rank", "{question}", CANDIDATES)
    scores = model.rank(Batch(requests, model.collate(requests)))
    with torch.no_grad():
        texts = model.model.encode_text(
            model.tokenizer([f"a photo of {c}." for c in CANDIDATES]), normalize=True
        )
        pixels = model.collate(requests)
        images = model.model.encode_image(pixels, normalize=True)
        expected = model.model.logit_scale.exp() * images @ texts.T
    assert torch.tensor(scores) == pytest.approx(expected, abs=1e-4)


def test_ensembling(tiny_checkpoint):
    ckpt = tiny_checkpoint("clip")
    requests = sample_requests("rank", "{question}", CANDIDATES)

    def scores(**args):
        model = _loaded(ckpt, **args)
        return torch.tensor(model.rank(Batch(requests, model.collate(requests))))

    one = "a photo of {answer}."
    # Equal up to float32 rounding: the embedding way normalises an already unit vector once more.
    assert torch.allclose(
        scores(templates=one, ensemble="embedding"), scores(templates=one, ensemble="score"), atol=1e-5
    )
    two = "a photo of {answer}.|Question: {question} Answer: {answer}"
    by_embedding, by_score = (
        scores(templates=two, ensemble="embedding"),
        scores(templates=two, ensemble="score"),
    )
    assert not torch.allclose(by_embedding, by_score)
    # Score ensembling is the mean of the single-template scores.
    single = [scores(templates=t) for t in two.split("|")]
    assert torch.allclose(by_score, (single[0] + single[1]) / 2, atol=1e-5)


def test_templates_are_validated(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint("clip")
    with pytest.raises(ArgError, match=r"no \{answer\}"):
        create_model("clip", pretrained=ckpt, templates="a photo of {question}")
    with pytest.raises(ArgError, match=r"only \{answer\} and \{question\}"):
        create_model("clip", pretrained=ckpt, templates="{answer} on {colour}")
    lines = tmp_path / "templates.txt"
    lines.write_text("a photo of {answer}.\n\n{answer}\n", encoding="utf-8")
    model = create_model("clip", pretrained=ckpt, templates_file=lines)
    assert model.templates == ("a photo of {answer}.", "{answer}")
    assert model.fingerprint() != create_model("clip", pretrained=ckpt).fingerprint()
    assert (
        model.fingerprint()
        == create_model("clip", pretrained=ckpt, templates="a photo of {answer}.|{answer}").fingerprint()
    )


def test_unknown_tag_lists_the_known_ones():
    with pytest.raises(ArgError, match="laion2b_s34b_b79k"):
        create_model("clip", pretrained="no-such-tag")


def test_worker_preprocessing_matches_open_clip(tiny_checkpoint):
    model = create_model("clip", pretrained=tiny_checkpoint("clip"))
    expected = model.preprocess_cfg()
    model.load()
    assert dict(model.model.visual.preprocess_cfg) == expected


def test_default_weights_missing_offline_is_skipped(model_task, tmp_path):
    run = run_model("clip", model_task.rank, tmp_path / "runs")
    assert run.exit_code == 4, run.output  # nothing was evaluated
    assert run.results["status"] == "skipped"
    reason = run.results["reason"]
    assert "vit_base_patch32_clip_224.openai" in reason and "--model-args pretrained=PATH" in reason


def test_describe_records_weights(tiny_checkpoint, model_task, tmp_path):
    run = run_model(
        "clip", model_task.rank, tmp_path / "runs", model_args=f"pretrained={tiny_checkpoint('clip')}"
    )
    model = run.results["model"]
    loaded = _loaded(tiny_checkpoint("clip"))
    assert model["parameters"] == sum(p.numel() for p in loaded.model.parameters()) > 49408 * 16
    assert model["checkpoint_sha256"] and model["templates"]
