"""WUPS: the Wu-Palmer set similarity of Malinowski & Fritz (2014), as DAQUAR's ``calculate_wups.py`` computes it.

Reference definition (``mode=reference``):

- an answer is split on commas into items, each stripped; nothing else is normalised;
- word score mu(a, b) at threshold t: 1.0 if ``a == b`` (exact, case-sensitive); 0 if either word has no
  *noun* synsets (``wn.synsets(x, pos=wn.NOUN)``); otherwise w = the largest ``wup_similarity`` over all
  pairs of noun synsets, and the score is w if ``w >= t`` else ``0.1 * w``;
- set score: ``min(prod_{a in GT} max_{p in PRED} mu(a, p), prod_{p in PRED} max_{a in GT} mu(p, a))``.
  The right product measures each predicted item against the reference set, so mu is taken in the other
  direction there; nltk's ``wup_similarity`` is not symmetric (soccer -> football 0.88, football -> soccer
  0.96), so this matters: prediction ``soccer``, reference ``football`` scores 0.88 at t = 0.0.

``mode=normalized`` (the default, and what the bundled tasks use) VQA-normalises each comma-separated
item of both answers first (``"The Red."`` -> ``"red"``, ``"Two"`` -> ``"2"``) and then applies the same
definition; ``mode=lowercase`` only lower-cases each stripped item (whole-answer matching, as the seed
study compares answers: ``"The Red."`` stays one item, ``"the red."``, with no synsets).

Outputs ``wups_0.0`` and ``wups_0.9`` (t = 0.0 and 0.9) and ``wups_weighted`` =
``weight * WUPS@0.0 + (1 - weight) * WUPS@0.9`` per sample (``weight`` 0.5 by default).

Speed: noun synsets are looked up once per word, Wu-Palmer similarity is computed once per synset pair from
cached hypernym distances (the same arithmetic nltk's ``Synset.wup_similarity`` performs, so values are
identical) and the best similarity once per ordered word pair (each direction is memoised); both
thresholds come from those numbers.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmbench.api import Arg, ArgError, SampleMetric, vqa_normalize
from vlmbench_plugins.metrics.wordnet_reader import load_wordnet_reader, wordnet_cache_identity

THRESHOLDS = (0.0, 0.9)
_INF = math.inf


class WupScorer:
    """Memoised word and synset similarities over one WordNet reader (shared by every WUPS metric)."""

    def __init__(self, wordnet: Any):
        self.wn = wordnet
        self.noun = wordnet.NOUN
        # nltk adds a simulated root for nouns only in WordNet 1.6; then its own code path is used.
        self._exact = wordnet.get_version() != "1.6"
        self._synsets: dict[str, tuple[Any, ...]] = {}
        self._pair: dict[tuple[str, str], float | None] = {}
        self._synset_pair: dict[tuple[str, str], float | None] = {}
        self._paths: dict[str, dict[str, int]] = {}
        self._objects: dict[str, Any] = {}
        self._min_depth: dict[str, int] = {}
        self._max_depth: dict[str, int] = {}
        self._lengths: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()

    def noun_synsets(self, word: str) -> tuple[Any, ...]:
        found = self._synsets.get(word)
        if found is None:
            found = tuple(self.wn.synsets(word, pos=self.noun))
            self._synsets[word] = found
        return found

    def best_similarity(self, a: str, b: str) -> float | None:
        """Largest Wu-Palmer similarity over the noun synsets of ``a`` and ``b``; None if either has none."""
        key = (a, b)
        if key in self._pair:
            return self._pair[key]
        sa, sb = self.noun_synsets(a), self.noun_synsets(b)
        if not sa or not sb:
            value = None
        else:
            value = 0.0
            for x in sa:
                for y in sb:
                    s = self.synset_similarity(x, y)
                    if s is not None and s > value:
                        value = s
        self._pair[key] = value
        return value

    def word_score(self, a: str, b: str, threshold: float) -> float:
        """mu(a, b) at ``threshold``: ``a``'s noun synsets measured against ``b``'s (order matters)."""
        if a == b:
            return 1.0
        w = self.best_similarity(a, b)
        if w is None:
            return 0.0
        return w if w >= threshold else w * 0.1

    # -- Wu-Palmer similarity on cached hypernym distances -------------------------------------------

    def synset_similarity(self, x: Any, y: Any) -> float | None:
        key = (x._name, y._name)
        if key in self._synset_pair:
            return self._synset_pair[key]
        value = self._wup(x, y) if self._exact else x.wup_similarity(y)
        self._synset_pair[key] = value
        return value

    def _distances(self, synset: Any) -> dict[str, int]:
        """Shortest hypernym distance from ``synset`` to each of its ancestors (itself at 0), by name."""
        name = synset._name
        found = self._paths.get(name)
        if found is not None:
            return found
        dist: dict[str, int] = {}
        queue = deque([(synset, 0)])
        while queue:
            s, d = queue.popleft()
            if s._name in dist:
                continue
            dist[s._name] = d
            if s._name not in self._objects:
                self._objects[s._name] = s
                self._min_depth[s._name] = s.min_depth()
                self._max_depth[s._name] = s.max_depth()
            for h in s.hypernyms() + s.instance_hypernyms():
                queue.append((h, d + 1))
        self._paths[name] = dist
        return dist

    def _path_length(self, name: str, dist: dict[str, int], subsumer: str) -> float:
        # nltk's shortest_path_distance: the best meeting point of both upward searches (in a DAG this
        # can be shorter than the distance to the subsumer itself). Subsumers repeat: memoised.
        if name == subsumer:
            return 0
        key = (name, subsumer)
        found = self._lengths.get(key)
        if found is None:
            sub = self._distances(self._objects[subsumer])
            found = min(d1 + sub.get(node, _INF) for node, d1 in dist.items())
            self._lengths[key] = found
        return found

    def _wup(self, x: Any, y: Any) -> float | None:
        dx, dy = self._distances(x), self._distances(y)
        common = dx.keys() & dy.keys()
        if not common:
            return None
        # Lowest common hypernyms by *minimum* depth, sorted by name (nltk's use_min_depth=True).
        deepest = max(self._min_depth[s] for s in common)
        lowest = sorted(s for s in common if self._min_depth[s] == deepest)
        subsumer = x._name if x._name in lowest else lowest[0]
        depth = self._max_depth[subsumer] + 1
        len1 = self._path_length(x._name, dx, subsumer)
        len2 = self._path_length(y._name, dy, subsumer)
        if math.isinf(len1) or math.isinf(len2):
            return None
        return (2.0 * depth) / ((len1 + depth) + (len2 + depth))


_scorers: dict[int, WupScorer] = {}
_scorers_lock = threading.Lock()


def scorer_for(wordnet: Any) -> WupScorer:
    """One memoised scorer per WordNet reader for the whole process."""
    with _scorers_lock:
        scorer = _scorers.get(id(wordnet))
        if scorer is None or scorer.wn is not wordnet:
            scorer = WupScorer(wordnet)
            _scorers[id(wordnet)] = scorer
        return scorer


def answer_items(answer: str, mode: str) -> list[str]:
    """Comma-separated items of an answer, stripped (and VQA-normalised or lower-cased per ``mode``)."""
    parts = answer.split(",")
    if mode == "normalized":
        return [vqa_normalize(p) for p in parts]
    return [p.strip().lower() for p in parts] if mode == "lowercase" else [p.strip() for p in parts]


def set_scores(scorer: WupScorer, gt: list[str], pred: list[str]) -> tuple[float, ...]:
    """WUPS of one answer pair at each of :data:`THRESHOLDS`.

    Left product: each reference item against the prediction set, mu(a, p); right product: each predicted
    item against the reference set, mu(p, a). Wu-Palmer similarity is not symmetric in nltk, so the two
    directions are computed (and memoised) separately.
    """
    out = []
    for t in THRESHOLDS:
        if len(gt) == 1 and len(pred) == 1:  # the common case: both products have one factor
            a, p = gt[0], pred[0]
            out.append(min(scorer.word_score(a, p, t), scorer.word_score(p, a, t)))
            continue
        left = float(np.prod([max(scorer.word_score(a, p, t) for p in pred) for a in gt]))
        right = float(np.prod([max(scorer.word_score(p, a, t) for a in gt) for p in pred]))
        out.append(min(left, right))
    return tuple(out)


class Wups(SampleMetric):
    # 2: the right product takes Wu-Palmer in the prediction -> reference direction, as calculate_wups.py.
    version = "2"
    # A pair's score is a function of the two answers and WordNet alone.
    pair_independent = True
    args = {
        "mode": Arg(
            str,
            "normalized",
            "normalized: VQA-normalise each comma-separated item first; lowercase: only lower-case it; "
            "reference: the DAQUAR script as is",
            choices=("normalized", "lowercase", "reference"),
        ),
        "weight": Arg(float, 0.5, "weight of WUPS@0.0 in wups_weighted (WUPS@0.9 gets 1 - weight)"),
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 <= self.options["weight"] <= 1.0:
            raise ArgError(f"metric {self.name!r}: weight must be between 0 and 1")
        self._scorer: WupScorer | None = None
        self._wordnet_source: dict[str, str] = {}
        self._wordnet_identity: dict[str, str] | None = None

    def setup(self) -> None:
        if self._scorer is not None:
            return
        wordnet, self._wordnet_source, self._wordnet_identity = load_wordnet_reader()
        self._scorer = scorer_for(wordnet)

    def cache_identity(self) -> dict[str, Any] | None:
        return wordnet_cache_identity(self, self._wordnet_identity, vqa_normalize)

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
        if self._scorer is None:
            self.setup()
        assert self._scorer is not None
        mode = self.options["mode"]
        weight = self.options["weight"]
        low, high, mixed = [], [], []
        with self._scorer.lock:
            for pred, ref in zip(predictions, references, strict=True):
                w0, w9 = set_scores(self._scorer, answer_items(ref, mode), answer_items(pred, mode))
                low.append(w0)
                high.append(w9)
                mixed.append(weight * w0 + (1.0 - weight) * w9)
        return {"wups_0.0": low, "wups_0.9": high, "wups_weighted": mixed}

    def describe(self) -> dict:
        import nltk

        w = self.options["weight"]
        return {
            **super().describe(),
            "definition": (
                "Malinowski & Fritz WUPS (calculate_wups.py): comma-split answer sets, noun synsets only, "
                "mu(a,b) = 1 if a == b, else max Wu-Palmer w, down-weighted to 0.1*w when w < t; "
                "min of prod_a max_p mu(a,p) and prod_p max_a mu(p,a) (Wu-Palmer in both directions)"
            ),
            "mode": self.options["mode"],
            "thresholds": list(THRESHOLDS),
            "weighted": f"wups_weighted = {w:g} * wups_0.0 + {1 - w:g} * wups_0.9",
            "wordnet": self._wordnet_source,
            "nltk": nltk.__version__,
        }
