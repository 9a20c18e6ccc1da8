"""Visual question answering with OFA: the three answer modes a model plugin needs.

* :meth:`OFAForVQA.generate` — free beam search (greedy with one beam);
* :meth:`OFAForVQA.constrained` — beam search restricted by a Trie to a candidate list;
* :meth:`OFAForVQA.score_candidates` — log-likelihood of every candidate ([B, C]).

Two prompt styles: ``"pretrained"`` (hub checkpoints: the decoder starts from BOS alone, a Trie
masks probabilities without renormalising, OFA's zero-shot setting) and ``"finetuned"`` (the VQA
fine-tuned fairseq checkpoints: the decoder is prompted with BOS + the question tokens and a
Trie renormalises over the allowed tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from .generation import Hypothesis, Trie, beam_search, score_candidates
from .loading import load_ofa
from .modeling import EncoderOutput, OFAModel
from .preprocess import DEFAULT_RESOLUTION, preprocess_images, question_text
from .tokenization import code_token_range, encode_text, load_ofa_tokenizer, pad_right

PROMPT_STYLES = ("pretrained", "finetuned")
PRETRAINED_RESOLUTION = 384

Images = Sequence[Image.Image] | Tensor
Candidates = Sequence[str] | Sequence[Sequence[str]]


class OFAForVQA:
    """An OFA model, its tokenizer and its input settings, answering batches of questions."""

    def __init__(
        self,
        model: OFAModel,
        tokenizer: PreTrainedTokenizerBase,
        resolution: int = DEFAULT_RESOLUTION,
        prompt_style: str = "finetuned",
        max_question_words: int | None = None,
    ) -> None:
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
        if len(tokenizer) != model.config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {model.config.vocab_size}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.resolution = resolution
        self.prompt_style = prompt_style
        self.max_question_words = max_question_words

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path,
        tokenizer_dir: str | Path | None = None,
        *,
        prompt_style: str | None = None,
        resolution: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> OFAForVQA:
        """Load weights and tokenizer. ``tokenizer_dir`` defaults to the checkpoint folder (or
        the folder holding a checkpoint file). Defaults: fairseq ``.pt`` files are taken as VQA
        fine-tuned (prompt "finetuned", their stored image size or 480), anything else as
        pre-trained (prompt "pretrained", 384)."""
        loaded = load_ofa(checkpoint, device=device, dtype=dtype)
        checkpoint = Path(checkpoint)
        tokenizer = load_ofa_tokenizer(
            tokenizer_dir or (checkpoint if checkpoint.is_dir() else checkpoint.parent)
        )
        finetuned = loaded.source_format == "fairseq"
        if prompt_style is None:
            prompt_style = "finetuned" if finetuned else "pretrained"
        if resolution is None:
            default = DEFAULT_RESOLUTION if finetuned else PRETRAINED_RESOLUTION
            resolution = int(loaded.metadata.get("patch_image_size", default))
        return cls(loaded.model, tokenizer, resolution=resolution, prompt_style=prompt_style)

    # -- shared steps ---------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def renormalize(self) -> bool:
        return self.prompt_style == "finetuned"

    def _question_ids(self, questions: Sequence[str]) -> list[list[int]]:
        return [encode_text(self.tokenizer, question_text(q, self.max_question_words)) for q in questions]

    def encode(self, images: Images, questions: Sequence[str]) -> tuple[EncoderOutput, list[list[int]]]:
        """Run the encoder; return its output and each row's decoder prefix."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        config = self.model.config
        question_ids = self._question_ids(questions)
        sources = [[config.bos_token_id, *ids, config.eos_token_id] for ids in question_ids]
        input_ids = pad_right(sources, config.pad_token_id, self.device)
        dtype = next(self.model.parameters()).dtype
        pixels = preprocess_images(images, self.resolution).to(self.device, dtype)
        with torch.no_grad():
            encoder_out = self.model.encode(input_ids, pixels)
        if self.prompt_style == "finetuned":
            prefixes = [[config.bos_token_id, *ids] for ids in question_ids]
        else:
            prefixes = [[config.bos_token_id] for _ in questions]
        return encoder_out, prefixes

    def _candidate_ids(self, candidates: Sequence[str]) -> list[list[int]]:
        encoded = []
        for candidate in candidates:
            ids = encode_text(self.tokenizer, " " + candidate.strip())
            if not ids:
                raise ValueError(f"empty candidate answer {candidate!r}")
            encoded.append(ids)
        return encoded

    def _per_row(self, candidates: Candidates, rows: int) -> list[Sequence[str]]:
        if len(candidates) and isinstance(candidates[0], str):
            return [candidates] * rows  # type: ignore[list-item]
        if len(candidates) != rows:
            raise ValueError(f"{len(candidates)} candidate lists for {rows} questions")
        return list(candidates)  # type: ignore[arg-type]

    def _tries(self, per_row: list[Sequence[str]]) -> tuple[list[list[list[int]]], list[Trie]]:
        """Token ids and a Trie per row; rows sharing one list object share the work."""
        config = self.model.config
        built: dict[int, tuple[list[list[int]], Trie]] = {}
        ids, tries = [], []
        for row in per_row:
            if id(row) not in built:
                row_ids = self._candidate_ids(row)
                trie = Trie(
                    config.eos_token_id, ([config.bos_token_id, *c, config.eos_token_id] for c in row_ids)
                )
                built[id(row)] = (row_ids, trie)
            ids.append(built[id(row)][0])
            tries.append(built[id(row)][1])
        return ids, tries

    def decode_tokens(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True).strip()

    # -- answer modes ---------------------------------------------------------------------------

    def generate_hypotheses(
        self,
        images: Images,
        questions: Sequence[str],
        max_new_tokens: int = 5,
        num_beams: int = 5,
        length_penalty: float = 0.0,
        text_only: bool = True,
    ) -> list[list[Hypothesis]]:
        encoder_out, prefixes = self.encode(images, questions)
        suppress = None
        if text_only:  # image-code and location tokens are never a text answer
            start, end = code_token_range(self.tokenizer)
            suppress = torch.arange(start, end)
        return beam_search(
            self.model,
            encoder_out,
            prefixes,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            length_penalty=length_penalty,
            suppress_token_ids=suppress,
        )

    def generate(
        self,
        images: Images,
        questions: Sequence[str],
        max_new_tokens: int = 5,
        num_beams: int = 5,
        length_penalty: float = 0.0,
    ) -> list[str]:
        """Free-form answers (best beam, decoded and stripped)."""
        hypotheses = self.generate_hypotheses(images, questions, max_new_tokens, num_beams, length_penalty)
        return [self.decode_tokens(row[0].tokens) for row in hypotheses]

    def constrained(
        self,
        images: Images,
        questions: Sequence[str],
        candidates: Candidates,
        num_beams: int = 5,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """Beam search that can only produce one of the candidates; returns the candidate text.
        ``candidates``: one list for the whole batch or one list per question."""
        encoder_out, prefixes = self.encode(images, questions)
        per_row = self._per_row(candidates, len(questions))
        ids, tries = self._tries(per_row)
        answers = []
        # Rows with different candidate lists need different Tries: decode each group apart.
        groups: dict[int, list[int]] = {}
        for row, trie in enumerate(tries):
            groups.setdefault(id(trie), []).append(row)
        results: dict[int, list[Hypothesis]] = {}
        for rows in groups.values():
            index = torch.tensor(rows, device=self.device)
            longest = max(len(c) for c in ids[rows[0]])
            hypotheses = beam_search(
                self.model,
                encoder_out.select(index),
                [prefixes[r] for r in rows],
                num_beams=num_beams,
                max_new_tokens=max_new_tokens or longest,
                trie=tries[rows[0]],
                renormalize=self.renormalize,
            )
            results.update(zip(rows, hypotheses, strict=True))
        for row, row_candidates in enumerate(per_row):
            lookup: dict[tuple[int, ...], str] = {}
            for text, tokens in zip(row_candidates, ids[row], strict=True):
                lookup.setdefault(tuple(tokens), text)
            best = results[row][0].tokens
            answers.append(lookup.get(tuple(best), self.decode_tokens(best)))
        return answers

    def score_candidates(
        self,
        images: Images,
        questions: Sequence[str],
        candidates: Candidates,
        length_normalize: bool = False,
        chunk_size: int = 128,
    ) -> Tensor:
        """[B, C] log-likelihood of each candidate (-inf pads ragged per-row lists), on CPU."""
        encoder_out, prefixes = self.encode(images, questions)
        per_row = self._per_row(candidates, len(questions))
        ids, tries = self._tries(per_row)
        scores = score_candidates(
            self.model,
            encoder_out,
            prefixes,
            ids,
            tries=tries,
            renormalize=self.renormalize,
            length_normalize=length_normalize,
            chunk_size=chunk_size,
        )
        return scores.cpu()
