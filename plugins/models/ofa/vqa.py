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

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
# Candidate lists whose token ids and Trie are kept (tasks reuse one list for every question).
CANDIDATE_CACHE_SIZE = 16


@dataclass
class VQAInputs:
    """A batch prepared on the CPU (tokenised questions, transformed images), ready for
    :meth:`OFAForVQA.encode`. Safe to build in DataLoader workers: nothing here needs the model."""

    input_ids: Tensor  # [B, L] long, ``<s> question </s>``, right-padded
    pixels: Tensor  # [B, 3, R, R] float32
    question_ids: list[list[int]]  # each question's BPE ids (no BOS/EOS)

    def __len__(self) -> int:
        return len(self.question_ids)


def prepare_inputs(
    tokenizer: PreTrainedTokenizerBase,
    images: Images,
    questions: Sequence[str],
    resolution: int,
    pad_token_id: int,
    bos_token_id: int,
    eos_token_id: int,
    max_question_words: int | None = None,
) -> VQAInputs:
    """Normalise and tokenise the questions and transform the images (CPU only)."""
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions")
    question_ids = [encode_text(tokenizer, question_text(q, max_question_words)) for q in questions]
    sources = [[bos_token_id, *ids, eos_token_id] for ids in question_ids]
    return VQAInputs(
        pad_right(sources, pad_token_id), preprocess_images(images, resolution).float(), question_ids
    )


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
        self._candidate_cache: OrderedDict[tuple[str, ...], tuple[list[list[int]], Trie]] = OrderedDict()

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

    def prepare(self, images: Images, questions: Sequence[str]) -> VQAInputs:
        """Tokenised questions and transformed images, on the CPU (see :class:`VQAInputs`)."""
        config = self.model.config
        return prepare_inputs(
            self.tokenizer,
            images,
            questions,
            self.resolution,
            config.pad_token_id,
            config.bos_token_id,
            config.eos_token_id,
            self.max_question_words,
        )

    def _inputs(self, images: Images | VQAInputs, questions: Sequence[str] | None) -> VQAInputs:
        if isinstance(images, VQAInputs):
            if questions is not None:
                raise ValueError("questions are already part of the prepared inputs")
            return images
        if questions is None:
            raise ValueError("questions are needed with raw images")
        return self.prepare(images, questions)

    def encode(
        self, images: Images | VQAInputs, questions: Sequence[str] | None = None
    ) -> tuple[EncoderOutput, list[list[int]]]:
        """Run the encoder on raw images and questions, or on :meth:`prepare`'s output; return
        the encoder output and each row's decoder prefix."""
        inputs = self._inputs(images, questions)
        config = self.model.config
        dtype = next(self.model.parameters()).dtype
        with torch.no_grad():
            encoder_out = self.model.encode(
                inputs.input_ids.to(self.device), inputs.pixels.to(self.device, dtype)
            )
        if self.prompt_style == "finetuned":
            prefixes = [[config.bos_token_id, *ids] for ids in inputs.question_ids]
        else:
            prefixes = [[config.bos_token_id] for _ in inputs.question_ids]
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
        """Token ids and a Trie per row. Rows with equal candidate lists share one Trie (and are
        decoded together); the last few lists are remembered across calls."""
        config = self.model.config
        ids, tries = [], []
        for row in per_row:
            key = tuple(row)
            entry = self._candidate_cache.get(key)
            if entry is None:
                row_ids = self._candidate_ids(row)
                trie = Trie(
                    config.eos_token_id, ([config.bos_token_id, *c, config.eos_token_id] for c in row_ids)
                )
                entry = (row_ids, trie)
                self._candidate_cache[key] = entry
                while len(self._candidate_cache) > CANDIDATE_CACHE_SIZE:
                    self._candidate_cache.popitem(last=False)
            else:
                self._candidate_cache.move_to_end(key)
            ids.append(entry[0])
            tries.append(entry[1])
        return ids, tries

    def decode_tokens(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True).strip()

    # -- answer modes ---------------------------------------------------------------------------
    # Each takes raw ``images`` with ``questions``, or a :class:`VQAInputs` from :meth:`prepare`
    # (``questions`` then None).

    def generate_hypotheses(
        self,
        images: Images | VQAInputs,
        questions: Sequence[str] | None = None,
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
        self, images: Images | VQAInputs, questions: Sequence[str] | None = None, **search: Any
    ) -> list[str]:
        """Free-form answers (best beam, decoded and stripped). ``search``: the options of
        :meth:`generate_hypotheses` (``max_new_tokens``, ``num_beams``, ...)."""
        hypotheses = self.generate_hypotheses(images, questions, **search)
        return [self.decode_tokens(row[0].tokens) for row in hypotheses]

    def _candidates(self, candidates: Candidates | None, rows: int) -> list[Sequence[str]]:
        if candidates is None:
            raise ValueError("candidates are required")
        return self._per_row(candidates, rows)

    def constrained_scores(
        self,
        images: Images | VQAInputs,
        questions: Sequence[str] | None = None,
        candidates: Candidates | None = None,
        num_beams: int = 5,
        max_new_tokens: int | None = None,
    ) -> list[dict[int, float]]:
        """Trie-constrained beam search. Per row: {candidate index: summed log-probability} for
        the candidates the beam finished, best first (at most ``num_beams``; candidates with
        identical tokens share the entry of the first). ``candidates``: one list for the whole
        batch or one list per question."""
        encoder_out, prefixes = self.encode(images, questions)
        per_row = self._candidates(candidates, len(prefixes))
        ids, tries = self._tries(per_row)
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
        out = []
        for row in range(len(prefixes)):
            lookup: dict[tuple[int, ...], int] = {}
            for index, tokens in enumerate(ids[row]):
                lookup.setdefault(tuple(tokens), index)
            found: dict[int, float] = {}
            for hypothesis in results[row]:
                index = lookup.get(tuple(hypothesis.tokens))
                if index is not None and index not in found:
                    found[index] = hypothesis.log_prob
            out.append(found)
        return out

    def constrained(
        self,
        images: Images | VQAInputs,
        questions: Sequence[str] | None = None,
        candidates: Candidates | None = None,
        **search: Any,
    ) -> list[str]:
        """Beam search that can only produce one of the candidates; returns the candidate text.
        ``search``: the options of :meth:`constrained_scores` (``num_beams``, ``max_new_tokens``)."""
        scored = self.constrained_scores(images, questions, candidates, **search)
        per_row = self._candidates(candidates, len(scored))
        # A beam that finished no candidate (every path blocked) falls back to the first candidate.
        return [row[next(iter(found), 0)] for row, found in zip(per_row, scored, strict=True)]

    def score_candidates(
        self,
        images: Images | VQAInputs,
        questions: Sequence[str] | None = None,
        candidates: Candidates | None = None,
        length_normalize: bool = False,
        chunk_size: int = 128,
    ) -> Tensor:
        """[B, C] log-likelihood of each candidate (-inf pads ragged per-row lists), on CPU."""
        encoder_out, prefixes = self.encode(images, questions)
        per_row = self._candidates(candidates, len(prefixes))
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
