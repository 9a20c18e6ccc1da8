"""``blip2``: BLIP-2 (frozen image encoder, Q-Former, OPT language model), ``Salesforce/blip2-opt-2.7b``.

The image becomes a fixed number of query embeddings placed before the prompt; the default prompt
is the one BLIP-2 was evaluated with on VQA, ``Question: {question} Answer:``. Generation is batched
with left padding; ``rank`` scores each candidate answer by its likelihood after image and prompt.
"""

from __future__ import annotations

from typing import Any

from vlmbench.api import DecoderVLM, cache_kwarg, cache_of


class Blip2(DecoderVLM):
    model_class = "Blip2ForConditionalGeneration"
    model_types = ("blip-2",)
    default_prompt = "Question: {question} Answer:"
    answer_prefix = " "

    def prefill(self, inputs: dict[str, Any]) -> tuple[Any, Any]:
        # The language model's cache lives in the nested language-model output.
        out = self.model(**inputs, use_cache=True)
        return out.logits[:, -1], cache_of(out.language_model_outputs)

    def continue_from(self, input_ids: Any, cache: Any) -> Any:
        lm = self.model.language_model
        return lm(input_ids=input_ids, use_cache=True, **{cache_kwarg(lm): cache}).logits
