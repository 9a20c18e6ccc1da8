"""What is trained: a BLIP VQA model plugin's weights with LoRA adapters, and the training objective.

The base model is loaded by the model plugin itself (checkpoint lookup, offline rules, dtype, device,
bitsandbytes 8/4-bit, the cross-attention mask repair of ``blip``), so the model being trained is
the one ``vlmbench run`` evaluates. LoRA layers are injected into it in place: the plugin's
``generate`` then answers with the adapter, which is how validation computes its exact match, and the
training objective runs the plugin's own forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlmbench.api import VlmbenchError, load_plugins
from vlmbench_plugins.models.blip.finetune.data import IGNORE_INDEX
from vlmbench_plugins.models.blip.finetune.preflight import check_base_model
from vlmbench_plugins.models.blip.finetune.presets import linear_names, matching_modules
from vlmbench_plugins.models.blip.vqa import BlipVQA


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float
    dropout: float
    pattern: str

    def config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.pattern,
            bias="none",
        )


def load_plugin(
    name: str,
    model_args: dict[str, Any],
    *,
    device: str,
    dtype: str,
    seed: int,
    plugins: Any = None,
) -> BlipVQA:
    """Create and load a BLIP VQA model plugin (``blip`` or any plugin built on :class:`BlipVQA`)."""
    plugins = plugins or load_plugins()
    check_base_model(name, plugins)
    given = {k: v for k, v in model_args.items() if v is not None}
    plugin = plugins.create_model(name, given, device=device, dtype=dtype, seed=seed)
    plugin.load()
    return plugin


def add_lora(model: Any, settings: LoraSettings, *, quantized: bool, gradient_checkpointing: bool) -> Any:
    """Freeze ``model``, inject LoRA layers into the modules ``settings.pattern`` names, return the
    ``PeftModel``. A quantised model first goes through ``prepare_model_for_kbit_training`` (QLoRA)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    targets = matching_modules(linear_names(model), settings.pattern)
    if not targets:
        raise VlmbenchError(
            f"the LoRA target pattern {settings.pattern!r} matches no Linear layer of the model"
        )
    # Non-reentrant checkpointing: the inputs of a checkpointed block need not require grad.
    checkpointing = {"use_reentrant": False}
    if quantized:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing,
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    for param in model.parameters():
        param.requires_grad_(False)
    peft_model = get_peft_model(model, settings.config())
    if gradient_checkpointing:
        # transformers and PEFT hook the input embeddings so that their output requires grad (needed
        # by reentrant checkpointing only). BLIP adds its position embeddings to that output in place,
        # which autograd refuses for a tensor that requires grad: remove the hooks.
        model.disable_input_require_grads()
    return peft_model


def adapted_modules(peft_model: Any) -> list[str]:
    """Names (in the base model) of the modules that received LoRA layers."""
    base = peft_model.get_base_model()
    return [name for name, module in base.named_modules() if hasattr(module, "lora_A") and module.lora_A]


class VQALoss(torch.nn.Module):
    """BLIP VQA's training objective: cross-entropy of the answer tokens under the answer decoder.

    The forward pass is the plugin's own, the one ``blip`` runs to answer
    (:meth:`BlipVQA.encode_questions`, then :meth:`BlipVQA.answer_logits` with the question's padding
    mask). Returns the summed loss and the number of target tokens (so shards and accumulation steps
    can be weighted by tokens).
    """

    def __init__(self, plugin: BlipVQA, peft_model: Any, label_smoothing: float = 0.0):
        super().__init__()
        if peft_model.get_base_model() is not plugin.model:
            raise VlmbenchError("the LoRA layers must be injected into the plugin's own model")
        # A submodule, so that the optimizer, accelerate and data-parallel training see the adapter
        # weights; the plugin (not a module) computes with the same weights.
        self.peft_model = peft_model
        self.plugin = plugin
        self.label_smoothing = label_smoothing

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        decoder_attention_mask: torch.Tensor,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        question, question_mask = self.plugin.encode_questions(
            {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
        )
        logits = self.plugin.answer_logits(question, question_mask, decoder_input_ids, decoder_attention_mask)
        # Position t predicts token t + 1.
        targets = labels[:, 1:].reshape(-1)
        scores = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
        loss = torch.nn.functional.cross_entropy(
            scores,
            targets,
            ignore_index=IGNORE_INDEX,
            reduction="sum",
            label_smoothing=self.label_smoothing,
        )
        return loss, (targets != IGNORE_INDEX).sum()
