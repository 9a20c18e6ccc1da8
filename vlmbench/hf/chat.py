"""Instruction-tuned chat VLMs: the request becomes a chat conversation.

The conversation is an optional system message and one user turn holding the image and the rendered
prompt; the processor's chat template turns it into model text and opens the assistant's turn. Both
the system message and the prompt template ask for a single word; both are configuration (the
``system_prompt`` argument, the task's or the plugin's prompt template), not code.
"""

from __future__ import annotations

from typing import ClassVar

from vlmbench.hf.decoder import DecoderVLM
from vlmbench.plugin.args import Arg
from vlmbench.plugin.request import Request

SYSTEM_PROMPT = "You answer questions about product images with exactly one word."


class ChatVLM(DecoderVLM):
    args = {
        "system_prompt": Arg(
            str,
            SYSTEM_PROMPT,
            "system message of the conversation (empty: none, the template's default applies)",
        ),
    }
    default_prompt: ClassVar[str | None] = "{question} Answer with exactly one word."

    def messages(self, request: Request) -> list[dict]:
        conversation = []
        system = self.arg_values["system_prompt"]
        if system:
            conversation.append({"role": "system", "content": [{"type": "text", "text": system}]})
        conversation.append(
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": request.prompt}]}
        )
        return conversation

    def end_of_answer_id(self) -> int | None:
        """The token the chat template closes an assistant turn with (``<|im_end|>``,
        ``<end_of_utterance>``...): what follows an answer in the conversations the model was tuned on.
        Falls back to the end-of-sequence token when the template does not show it."""
        if not hasattr(self, "_end_id"):
            marker = "Zq7"
            conversation = [
                {"role": "user", "content": [{"type": "text", "text": "?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": marker}]},
            ]
            end = None
            try:
                text = self.processor.apply_chat_template(conversation, tokenize=False)
                tail = text.split(marker, 1)[1]
                ids = self.processor.tokenizer(tail, add_special_tokens=False)["input_ids"]
                if ids and ids[0] in self.processor.tokenizer.all_special_ids:
                    end = ids[0]
            except (IndexError, KeyError, ValueError, TypeError):
                pass  # a template without an assistant turn: use the generation config's token
            self._end_id = end if end is not None else super().end_of_answer_id()
        return self._end_id

    def prompt_text(self, request: Request) -> str:
        return self.processor.apply_chat_template(
            self.messages(request), add_generation_prompt=True, tokenize=False
        )
