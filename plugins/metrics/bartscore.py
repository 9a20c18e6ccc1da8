"""BARTScore (Yuan et al. 2021): how likely a sequence-to-sequence model finds one text given the other.

    score(x -> y) = (1 / |y|) * sum_t log p(y_t | y_<t, x)

averaged over *all* target tokens, BOS and EOS included (the tokeniser's ``<s> ... </s>``), with the
decoder fed the target shifted right, as neulab's reference ``BARTScorer.score`` does. Model
``facebook/bart-large-cnn``, inputs truncated to ``max_length`` tokens.

- ``bartscore_precision`` = score(reference -> prediction)
- ``bartscore_recall``    = score(prediction -> reference)
- ``bartscore_f``         = (precision + recall) / 2 (arithmetic mean, as in the paper)

Scores are mean log-likelihoods: <= 0, higher is better. For single words the BOS/EOS terms dominate; the
values are reported as defined, never rescaled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmbench.api import Arg, SampleMetric, library_bars_off
from vlmbench_plugins.metrics.memo import ProcessMemo, encoder_identity

DEFAULT_MODEL = "facebook/bart-large-cnn"

_models: ProcessMemo[tuple[Any, Any]] = ProcessMemo()


def load_bart(path: str, device: str) -> tuple[Any, Any]:
    """(model, tokenizer) for ``path`` on ``device``, loaded once per process."""

    def load() -> tuple[Any, Any]:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        with library_bars_off():  # scoring shows its own progress line
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForSeq2SeqLM.from_pretrained(path, local_files_only=True).to(device).eval()
        return model, tokenizer

    return _models.get((path, device), load)


class BartScore(SampleMetric):
    args = {
        "model": Arg(str, DEFAULT_MODEL, "Hub id or local folder of a BART-style seq2seq model"),
        "batch_size": Arg(int, 32, "pairs per forward pass"),
        "max_length": Arg(int, 1024, "tokens kept of each side (longer texts are truncated)"),
        "device": Arg(str, None, "cpu, cuda, ... (default: the run's device)"),
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self._tokenizer: Any = None
        self._resolved: Any = None

    def _device(self) -> str:
        return self.options["device"] or self.context.device or "cpu"

    def cache_identity(self) -> dict[str, Any]:
        return encoder_identity(
            self, "BARTScore", self._device(), ("transformers", "tokenizers", "torch", "numpy")
        )

    def setup(self) -> None:
        if self._model is not None:
            return
        from vlmbench.api import resolve_model

        self._resolved = resolve_model(self.options["model"], purpose="BARTScore")
        self._model, self._tokenizer = load_bart(str(self._resolved.path), self._device())

    def log_likelihood(self, sources: Sequence[str], targets: Sequence[str]) -> np.ndarray:
        """Mean per-token log-likelihood of each target given its source."""
        import torch
        import torch.nn.functional as F

        model, tok = self._model, self._tokenizer
        config = model.config
        pad = config.pad_token_id
        start = config.decoder_start_token_id
        if start is None:
            start = config.eos_token_id
        out = np.empty(len(sources), dtype=np.float64)
        # Similar lengths share a batch: less padding.
        order = sorted(range(len(sources)), key=lambda i: (len(sources[i]) + len(targets[i]), i))
        size, max_length = self.options["batch_size"], self.options["max_length"]
        device = model.device

        def encode(texts: list[str]) -> Any:
            return tok(texts, max_length=max_length, truncation=True, padding=True, return_tensors="pt")

        for begin in range(0, len(order), size):
            idx = order[begin : begin + size]
            src = encode([sources[i] for i in idx])
            tgt = encode([targets[i] for i in idx])
            labels = tgt["input_ids"].to(device)
            mask = tgt["attention_mask"].to(device)
            decoder_input = labels.new_full(labels.shape, pad)
            decoder_input[:, 1:] = labels[:, :-1]
            decoder_input[:, 0] = start
            with torch.inference_mode():
                logits = model(
                    input_ids=src["input_ids"].to(device),
                    attention_mask=src["attention_mask"].to(device),
                    decoder_input_ids=decoder_input,
                ).logits
                nll = F.cross_entropy(
                    logits.float().transpose(1, 2), labels, ignore_index=pad, reduction="none"
                )
                mean = -(nll * mask).sum(dim=1) / mask.sum(dim=1)
            out[idx] = mean.double().cpu().numpy()
        return out

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
        if self._model is None:
            self.setup()
        precision = self.log_likelihood(references, predictions)
        recall = self.log_likelihood(predictions, references)
        return {
            "bartscore_precision": precision.tolist(),
            "bartscore_recall": recall.tolist(),
            "bartscore_f": ((precision + recall) / 2).tolist(),
        }

    def describe(self) -> dict:
        import transformers

        return {
            **super().describe(),
            "definition": "mean log p(target tokens incl. BOS/EOS | source); precision ref->pred, "
            "recall pred->ref, F = arithmetic mean",
            "model": self._resolved.describe() if self._resolved else None,
            "device": self._device(),
            "transformers": transformers.__version__,
        }
