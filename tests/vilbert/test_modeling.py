from __future__ import annotations

import torch

from vlmbench_plugins.models.vilbert.modeling import VilbertForPreTraining, VilbertForVLTasks

from .conftest import small_config


def _call_order(model: VilbertForVLTasks, inputs: dict) -> list[str]:
    order: list[str] = []
    encoder = model.bert.encoder
    for group in ("layer", "v_layer", "c_layer"):
        for idx, module in enumerate(getattr(encoder, group)):
            module.register_forward_hook(lambda *_, name=f"{group}.{idx}": order.append(name))
    with torch.inference_mode():
        model(**inputs)
    return order


def _inputs(config, batch=2, words=5, regions=4):
    gen = torch.Generator().manual_seed(0)
    return {
        "input_txt": torch.randint(1, config.vocab_size, (batch, words), generator=gen),
        "input_imgs": torch.randn(batch, regions, config.v_feature_size, generator=gen),
        "image_loc": torch.rand(batch, regions, 5, generator=gen),
        "task_ids": torch.ones(batch, 1, dtype=torch.long),
    }


def test_base_coattention_schedule():
    # the base schedule (v_biattention_id 0..5, t_biattention_id 6..11) at a tiny width
    config = small_config(num_hidden_layers=12, v_num_hidden_layers=6, v_biattention_id=[0, 1, 2, 3, 4, 5],
                          t_biattention_id=[6, 7, 8, 9, 10, 11])  # fmt: skip
    order = _call_order(VilbertForVLTasks(config).eval(), _inputs(config))
    expected = [f"layer.{i}" for i in range(6)] + ["c_layer.0"]
    for k in range(5):
        expected += [f"layer.{6 + k}", f"v_layer.{k}", f"c_layer.{k + 1}"]
    expected += ["v_layer.5", "layer.11"]
    assert order == expected


def test_without_coattention_the_streams_run_alone():
    config = small_config(with_coattention=False)
    order = _call_order(VilbertForVLTasks(config).eval(), _inputs(config))
    assert not any(name.startswith("c_layer") for name in order)
    assert sorted(order) == ["layer.0", "layer.1", "layer.2", "v_layer.0", "v_layer.1"]


def test_task_token_adds_a_position_and_changes_answers():
    config = small_config()
    model = VilbertForVLTasks(config).eval()
    inputs = _inputs(config)
    with torch.inference_mode():
        out = model(**inputs)
        other_task = model(**{**inputs, "task_ids": torch.full((2, 1), 7)})
    assert out.linguisic_prediction.shape == (2, 6, config.vocab_size)  # 5 tokens + task token
    assert not torch.allclose(out.vil_prediction, other_task.vil_prediction)


def test_co_attention_mask_has_no_effect_as_in_the_original():
    config = small_config()
    model = VilbertForVLTasks(config).eval()
    inputs = _inputs(config)
    with torch.inference_mode():
        plain = model(**inputs)
        masked = model(**inputs, co_attention_mask=torch.randn(2, 4, 5))
    for a, b in zip(plain, masked, strict=True):
        assert torch.equal(a, b)


def test_padded_regions_do_not_change_answers():
    config = small_config()
    model = VilbertForVLTasks(config).eval()
    inputs = _inputs(config, regions=3)
    padded = dict(inputs)
    padded["input_imgs"] = torch.cat([inputs["input_imgs"], torch.randn(2, 5, config.v_feature_size)], 1)
    padded["image_loc"] = torch.cat([inputs["image_loc"], torch.rand(2, 5, 5)], 1)
    padded["image_attention_mask"] = torch.cat([torch.ones(2, 3), torch.zeros(2, 5)], 1).long()
    with torch.inference_mode():
        a, b = model(**inputs), model(**padded)
    assert torch.allclose(a.vil_prediction, b.vil_prediction, atol=1e-6)
    assert (b.vision_logit[:, 3:] < -9000).all()  # padded regions are masked in the region logits


def test_eval_is_deterministic_and_train_mode_uses_dropout():
    config = small_config()
    model = VilbertForVLTasks(config)
    inputs = _inputs(config)
    model.train()
    torch.manual_seed(0)
    a = model(**inputs).vil_prediction
    b = model(**inputs).vil_prediction
    assert not torch.allclose(a, b)
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(**inputs).vil_prediction, model(**inputs).vil_prediction)


def test_pretraining_model_has_no_task_tokens():
    config = small_config(task_specific_tokens=True)
    model = VilbertForPreTraining(config).eval()
    assert not model.config.task_specific_tokens
    assert "bert.embeddings.task_embeddings.weight" not in model.state_dict()
    inputs = _inputs(config)
    with torch.inference_mode():
        out = model(inputs["input_txt"], inputs["input_imgs"], inputs["image_loc"])
    assert out.prediction_scores_t.shape == (2, 5, config.vocab_size)
    assert out.prediction_scores_v.shape == (2, 4, config.v_target_size)
    assert out.seq_relationship_score.shape == (2, 2)
