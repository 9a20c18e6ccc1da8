"""LoRA target presets name exactly the intended BLIP modules, as PEFT applies them."""

from __future__ import annotations

import pytest

from vlmbench.errors import ArgError
from vlmbench_plugins.models.blip.finetune.model import LoraSettings, adapted_modules, add_lora
from vlmbench_plugins.models.blip.finetune.presets import (
    PRESETS,
    linear_names,
    matching_modules,
    target_pattern,
)

PARTS = ("text_encoder.encoder.layer", "text_decoder.bert.encoder.layer")
LAYERS = (0, 1)  # the tiny BLIP has two layers in each part
BLOCKS = ("attention", "crossattention")


def _expected(preset: str) -> set[str]:
    """The modules each preset is meant to adapt, spelled out (not derived from the patterns)."""
    out = set()
    for part in PARTS:
        for layer in LAYERS:
            prefix = f"{part}.{layer}"
            for block in BLOCKS:
                projections = {"query", "value"} | ({"key"} if preset == "query_key_value" else set())
                out |= {f"{prefix}.{block}.self.{p}" for p in projections}
                if preset in ("query_value_out", "query_value_dense"):
                    out.add(f"{prefix}.{block}.output.dense")
            if preset == "query_value_dense":
                out |= {f"{prefix}.intermediate.dense", f"{prefix}.output.dense"}
    return out


@pytest.fixture(scope="module")
def blip_model(tiny_blip):
    from transformers import BlipForQuestionAnswering

    return BlipForQuestionAnswering.from_pretrained(tiny_blip, local_files_only=True)


def test_the_study_presets_exist():
    assert set(PRESETS) == {"query_value", "query_value_out", "query_key_value", "query_value_dense"}
    assert {p.study_name for p in PRESETS.values()} == {
        "query+value", "query+value+output", "query+key+value", "query+value+dense"
    }  # fmt: skip


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_matches_exactly_the_intended_modules(preset, blip_model):
    names = linear_names(blip_model)
    matched = set(matching_modules(names, target_pattern(preset)))
    assert matched == _expected(preset)
    assert len(matched) == {"query_value": 16, "query_value_out": 24, "query_key_value": 24,
                            "query_value_dense": 32}[preset]  # fmt: skip
    # The image encoder and the prediction head are never adapted.
    assert not [n for n in matched if n.startswith("vision_model") or ".cls." in n]


@pytest.mark.parametrize("preset", ["query_value", "query_value_dense"])
def test_peft_injects_into_the_same_modules(preset, tiny_blip):
    from transformers import BlipForQuestionAnswering

    model = BlipForQuestionAnswering.from_pretrained(tiny_blip, local_files_only=True)
    peft_model = add_lora(
        model,
        LoraSettings(rank=2, alpha=4, dropout=0.0, pattern=target_pattern(preset)),
        quantized=False,
        gradient_checkpointing=False,
    )
    assert set(adapted_modules(peft_model)) == _expected(preset)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_bare_dense_would_also_hit_the_prediction_head(blip_model):
    """Why the dense preset is an explicit pattern: PEFT matches a list entry 'dense' by suffix,
    which includes the answer decoder's prediction-head transform."""
    suffix_match = {n for n in linear_names(blip_model) if n == "dense" or n.endswith(".dense")}
    assert "text_decoder.cls.predictions.transform.dense" in suffix_match
    assert "text_decoder.cls.predictions.transform.dense" not in _expected("query_value_dense")
    assert suffix_match - set(matching_modules(suffix_match, target_pattern("query_value_dense"))) == {
        "text_decoder.cls.predictions.transform.dense"
    }


def test_unknown_preset_and_bad_pattern_are_errors():
    with pytest.raises(ArgError, match="did you mean 'query_value'"):
        target_pattern("query_valu")
    with pytest.raises(ArgError, match="invalid target pattern"):
        target_pattern(pattern="(unclosed")
    assert target_pattern("query_value", r".*\.self\.query") == r".*\.self\.query"
