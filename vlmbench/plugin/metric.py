"""The metric plugin contract.

Two kinds, as in lighteval:

- :class:`SampleMetric` scores one (prediction, reference) pair at a time. The harness calls
  :meth:`SampleMetric.score` once per *unique* pair, in batches — single-word answers repeat massively —
  and takes the best score over a sample's references.
- :class:`CorpusMetric` computes a statistic over the whole set of per-sample scores (e.g. the
  difficulty-weighted Average Mark). Bootstrap intervals call it on resampled tables.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, ClassVar

import numpy as np

from vlmbench.hashing import file_sha256
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
    #: True when a pair's score never depends on the other pairs scored with it. Encoders are not: the
    #: padding of a batch changes the last bits of an embedding. Only such metrics reuse stored scores
    #: of single pairs across answer sets; the others reuse the scores of the same set of pairs only.
    pair_independent: ClassVar[bool] = False

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, Sequence[float]]:
        """Scores for aligned pairs, one list per output column (see ``MetricEntry.outputs``)."""
        raise NotImplementedError

    def cache_identity(self) -> dict[str, Any] | None:
        """Everything this metric's scores depend on, found without loading an asset or importing a
        heavy library, or None (the default) when its scores are not to be stored in the score cache.

        Two metrics with equal identities must score every pair alike. Start from :meth:`base_identity`
        and add the asset (a model folder and a digest of its files, see ``model_identity``) and the
        libraries that compute the scores (:func:`library_versions`). Raise
        :class:`vlmbench.errors.AssetMissingError` as :meth:`setup` would when the asset is missing."""
        return None

    def base_identity(self, *code: Any) -> dict[str, Any]:
        """Name, class, version, options and outputs, and a digest of the source files of this metric's
        module and of the modules of ``code`` (functions or classes its scores depend on): an edited
        definition never reuses the scores of the old one, even if nobody bumped ``version``."""
        modules = {type(self).__module__, *(getattr(c, "__module__", None) or c.__name__ for c in code)}
        files = {m: file_sha256(sys.modules[m].__file__) for m in sorted(modules)}
        return {
            "metric": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "version": self.version,
            "options": self.options,
            "outputs": list(self.outputs),
            "code": files,
        }


def library_versions(*distributions: str) -> dict[str, str | None]:
    """Installed versions of ``distributions``, read from package metadata (nothing is imported)."""
    found: dict[str, str | None] = {}
    for name in distributions:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


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
