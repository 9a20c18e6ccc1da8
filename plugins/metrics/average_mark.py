"""Average Mark: the seed study's difficulty-weighted accuracy.

    AM = sum_i C_i * W[d_i] / sum_i W[d_i]

C_i is a sample's correctness (Exact Match by default) and W the task's ``difficulty_weights``
(0->1, 1->2, 2->4, 3->8, 5->20 in the study). Samples whose difficulty has no weight (or is unknown) are
left out of the statistic: its entry in results.json gives ``n`` (samples weighted) and ``n_left_out``
with the levels they have, and the harness warns about them.

There is no per-difficulty breakdown: a level has one weight, so within a level Average Mark is just the
mean correctness of that level, which the correctness metric (``exact_match``) already reports per level
with its interval.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from vlmbench.api import Arg, CorpusMetric, ScoreTable

NO_BREAKDOWN = (
    "not broken down by difficulty: a level has one weight, so within a level Average Mark equals the "
    "level's mean {correctness}, reported per level with its interval under that metric"
)


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

    def report(self, table: ScoreTable) -> dict[str, Any]:
        left_out = np.isnan(self._weights(table.difficulty))
        counts: dict[str, Any] = {"n": int((~left_out).sum()), "n_left_out": int(left_out.sum())}
        if left_out.any():
            levels = Counter(table.difficulty[left_out].tolist())
            counts["left_out_reason"] = "no difficulty weight"
            counts["left_out_by_level"] = {
                ("unknown" if level < 0 else str(level)): k for level, k in sorted(levels.items())
            }
        return counts

    def describe(self) -> dict:
        return {
            **super().describe(),
            "definition": "sum(C_i * W[d_i]) / sum(W[d_i]) over samples whose difficulty has a weight",
            "weights": {str(k): v for k, v in self.context.difficulty_weights.items()},
            "by_difficulty": NO_BREAKDOWN.format(correctness=self.options["correctness"]),
        }
