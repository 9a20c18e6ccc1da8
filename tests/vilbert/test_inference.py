from __future__ import annotations

import json
import math
import pickle

import pytest
import torch

from vlmbench_plugins.models.vilbert.config import NUM_VQA_ANSWERS
from vlmbench_plugins.models.vilbert.features import RegionBatch, regions_from_detections
from vlmbench_plugins.models.vilbert.inference import (
    VQA_TASK_ID,
    AnswerVocabulary,
    answer_logits,
    candidate_scores,
    out_of_vocabulary_share,
    predict_answers,
    restricted_answers,
)
from vlmbench_plugins.models.vilbert.modeling import VilbertForVLTasks
from vlmbench_plugins.models.vilbert.tokenization import QuestionBatch

from .conftest import small_config


def test_answer_logits_match_the_full_forward(tiny_fixture, tiny_model):
    inputs = tiny_fixture["inputs"]
    assert inputs["task_ids"].eq(VQA_TASK_ID).all()
    tokens = QuestionBatch(inputs["input_txt"], inputs["attention_mask"], inputs["token_type_ids"])
    regions = RegionBatch(inputs["input_imgs"], inputs["image_loc"], inputs["image_attention_mask"])
    logits = answer_logits(tiny_model, tokens, regions)
    assert logits.shape == (2, NUM_VQA_ANSWERS)
    assert (logits - tiny_fixture["outputs"]["vil_prediction"]).abs().max() <= 1e-5
    # mappings with the original argument names work too
    same = answer_logits(tiny_model, dict(tokens.__dict__), dict(regions.__dict__))
    assert torch.equal(logits, same)


def test_answer_logits_from_region_lists():
    config = small_config(v_feature_size=6)
    model = VilbertForVLTasks(config).eval()
    gen = torch.Generator().manual_seed(0)
    items = [
        regions_from_detections(
            torch.rand(n, 6, generator=gen), torch.tensor([[0.0, 0.0, 8.0, 8.0]] * n), 10, 10, "t"
        )
        for n in (2, 4)
    ]
    tokens = QuestionBatch(torch.tensor([[2, 5, 3], [2, 6, 3]]), torch.ones(2, 3, dtype=torch.long),
                           torch.zeros(2, 3, dtype=torch.long))  # fmt: skip
    logits = answer_logits(model, tokens, items)
    first = QuestionBatch(tokens.input_txt[:1], tokens.attention_mask[:1], tokens.token_type_ids[:1])
    alone = answer_logits(model, first, items[:1])
    assert torch.allclose(logits[:1], alone, atol=1e-5)  # padding to the longer image changes nothing
    with pytest.raises(ValueError, match="eval mode"):
        answer_logits(model.train(), tokens, items)
    with pytest.raises(ValueError, match="2 questions but 1 images"):
        answer_logits(model.eval(), tokens, items[:1])


@pytest.fixture()
def vocab() -> AnswerVocabulary:
    return AnswerVocabulary(["yes", "no", "red", "wood", "Blue"])


def test_vocabulary_files(tmp_path, vocab):
    pkl = tmp_path / "trainval_label2ans.pkl"
    pkl.write_bytes(pickle.dumps(vocab.answers))
    as_json = tmp_path / "ans2label.json"
    as_json.write_text(json.dumps({a: i for i, a in enumerate(vocab.answers)}))
    as_txt = tmp_path / "answers.txt"
    as_txt.write_text("\n".join(vocab.answers))
    for path in (pkl, as_json, as_txt):
        assert AnswerVocabulary.from_file(path).answers == vocab.answers
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps([print]))
    with pytest.raises(pickle.UnpicklingError):
        AnswerVocabulary.from_file(bad)


def test_plain_and_restricted_argmax(vocab):
    logits = torch.tensor([[5.0, 1.0, 2.0, 3.0, 0.0], [0.0, 1.0, 2.0, -1.0, 4.0]])
    assert predict_answers(logits, vocab) == ["yes", "Blue"]
    candidates = [["red", "wood", "metal"], ["wood", "plastic"]]
    assert restricted_answers(logits, vocab, candidates) == ["wood", "wood"]
    scores = candidate_scores(logits, vocab, candidates)
    assert scores[0][:2] == [2.0, 3.0] and math.isinf(scores[0][2])
    assert restricted_answers(logits, vocab, [["metal"], ["BLUE "]]) == [None, "BLUE "]
    with pytest.raises(ValueError, match="answers in the list"):
        predict_answers(torch.zeros(1, 3), vocab)


def test_out_of_vocabulary_share(vocab):
    assert out_of_vocabulary_share(["yes", "Red", "metal", "plastic"], vocab) == 0.5
    assert out_of_vocabulary_share([], vocab) == 0.0
