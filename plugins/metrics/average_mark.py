"""Average Mark: the seed study's difficulty-weighted accuracy.

    AM = sum_i C_i * W[d_i] / sum_i W[d_i]

C_i is a sample's correctness (Exact Match by default) and W the task's ``difficulty_weights``
(0->1, 1->2, 2->4, 3->8, 5->20 in the study). Samples whose difficulty has no weight are left out and
counted in the metric's description.
"""

from __future__ import annotations

import numpy as np

from vlmbench.api import Arg, CorpusMetric, ScoreTable


class AverageMark(CorpusMetric):
    args = {
        "correctness": Arg(
            str, "exact_match", "the per-sample score (0/1, or any score in [0, 1]) that is weighted"
        ),
    }
    # Within one difficulty level all weights are equal, so AM there is just the correctness mean.
    by_difficulty = False

    def required_columns(self) -> tuple[str, ...]:
        return (self.options["correctness"],)

    def _weights(self, difficulty: np.ndarray) -> np.ndarray:
        # Vectorised lookup: bootstrap intervals call this a thousand times on the full table.
        lookup = self.context.difficulty_weights
        if not lookup:
            return np.full(len(difficulty), np.nan)
        keys = np.array(sorted(lookup), dtype=np.int64)
        values = np.array([lookup[k] for k in keys], dtype=np.float64)
        pos = np.clip(np.searchsorted(keys, difficulty), 0, len(keys) - 1)
        return np.where(keys[pos] == difficulty, values[pos], np.nan)

    def compute(self, table: ScoreTable) -> float:
        weights = self._weights(table.difficulty)
        known = ~np.isnan(weights)
        total = weights[known].sum()
        if total == 0:
            return float("nan")
        return float((table.columns[self.options["correctness"]][known] * weights[known]).sum() / total)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "definition": "sum(C_i * W[d_i]) / sum(W[d_i]) over samples whose difficulty has a weight",
            "weights": {str(k): v for k, v in self.context.difficulty_weights.items()},
        }
