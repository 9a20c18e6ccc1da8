"""The metric plugin contract.

Two kinds, as in lighteval:

- :class:`SampleMetric` scores one (prediction, reference) pair at a time. The harness calls
  :meth:`SampleMetric.score` once per *unique* pair, in batches — single-word answers repeat massively —
  and takes the best score over a sample's references.
- :class:`CorpusMetric` computes a statistic over the whole set of per-sample scores (e.g. the
  difficulty-weighted Average Mark). Bootstrap intervals call it on resampled tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from vlmbench.plugin.args import Arg, validate
from vlmbench.plugin.registry import MetricEntry


@dataclass
class MetricContext:
    """What a metric may know about the run besides the answers."""

    difficulty_weights: dict[int, float]
    seed: int = 0
    device: str = "cpu"


@dataclass
class ScoreTable:
    """Per-sample arrays: ``columns`` maps each sample-level score name to a float array;
    ``difficulty`` holds each sample's level (-1 when unknown)."""

    columns: dict[str, np.ndarray]
    difficulty: np.ndarray

    def __len__(self) -> int:
        return len(self.difficulty)

    def take(self, index: np.ndarray) -> ScoreTable:
        return ScoreTable({k: v[index] for k, v in self.columns.items()}, self.difficulty[index])


class Metric:
    """Base class. ``args`` is the schema of the task's ``options`` for this metric."""

    args: ClassVar[dict[str, Arg]] = {}
    #: Bump when a code change alters scores.
    version: ClassVar[str] = "1"

    def __init__(self, entry: MetricEntry, options: dict[str, Any], context: MetricContext):
        self.entry = entry
        self.name = entry.name
        self.options = options
        self.context = context

    @classmethod
    def create(cls, entry: MetricEntry, given: dict[str, Any] | None, context: MetricContext) -> Metric:
        return cls(entry, validate(cls.args, given or {}, owner=f"metric {entry.name!r}"), context)

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.entry.outputs

    def setup(self) -> None:
        """Load assets (WordNet, an encoder...). Raise :class:`vlmbench.errors.AssetMissingError`
        naming the asset and how to provide it when it is not available."""

    def describe(self) -> dict[str, Any]:
        """Definition, options and model/library versions, recorded in results.json."""
        return {"version": self.version, "options": self.options}


class SampleMetric(Metric):
    #: Pairs per call of :meth:`score`.
    batch_size: ClassVar[int] = 4096

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, Sequence[float]]:
        """Scores for aligned pairs, one list per output column (see ``MetricEntry.outputs``)."""
        raise NotImplementedError


class CorpusMetric(Metric):
    #: Sample-level columns this metric reads from the table.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Whether a per-difficulty breakdown means something for this statistic.
    by_difficulty: ClassVar[bool] = True

    def required_columns(self) -> tuple[str, ...]:
        return self.requires

    def compute(self, table: ScoreTable) -> float:
        raise NotImplementedError

    def report(self, table: ScoreTable) -> dict[str, Any]:
        """Counts behind the statistic on the full table, merged into its entry in results.json: ``n``
        (the samples it is computed on) and ``n_left_out`` (the samples it ignores, with details). The
        harness warns when samples are left out. By default every sample counts."""
        return {}
