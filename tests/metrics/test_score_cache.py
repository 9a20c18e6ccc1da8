"""The score cache: stored metric scores read back bit for bit, reused only where they would be computed
alike, never at the cost of a run; the identities behind it found without importing nltk."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vlmbench.plugin.loading import load_plugins
from vlmbench.plugin.metric import MetricContext, SampleMetric
from vlmbench.plugin.registry import MetricEntry
from vlmbench.scoring import progress as scoring_progress
from vlmbench.scoring.asset_identity import nltk_data_paths
from vlmbench.scoring.score_cache import APPLICATION_ID, ScoreCache
from vlmbench.scoring.scorer import score

WEIGHTS = {0: 1.0, 1: 2.0, 2: 4.0, 3: 8.0, 5: 20.0}


class Counting(SampleMetric):
    """Scores ``len(prediction) / (1 + len(reference))`` and counts what it was asked."""

    calls: list[tuple[str, str]]
    setups = 0

    def setup(self) -> None:
        type(self).setups += 1

    def score(self, predictions, references):
        type(self).calls.extend(zip(predictions, references, strict=True))
        return {self.name: [len(p) / (1 + len(r)) for p, r in zip(predictions, references, strict=True)]}

    def cache_identity(self):
        return self.base_identity()

    def describe(self):
        return {**super().describe(), "definition": "a test metric"}


def counting(pair_independent: bool) -> SampleMetric:
    cls = type("Counted", (Counting,), {"pair_independent": pair_independent, "calls": [], "setups": 0})
    return cls(MetricEntry("counted", "x:y"), {}, MetricContext(difficulty_weights=WEIGHTS))


def run(metrics, answers, refs, cache, **kwargs):
    return score(
        metrics, answers, refs, [0] * len(answers), weights=WEIGHTS, bootstrap_samples=50, seed=0,
        cache=cache, **kwargs,
    )  # fmt: skip


def test_floats_read_back_bit_for_bit(tmp_path: Path):
    values = np.array([[0.1 + 0.2], [math.nan], [-math.inf], [5e-324], [-0.0], [1 / 3]], dtype=np.float64)
    pairs = [(f"p{i}", "r") for i in range(len(values))]
    with ScoreCache(tmp_path / "s.sqlite") as cache:
        cache.store("k", {"id": 1}, {"d": 1}, pairs, values)
    with ScoreCache(tmp_path / "s.sqlite") as cache:
        found = cache.lookup("k", pairs, 1)
        assert cache.details("k") == {"d": 1}
    back = np.stack([found[i] for i in range(len(pairs))])
    assert back.tobytes() == values.tobytes()


def test_a_pair_independent_metric_computes_only_what_is_missing(tmp_path: Path):
    cache = tmp_path / "s.sqlite"
    first = counting(True)
    fresh = run([first], ["red", "blue", "red"], [["red"], ["navy", "blue"], ["red"]], cache)
    assert sorted(first.calls) == [("blue", "blue"), ("blue", "navy"), ("red", "red")]
    assert fresh.details["counted"]["score_cache"] == {"pairs": 3, "cached": 0}

    again = counting(True)
    cached = run([again], ["red", "blue", "red"], [["red"], ["navy", "blue"], ["red"]], cache)
    assert again.calls == [] and again.setups == 0  # never set up
    assert cached.sample_scores["counted"].tobytes() == fresh.sample_scores["counted"].tobytes()
    assert cached.metrics == fresh.metrics
    assert cached.details["counted"] == {**fresh.details["counted"], "score_cache": {"pairs": 3, "cached": 3}}

    more = counting(True)
    mixed = run([more], ["red", "green"], [["red"], ["green"]], cache)
    assert more.calls == [("green", "green")]
    assert mixed.details["counted"]["score_cache"] == {"pairs": 2, "cached": 1}


def test_a_batch_dependent_metric_reuses_only_the_same_set_of_pairs(tmp_path: Path):
    cache = tmp_path / "s.sqlite"
    run([counting(False)], ["red", "blue"], [["red"], ["navy"]], cache)
    same = counting(False)
    run([same], ["red", "blue"], [["red"], ["navy"]], cache)
    assert same.calls == []
    subset = counting(False)
    out = run([subset], ["red"], [["red"]], cache)
    # An encoder's scores depend on the batch they were computed in: a subset is computed afresh.
    assert subset.calls == [("red", "red")]
    assert out.details["counted"]["score_cache"] == {"pairs": 1, "cached": 0}


def test_no_cache_neither_reads_nor_writes(tmp_path: Path):
    metric = counting(True)
    out = run([metric], ["red"], [["red"]], None)
    assert metric.calls == [("red", "red")] and "score_cache" not in out.details["counted"]
    assert not list(tmp_path.iterdir())


def test_a_damaged_cache_is_moved_aside_and_scoring_goes_on(tmp_path: Path):
    path = tmp_path / "s.sqlite"
    run([counting(True)], ["red"], [["red"]], path)
    data = bytearray(path.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # the header stays: an SQLite file, damaged
    path.write_bytes(bytes(data))
    metric = counting(True)
    with pytest.warns(UserWarning, match="damaged"):
        out = run([metric], ["red"], [["red"]], path)
    assert metric.calls == [("red", "red")] and out.metrics["counted"]["value"] == 0.75
    assert list(tmp_path.glob("s.sqlite.corrupt-*"))


@pytest.mark.parametrize("kind", ["text", "foreign sqlite"])
def test_a_file_of_another_program_is_left_alone(tmp_path: Path, kind: str):
    path = tmp_path / "s.sqlite"
    if kind == "text":
        path.write_text("not a database\n", encoding="utf-8")
    else:
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA application_id = 1234")
            db.execute("CREATE TABLE t (x)")
    before = path.read_bytes()
    metric = counting(True)
    with pytest.warns(UserWarning, match="left as it is"):
        out = run([metric], ["red"], [["red"]], path)
    assert out.metrics["counted"]["value"] == 0.75 and path.read_bytes() == before


def test_our_file_is_marked(tmp_path: Path):
    run([counting(True)], ["red"], [["red"]], tmp_path / "s.sqlite")
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_progress_names_the_metric_and_is_silent_when_off(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(scoring_progress, "DELAY", 0.0)
    run([counting(True)], ["red", "blue"], [["red"], ["blue"]], None, progress=True)
    assert "scoring: counted" in capsys.readouterr().err
    run([counting(True)], ["red", "blue"], [["red"], ["blue"]], None, progress=False)
    assert capsys.readouterr().err == ""


def test_seconds_per_metric(tmp_path: Path):
    plugins = load_plugins()
    context = MetricContext(difficulty_weights=WEIGHTS)
    metrics = [
        plugins.create_metric("exact_match", {}, context),
        plugins.create_metric("average_mark", {}, context),
    ]
    out = run(metrics, ["red", "blue"], [["red"], ["navy"]], None)
    assert set(out.seconds) == {"exact_match", "average_mark"}
    assert all(s >= 0 for s in out.seconds.values())


def test_wordnet_metrics_from_the_cache_equal_fresh_ones(wordnet_env, tmp_path: Path, monkeypatch):
    from vlmbench_plugins.metrics.meteor import Meteor
    from vlmbench_plugins.metrics.wups import Wups

    plugins = load_plugins()
    context = MetricContext(difficulty_weights=WEIGHTS)
    answers = ["soccer", "red", "sofa", "two", "The Red.", "", "handbag"]
    refs = [["football"], ["red"], ["couch"], ["2"], ["red"], ["blue"], ["purse", "bag"]]

    def metrics():
        names = ("exact_match", "average_mark", "wups", "meteor")
        return [plugins.create_metric(n, {}, context) for n in names]

    cache = tmp_path / "scores.sqlite"
    fresh = run(metrics(), answers, refs, cache)
    uncached = run(metrics(), answers, refs, None)

    def refuse(self):
        raise AssertionError("set up although every score is stored")

    monkeypatch.setattr(Wups, "setup", refuse)
    monkeypatch.setattr(Meteor, "setup", refuse)
    cached = run(metrics(), answers, refs, cache)
    assert cached.skipped == {}
    for col, values in fresh.sample_scores.items():
        assert (
            values.tobytes() == cached.sample_scores[col].tobytes() == uncached.sample_scores[col].tobytes()
        )
    assert fresh.metrics == cached.metrics == uncached.metrics
    assert cached.details["wups"]["score_cache"] == {"pairs": 8, "cached": 8}
    strip = lambda d: {k: v for k, v in d.items() if k != "score_cache"}  # noqa: E731
    assert strip(cached.details["wups"]) == strip(fresh.details["wups"]) == uncached.details["wups"]


def _python(code: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return result.stdout


def test_the_wordnet_a_run_reads_is_known_without_nltk(wordnet_env, tmp_path: Path):
    env = {"NLTK_DATA": str(tmp_path / "no-nltk-data")}
    recorded = _python(
        "import json; from vlmbench.scoring.assets import find_wordnet; "
        "from vlmbench.scoring.asset_identity import wordnet_identity_of; "
        "print(json.dumps(wordnet_identity_of(find_wordnet().root)))",
        env,
    )
    peek = "import json, sys; from vlmbench.scoring.asset_identity import wordnet_identity; " \
        "print(json.dumps([wordnet_identity(), 'nltk' in sys.modules]))"  # fmt: skip
    assert json.loads(_python(peek, env)) == [json.loads(recorded), False]
    # A WordNet where nltk looks first changes what the search looks at: unknown until searched again.
    (tmp_path / "no-nltk-data" / "corpora" / "wordnet").mkdir(parents=True)
    assert json.loads(_python(peek, env)) == [None, False]


def test_a_wordnet_on_nltks_paths_is_known_whatever_the_cache_folder(wordnet_env, tmp_path: Path):
    """Found on one of nltk's paths, the search never reached vlmbench's cache folder: another cache
    folder (each test, or each user of a shared score cache, has one) knows the answer too."""
    data_dir = wordnet_env.data_dir  # the run's WordNet, named where nltk looks first
    env = {"NLTK_DATA": data_dir, "VLMBENCH_CACHE_DIR": str(tmp_path / "first")}
    recorded = _python(
        "import json; from vlmbench.scoring.assets import find_wordnet; "
        "from vlmbench.scoring.asset_identity import wordnet_identity_of; "
        "location = find_wordnet(); print(json.dumps([location.source, wordnet_identity_of(location.root)]))",
        env,
    )
    source, identity = json.loads(recorded)
    assert source == "nltk"
    peek = "import json, sys; from vlmbench.scoring.asset_identity import wordnet_identity; " \
        "print(json.dumps([wordnet_identity(), 'nltk' in sys.modules]))"  # fmt: skip
    other = {**env, "VLMBENCH_CACHE_DIR": str(tmp_path / "second")}
    assert json.loads(_python(peek, other)) == [identity, False]
    # A change on nltk's paths still makes it unknown until searched again.
    (tmp_path / "earlier" / "corpora" / "wordnet").mkdir(parents=True)
    earlier = {**other, "NLTK_DATA": f"{tmp_path / 'earlier'}{os.pathsep}{data_dir}"}
    assert json.loads(_python(peek, earlier)) == [None, False]


def test_nltk_data_paths_are_nltks_own(tmp_path: Path):
    env = {"NLTK_DATA": os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")])}
    code = (
        "import json; from vlmbench.scoring.asset_identity import nltk_data_paths; ours = nltk_data_paths(); "
        "import nltk; print(json.dumps([ours, list(nltk.data.path)]))"
    )
    ours, nltks = json.loads(_python(code, env))
    assert ours == nltks
    assert nltk_data_paths()  # in this process: the live list


def test_the_hub_cache_folder_is_huggingface_hubs(tmp_path: Path):
    env = {"HF_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": "", "HUGGINGFACE_HUB_CACHE": ""}
    env = {k: v for k, v in env.items() if v}
    code = (
        "import json, os; os.environ.pop('HF_HUB_CACHE', None); os.environ.pop('HUGGINGFACE_HUB_CACHE', None); "
        "from vlmbench.hub import _hub_cache; ours = str(_hub_cache()); "
        "import huggingface_hub.constants as c; print(json.dumps([ours, c.HF_HUB_CACHE]))"
    )
    ours, theirs = json.loads(_python(code, env))
    assert ours == theirs == str(tmp_path / "home" / "hub")
