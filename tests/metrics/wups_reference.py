"""WUPS by the reference definition (DAQUAR ``calculate_wups.py``), written out plainly on nltk with
no caching: the yardstick of the WUPS tests and of ``benchmarks/metrics_speed.py``."""

from __future__ import annotations

import numpy as np


def reference_wups(wn, pred: str, gt: str) -> tuple[float, float]:
    """WUPS@0.0 and WUPS@0.9 by the reference definition, written out plainly on nltk (no caching)."""

    def best(a: str, b: str) -> float | None:
        sa, sb = wn.synsets(a, pos=wn.NOUN), wn.synsets(b, pos=wn.NOUN)
        if not sa or not sb:
            return None
        value = 0.0
        for x in sa:
            for y in sb:
                s = x.wup_similarity(y)
                if s is not None and s > value:
                    value = s
        return value

    gt_items = [x.strip() for x in gt.split(",")]
    pred_items = [x.strip() for x in pred.split(",")]
    raw = {(a, p): (None if a == p else best(a, p)) for a in gt_items for p in pred_items}
    scores = []
    for threshold in (0.0, 0.9):

        def mu(a: str, p: str, t: float = threshold) -> float:
            if a == p:
                return 1.0
            w = raw[(a, p)]
            if w is None:
                return 0.0
            return w if w >= t else w * 0.1

        left = float(np.prod([max(mu(a, p) for p in pred_items) for a in gt_items]))
        right = float(np.prod([max(mu(a, p) for a in gt_items) for p in pred_items]))
        scores.append(min(left, right))
    return scores[0], scores[1]
