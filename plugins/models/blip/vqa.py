"""``blip``: BLIP fine-tuned for VQA (``Salesforce/blip-vqa-base``), an encoder-decoder answer generator.

The question is encoded together with the image; a text decoder writes the answer, attending to the
encoded question. The decoder must not attend to the padding of shorter questions in a batch, or an
answer would depend on its batch: generation therefore runs the three parts directly with the
question's attention mask (``BlipForQuestionAnswering.generate`` passes an all-ones mask), and
:func:`restore_cross_attention_mask` repairs a transformers 5.x regression in which the decoder's
cross-attention drops the mask it is given. ``rank`` scores each candidate answer with the decoder
(the closed-vocabulary evaluation of the BLIP paper).
"""

from __future__ import annotations

from typing import Any

from vlmbench.api import LIKELIHOOD_ARGS, Batch, CandidateTokens, GenerationSpec, HFModel, Request


class BlipVQA(HFModel):
    args = LIKELIHOOD_ARGS
    model_class = "BlipForQuestionAnswering"
    model_types = ("blip",)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._candidate_tokens = CandidateTokens()

    def _encode(self, requests: list[Request]) -> dict[str, Any]:
        encoded = self.processor(
            images=[r.image for r in requests],
            text=[r.prompt for r in requests],
            padding=True,
            return_tensors="pt",
        )
        return {k: encoded[k] for k in ("input_ids", "attention_mask", "pixel_values")}

    def prepare(self, requests: list[Request]) -> Any:
        inputs = self._encode(requests)
        if requests[0].kind == "rank":
            tokenizer = self.processor.tokenizer
            end = self._sep_id() if self.arg_values["rank_eos"] else None
            inputs["candidates"] = [
                self._candidate_tokens.get(tokenizer, r.candidates, "", end) for r in requests
            ]
        return inputs

    def after_load(self) -> None:
        restore_cross_attention_mask(self.model.text_decoder)

    def _sep_id(self) -> int:
        return self.processor.tokenizer.sep_token_id

    def encode_questions(self, inputs: dict[str, Any]) -> tuple[Any, Any]:
        """Question embeddings conditioned on the image, and the question's attention mask.

        ``inputs`` holds ``input_ids``, ``attention_mask`` and ``pixel_values`` (as :meth:`prepare`
        makes them). Generation, ranking and fine-tuning all start here.
        """
        import torch

        image = self.model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
        image_mask = torch.ones(image.shape[:-1], dtype=torch.long, device=image.device)
        question = self.model.text_encoder(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            encoder_hidden_states=image,
            encoder_attention_mask=image_mask,
            return_dict=True,
        ).last_hidden_state
        return question, inputs["attention_mask"]

    def answer_logits(self, question: Any, question_mask: Any, answer_ids: Any, answer_mask: Any) -> Any:
        """The answer decoder's logits for ``answer_ids`` (starting with the decoder's start token),
        attending to the encoded question but not to its padding."""
        return self.model.text_decoder(
            input_ids=answer_ids,
            attention_mask=answer_mask,
            encoder_hidden_states=question,
            encoder_attention_mask=question_mask,
            return_dict=True,
        ).logits

    def _inputs(self, batch: Batch) -> dict[str, Any]:
        inputs = dict(self.batch_inputs(batch))
        candidates = inputs.pop("candidates", None)
        inputs = self.to_device(inputs)
        if candidates is not None:
            inputs["candidates"] = candidates
        return inputs

    def generate(self, batch: Batch, generation: GenerationSpec) -> list[str]:
        import torch

        inputs = self._inputs(batch)
        config = self.generation_config(generation)
        text_config = self.model.config.text_config
        config.eos_token_id = text_config.sep_token_id
        config.pad_token_id = text_config.pad_token_id
        config.bos_token_id = self.model.decoder_start_token_id
        with torch.inference_mode():
            question, mask = self.encode_questions(inputs)
            start = torch.full(
                (question.shape[0], 1),
                self.model.decoder_start_token_id,
                dtype=torch.long,
                device=question.device,
            )
            output = self.model.text_decoder.generate(
                input_ids=start,
                encoder_hidden_states=question,
                encoder_attention_mask=mask,
                generation_config=config,
            )
        return [
            t.strip() for t in self.processor.tokenizer.batch_decode(output[:, 1:], skip_special_tokens=True)
        ]

    def rank(self, batch: Batch) -> list[list[float]]:
        import torch

        inputs = self._inputs(batch)
        chunk = max(1, self.arg_values["rank_batch_size"])
        normalize = self.arg_values["rank_normalize"]
        start_id = self.model.decoder_start_token_id
        out: list[list[float]] = []
        with torch.inference_mode():
            question, mask = self.encode_questions(inputs)
            for i, candidates in enumerate(inputs["candidates"]):
                scores: list[float] = []
                for s in range(0, len(candidates), chunk):
                    part = candidates[s : s + chunk]
                    width = max(len(c) for c in part) + 1
                    ids = torch.zeros(len(part), width, dtype=torch.long)
                    dec_mask = torch.zeros(len(part), width, dtype=torch.long)
                    for j, c in enumerate(part):
                        ids[j, : len(c) + 1] = torch.tensor([start_id, *c])
                        dec_mask[j, : len(c) + 1] = 1
                    ids, dec_mask = ids.to(question.device), dec_mask.to(question.device)
                    logits = self.answer_logits(
                        question[i : i + 1].expand(len(part), -1, -1),
                        mask[i : i + 1].expand(len(part), -1),
                        ids,
                        dec_mask,
                    )
                    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                    token_lp = lp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
                    keep = dec_mask[:, 1:].float()
                    total = (token_lp * keep).sum(1)
                    if normalize == "mean":
                        total = total / keep.sum(1)
                    scores.extend(total.tolist())
                out.append(scores)
        return out


def restore_cross_attention_mask(module: Any) -> int:
    """Make every cross-attention layer under ``module`` honour the encoder attention mask.

    In transformers 5.x a BLIP text layer hands the encoder mask to its cross-attention block as
    ``attention_mask``, which that block ignores in favour of ``encoder_attention_mask`` (then empty):
    padded question positions are attended to. A pre-hook on each cross-attention block moves the mask
    where the block reads it; where the library passes it correctly the hook changes nothing.
    Returns the number of blocks hooked.
    """

    def hook(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if (
            kwargs.get("encoder_hidden_states") is not None
            and kwargs.get("encoder_attention_mask") is None
            and kwargs.get("attention_mask") is not None
        ):
            kwargs = {**kwargs, "encoder_attention_mask": kwargs["attention_mask"]}
        return args, kwargs

    count = 0
    for name, sub in module.named_modules():
        if name.endswith("crossattention.self"):
            sub.register_forward_pre_hook(hook, with_kwargs=True)
            count += 1
    return count
