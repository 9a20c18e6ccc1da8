"""METEOR (Banerjee & Lavie 2005) as nltk implements it.

    meteor_score([reference.split()], prediction.split())

with nltk's defaults: lower-casing, Porter stemming, WordNet synonyms, alpha 0.9, beta 3, gamma 0.5.
Inputs are whitespace token lists (nltk rejects plain strings). A single matching word scores 0.5 (the
fragmentation penalty of one chunk), no match and an empty answer score 0. Synonym matching compares
stemmed forms, so ``sofa``/``couch`` score 0.5 while ``handbag``/``purse`` score 0.

``normalize=true`` VQA-normalises both sides before tokenising (off by default: the reference definition).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlmbench.api import Arg, SampleMetric, vqa_normalize
from vlmbench_plugins.metrics.wordnet_reader import load_wordnet_reader, wordnet_cache_identity


class _CachedSynsets:
    """A WordNet reader whose ``synsets()`` results are memoised: METEOR looks the same words up for every
    pair they occur in. Everything else is passed through unchanged, so scores are identical."""

    def __init__(self, wordnet: Any):
        self._wordnet = wordnet
        self._cache: dict[tuple, list] = {}

    def synsets(self, lemma: str, pos: str | None = None, lang: str = "eng", check_exceptions: bool = True):
        key = (lemma, pos, lang, check_exceptions)
        found = self._cache.get(key)
        if found is None:
            found = self._wordnet.synsets(lemma, pos=pos, lang=lang, check_exceptions=check_exceptions)
            self._cache[key] = found
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wordnet, name)


_cached: dict[int, _CachedSynsets] = {}


class Meteor(SampleMetric):
    args = {
        "alpha": Arg(float, 0.9, "relative weight of precision and recall in the harmonic mean"),
        "beta": Arg(float, 3.0, "shape of the fragmentation penalty"),
        "gamma": Arg(float, 0.5, "relative weight of the fragmentation penalty"),
        "normalize": Arg(bool, False, "VQA-normalise prediction and reference before tokenising"),
    }
    # A pair's score is a function of the two answers and WordNet alone.
    pair_independent = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._wordnet: _CachedSynsets | None = None
        self._wordnet_source: dict[str, str] = {}
        self._wordnet_identity: dict[str, str] | None = None

    def setup(self) -> None:
        if self._wordnet is not None:
            return
        reader, self._wordnet_source, self._wordnet_identity = load_wordnet_reader()
        self._wordnet = _cached.setdefault(id(reader), _CachedSynsets(reader))

    def cache_identity(self) -> dict[str, Any] | None:
        return wordnet_cache_identity(self, self._wordnet_identity, vqa_normalize)

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
        from nltk.translate.meteor_score import meteor_score

        if self._wordnet is None:
            self.setup()
        o = self.options
        norm = vqa_normalize if o["normalize"] else (lambda s: s)
        out = []
        for pred, ref in zip(predictions, references, strict=True):
            out.append(
                float(
                    meteor_score(
                        [norm(ref).split()],
                        norm(pred).split(),
                        wordnet=self._wordnet,
                        alpha=o["alpha"],
                        beta=o["beta"],
                        gamma=o["gamma"],
                    )
                )
            )
        return {self.name: out}

    def describe(self) -> dict:
        import nltk

        return {
            **super().describe(),
            "definition": "nltk meteor_score([reference.split()], prediction.split()), lower-cased, "
            "Porter stems and WordNet synonyms",
            "wordnet": self._wordnet_source,
            "nltk": nltk.__version__,
        }
