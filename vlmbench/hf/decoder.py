"""Common ground of decoder-only vision-language models (a language model that reads image tokens).

``generate``: the prompts of a batch are padded on the left, so every answer starts right after its
own prompt and padding cannot change it; decoding is greedy unless the task says otherwise.
``rank``: each candidate answer is scored by its log-likelihood after the image and prompt (see
:meth:`vlmbench.hf.likelihood.LikelihoodRanking.score_continuations`).

A subclass says how a request becomes model text (:meth:`DecoderVLM.prompt_text`) and how images are
handed to its processor (:meth:`DecoderVLM.processor_images`, :meth:`DecoderVLM.image_kwargs`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

from vlmbench.hf.base import HFModel
from vlmbench.hf.likelihood import LIKELIHOOD_ARGS, CandidateTokens
from vlmbench.plugin.request import Batch, Request
from vlmbench.tasks.spec import GenerationSpec


class DecoderVLM(HFModel):
    args = LIKELIHOOD_ARGS
    padding_side = "left"
    #: What separates the prompt from the answer in the model's own output ("Answer: red" -> " ").
    answer_prefix: ClassVar[str] = " "

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._candidate_tokens = CandidateTokens()

    # -- what subclasses adapt ------------------------------------------------------------------
    def prompt_text(self, request: Request) -> str:
        """The model's input text for a request (the image placeholder included)."""
        return request.prompt

    def processor_images(self, requests: list[Request]) -> list[Any]:
        return [r.image for r in requests]

    def image_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of the processor call (image size settings)."""
        return {}

    # -- the pipeline ----------------------------------------------------------------------------
    def _encode(self, requests: list[Request]) -> dict[str, Any]:
        encoded = self.processor(
            text=[self.prompt_text(r) for r in requests],
            images=self.processor_images(requests),
            padding=True,
            return_tensors="pt",
            **self.image_kwargs(),
        )
        return dict(encoded)

    def prepare(self, requests: list[Request]) -> Any:
        if requests[0].kind == "generate":
            return self._encode(requests)
        return [(self._encode([r]), self.candidate_ids(r.candidates)) for r in requests]

    def candidate_ids(self, candidates: tuple[str, ...]) -> list[list[int]]:
        """The token ids of each candidate answer as the model would write it (end token included)."""
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        end = self.end_of_answer_id() if self.arg_values["rank_eos"] else None
        return self._candidate_tokens.get(tokenizer, candidates, self.answer_prefix, end)

    def setup(self, requests: Sequence[Request]) -> None:
        # The end-of-answer token and the candidates' token ids, once, before workers start; the most
        # common candidate sets first, as many as the table keeps.
        sets = Counter(r.candidates for r in requests if r.kind == "rank")
        for candidates, _ in sets.most_common(self._candidate_tokens.max_sets):
            self.candidate_ids(candidates)

    def generate(self, batch: Batch, generation: GenerationSpec) -> list[str]:
        import torch

        inputs = self.to_device(self.batch_inputs(batch))
        with torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=self.generation_config(generation))
        prompt = inputs["input_ids"]
        width = prompt.shape[1]
        # Most models return prompt + answer; some older ones only the answer.
        if output.shape[1] >= width and torch.equal(output[:, :width], prompt):
            output = output[:, width:]
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        return [t.strip() for t in tokenizer.batch_decode(output, skip_special_tokens=True)]

    def rank(self, batch: Batch) -> list[list[float]]:
        normalize = self.arg_values["rank_normalize"]
        return [
            self.score_continuations(self.to_device(inputs), candidates, normalize=normalize)
            for inputs, candidates in self.batch_inputs(batch)
        ]
