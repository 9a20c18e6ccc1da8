"""Foreign and poisoned cache files: the prediction cache (``--cache``) and the score cache.

A file that is not a vlmbench cache — views only, a view named ``predictions``, vlmbench's mark on a
foreign ``predictions`` table, a trigger — is refused before anything in it changes (no table, no mark,
no WAL journal): the prediction cache with one error, the score cache (only a speed-up) with a warning.
A row that is not what vlmbench writes (scores nested 200,000 deep, an answer stored as a BLOB, no hash of
the image it was answered for) is not trusted: its sample is answered or scored again, with a counted
warning, never a traceback.
"""

from __future__ import annotations

import json
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vlmbench.cli import cli
from vlmbench.errors import VlmbenchError
from vlmbench.evaluation.store import APPLICATION_ID, PredictionStore
from vlmbench.scoring.score_cache import APPLICATION_ID as SCORES_ID
from vlmbench.scoring.score_cache import ScoreCache

GROUP = "Caches"
DEEP = "[" * 200_000 + "]" * 200_000


def _foreign_files(root: Path, mark: int) -> dict[str, Path]:
    """SQLite files that are not vlmbench caches; ``mark`` is the application id of the cache they
    pretend to be."""
    statements = {
        "a database holding only views": ["CREATE VIEW v AS SELECT 1 AS x"],
        "a view named predictions": ["CREATE VIEW predictions AS SELECT 1 AS x"],
        "a view named scores": ["CREATE VIEW scores AS SELECT 1 AS x"],
        "vlmbench's application id on a foreign predictions table": [
            f"PRAGMA application_id = {mark}", "CREATE TABLE predictions (x TEXT)"],
        "vlmbench's application id on a foreign scores table": [
            f"PRAGMA application_id = {mark}", "CREATE TABLE scores (x TEXT)"],
        "vlmbench's application id with a trigger": [
            f"PRAGMA application_id = {mark}", "CREATE TABLE t (x)",
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM t; END"],
    }  # fmt: skip
    files = {}
    for name, sql in statements.items():
        path = root / f"{len(files)}.sqlite"
        with sqlite3.connect(path) as db:
            for statement in sql:
                db.execute(statement)
        db.close()
        files[name] = path
    return files


def _unchanged(path: Path, before: bytes) -> None:
    assert path.read_bytes() == before, path
    assert not path.with_name(path.name + "-wal").exists()


def test_foreign_prediction_caches_are_refused_unchanged(tmp_path, tiny_task, reliability):
    files = _foreign_files(tmp_path, APPLICATION_ID)
    for path in files.values():
        before = path.read_bytes()
        with pytest.raises(VlmbenchError, match="not a vlmbench prediction cache.*left as it is"):
            PredictionStore(path)
        _unchanged(path, before)
    # From the command line: one Error: line before any model work.
    path = files["a database holding only views"]
    before = path.read_bytes()
    result = CliRunner().invoke(cli, ["run", "-m", "prior", "-t", str(tiny_task), "--cache", str(path),
                                      "-o", str(tmp_path / "runs"), "-q"])  # fmt: skip
    assert result.exit_code == 2 and "Error:" in result.output and "view 'v'" in result.output, result.output
    _unchanged(path, before)
    assert not list((tmp_path / "runs").rglob("results.json"))
    reliability.record_each(GROUP, files, "refused with one error naming the file; the file is left unchanged "
                            "(no table, mark or WAL)", prefix="--cache: ")  # fmt: skip


def test_foreign_score_caches_are_left_alone(tmp_path, reliability):
    files = _foreign_files(tmp_path, SCORES_ID)
    for path in files.values():
        before = path.read_bytes()
        with pytest.warns(UserWarning, match="left as it is and scores are not cached"):
            cache = ScoreCache(path)
        assert not cache.enabled
        cache.close()
        _unchanged(path, before)
    reliability.record_each(GROUP, files, "warning; scores computed without the cache; the file is left "
                            "unchanged", prefix="score cache: ")  # fmt: skip


@pytest.mark.slow(seconds=9)
def test_poisoned_prediction_rows_are_answered_again(tmp_path, tiny_task, reliability):
    import vlmbench

    cache = tmp_path / "cache.sqlite"
    common = {"cache": cache, "progress": False, "metrics": ["exact_match"]}
    first = vlmbench.evaluate("prior", tiny_task, output_dir=tmp_path / "a", **common)
    with sqlite3.connect(cache) as db:
        ids = [r[0] for r in db.execute("SELECT sample_id FROM predictions ORDER BY sample_id")]
        poison = {
            "scores nested 200,000 deep": ("UPDATE predictions SET scores = ? WHERE sample_id = ?", DEEP),
            "raw answer stored as a BLOB": ("UPDATE predictions SET raw = ? WHERE sample_id = ?", b"\x00red"),
            "no image hash (whether the image changed is unknown)": ("UPDATE predictions SET image_sha256 = ? WHERE sample_id = ?", None),
        }  # fmt: skip
        for (sql, value), sid in zip(poison.values(), ids, strict=False):
            db.execute(sql, (value, sid))
    db.close()
    with pytest.warns(UserWarning, match=r"3 answers in the prediction cache .* cannot be trusted") as caught:
        again = vlmbench.evaluate("prior", tiny_task, output_dir=tmp_path / "b", **common)
    assert sum("cannot be trusted" in str(w.message) for w in caught) == 1
    assert again.results["cache"] == {**first.results["cache"], "computed": 3, "cached": len(ids) - 3}
    preds = [json.loads(x) for x in (again.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert preds == [json.loads(x) for x in (first.run_dir / "predictions.jsonl").read_text().splitlines()]
    with PredictionStore(cache) as store, warnings.catch_warnings():  # replaced by good rows: trusted again
        warnings.simplefilter("error")
        assert store.get_many(first_key(store), ids) and not store.ignored
    reliability.record_each(GROUP, poison, "the row is not trusted: its sample answered again, one counted "
                            "warning", prefix="prediction cache row: ")  # fmt: skip


def first_key(store: PredictionStore):
    from vlmbench.evaluation.store import RunKey

    row = store._db.execute("SELECT model_fp, task_hash, settings_hash FROM predictions").fetchone()
    return RunKey(*row)


def test_poisoned_score_rows_are_scored_again(tmp_path, reliability):
    path = tmp_path / "scores.sqlite"
    pairs = [("red", "red"), ("blue", "red"), ("green", "green")]
    with ScoreCache(path) as cache:
        cache.store("k", {"metric": "m"}, {"name": "m"}, pairs, np.array([[1.0], [0.0], [1.0]]))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE scores SET scores = ? WHERE prediction = 'blue'", ("0.0",))  # text, not doubles
        db.execute("UPDATE scores SET scores = ? WHERE prediction = 'green'", (b"\x00" * 3,))  # wrong size
    db.close()
    with ScoreCache(path) as cache, pytest.warns(UserWarning, match="2 stored scores .* computed again"):
        found = cache.lookup("k", pairs, 1)
    assert list(found) == [0] and found[0].tolist() == [1.0]
    with sqlite3.connect(path) as db:
        db.execute("UPDATE metrics SET details = ?", (DEEP,))
    db.close()
    with ScoreCache(path) as cache, pytest.warns(UserWarning, match="unreadable details"):
        assert cache.details("k") is None  # the metric's scores are then computed again
    reliability.record_each(GROUP, ["scores stored as text", "scores of the wrong size", "details nested 200,000 deep"],
                            "not used: scored again, with a counted warning", prefix="score cache row: ")  # fmt: skip
