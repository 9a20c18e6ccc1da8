"""WUPS by the reference definition (DAQUAR ``calculate_wups.py``), written out plainly on nltk with
no caching: the yardstick of the WUPS tests and of ``benchmarks/metrics_speed.py``.

The script scores ``score_it(reference_items, predicted_items, membership)``: the left product runs over
the reference items, each measured against the predicted set, the right product over the predicted items,
each measured against the reference set. The element measure looks at its *first* word's noun synsets
against the second's, and nltk's ``wup_similarity`` is not symmetric, so the right product measures
prediction -> reference.
"""

from __future__ import annotations

import numpy as np


def reference_wups(wn, pred: str, gt: str) -> tuple[float, float]:
    """WUPS@0.0 and WUPS@0.9 by the reference definition, written out plainly on nltk (no caching)."""

    def raw(first: str, second: str) -> float | None:
        """Largest wup_similarity of a ``first`` synset to a ``second`` synset (None without synsets)."""
        first_synsets = wn.synsets(first, pos=wn.NOUN)
        second_synsets = wn.synsets(second, pos=wn.NOUN)
        if not first_synsets or not second_synsets:
            return None
        found = 0.0
        for x in first_synsets:
            for y in second_synsets:
                s = x.wup_similarity(y)
                if s is not None and s > found:
                    found = s
        return found

    gt_items = [x.strip() for x in gt.split(",")]
    pred_items = [x.strip() for x in pred.split(",")]
    # Both thresholds come from one raw similarity per ordered word pair: (reference, prediction) pairs
    # for the left product, (prediction, reference) pairs for the right one.
    similarity = {}
    for a in gt_items:
        for p in pred_items:
            if a != p:
                similarity[a, p] = raw(a, p)
                similarity[p, a] = raw(p, a)

    def measure(first: str, second: str, threshold: float) -> float:
        if first == second:
            return 1.0
        w = similarity[first, second]
        if w is None:
            return 0.0
        return w if w >= threshold else 0.1 * w

    scores = []
    for threshold in (0.0, 0.9):
        left = np.prod([max(measure(a, p, threshold) for p in pred_items) for a in gt_items])
        right = np.prod([max(measure(p, a, threshold) for a in gt_items) for p in pred_items])
        scores.append(float(min(left, right)))
    return scores[0], scores[1]
