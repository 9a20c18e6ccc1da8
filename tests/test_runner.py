import json
from pathlib import Path

import pytest

from vlmbench.errors import ArgError, DataError, UnknownNameError, VlmbenchError
from vlmbench.evaluation.runner import evaluate
from vlmbench.plugin.hookspecs import hookimpl
from vlmbench.plugin.loading import load_plugins
from vlmbench.plugin.model import Model

from vlmbench_testing import closest_colour, colour_rows, make_images, sample_row, write_task


class CountingColour(Model):
    """Looks at the image: answers the name of the closest of four colours; counts its calls."""

    calls: list[int] = []

    def generate(self, batch, generation):
        CountingColour.calls.append(len(batch))
        return [closest_colour(r.image) for r in batch.requests]


class Missing(Model):
    def load(self):
        from vlmbench.errors import AssetMissingError

        raise AssetMissingError("checkpoint org/model", "pass --model-args pretrained=PATH")

    def generate(self, batch, generation):
        raise AssertionError("never called: the weights are missing")


class TestPlugin:
    @hookimpl
    def register_models(self, register):
        register("counting", f"{__name__}:CountingColour", summary="test")
        register("missing", f"{__name__}:Missing", summary="test")


@pytest.fixture
def plugins():
    CountingColour.calls.clear()
    yield load_plugins(extra=[TestPlugin()])
    load_plugins(reload=True)


def _evaluate(model: str, task: Path, plugins, output_dir: Path, **options):
    """``evaluate`` in this process without DataLoader workers or a progress bar, unless a test asks."""
    return evaluate(
        model,
        task,
        plugins=plugins,
        output_dir=output_dir,
        **{"num_workers": 0, "progress": False, **options},
    )


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_end_to_end_artifacts_and_zero_calls_on_rerun(tiny_task, tmp_path, plugins):
    result = _evaluate("counting", tiny_task, plugins, tmp_path / "runs", batch_size=5)
    assert result.status == "ok" and result.computed == 24 and result.cached == 0
    res = result.results
    # the colour half is right, the shape half wrong
    assert res["metrics"]["exact_match"]["value"] == pytest.approx(0.5)
    lo, hi = res["metrics"]["exact_match"]["ci95"]
    assert lo < 0.5 < hi
    # Average Mark by hand: colour questions (difficulty 0, weight 1) right, shape questions (3, weight 8) wrong
    assert res["metrics"]["average_mark"]["value"] == pytest.approx(12 * 1 / (12 * 1 + 12 * 8))
    assert res["by_difficulty"]["0"]["metrics"]["exact_match"]["value"] == 1.0
    assert res["by_difficulty"]["3"]["metrics"]["exact_match"]["value"] == 0.0
    assert res["by_difficulty"]["3"]["weight"] == 8.0
    assert res["task"]["hash"] and res["model"]["fingerprint"]
    prov = res["provenance"]
    assert prov["vlmbench_version"] and prov["libraries"]["torch"] and "hardware" in prov
    preds = _lines(result.run_dir / "predictions.jsonl")
    assert len(preds) == 24 and len({p["sample_id"] for p in preds}) == 24
    first = preds[0]
    assert set(first) >= {
        "sample_id",
        "question",
        "references",
        "raw",
        "answer",
        "scores",
        "image_sha256",
        "difficulty",
    }
    assert len(first["image_sha256"]) == 64 and "exact_match" in first["scores"]
    assert sorted(CountingColour.calls) == [4, 5, 5, 5, 5]

    CountingColour.calls.clear()
    again = _evaluate("counting", tiny_task, plugins, tmp_path / "runs")
    assert again.computed == 0 and again.cached == 24 and CountingColour.calls == []
    assert again.results["metrics"]["exact_match"] == res["metrics"]["exact_match"]


def test_workers_and_batch_sizes_give_the_same_answers(tiny_task, tmp_path, plugins):
    answers = []
    for workers, bs in [(0, 1), (2, 7)]:
        r = _evaluate(
            "counting",
            tiny_task,
            plugins,
            tmp_path / f"r{bs}",
            batch_size=bs,
            num_workers=workers,
            cache=False,
        )
        answers.append([p["answer"] for p in _lines(r.run_dir / "predictions.jsonl")])
    assert answers[0] == answers[1]


def test_limit_and_cache_reuse_across_output_dirs(tiny_task, tmp_path, plugins):
    _evaluate("counting", tiny_task, plugins, tmp_path / "a", limit=10)
    r = _evaluate("counting", tiny_task, plugins, tmp_path / "b")
    assert (r.cached, r.computed) == (10, 14)


def test_unreadable_images_are_skipped_and_counted(tmp_path, plugins):
    images = make_images(tmp_path / "t" / "images", 4)
    (tmp_path / "t" / "images" / images[0][0]).write_bytes(b"")
    (tmp_path / "t" / "images" / images[1][0]).write_bytes(b"garbage")
    rows = colour_rows(images)
    rows.append(
        {
            "image_id": "x",
            "path": "zz/missing.jpg",
            "question": "What colour?",
            "answer": "red",
            "difficulty": 0,
        }
    )
    rows.append(
        {
            "image_id": "y",
            "path": "../outside.jpg",
            "question": "What colour?",
            "answer": "red",
            "difficulty": 0,
        }
    )
    task = write_task(tmp_path / "t", rows)
    r = _evaluate("counting", task, plugins, tmp_path / "runs")
    assert r.results["skipped_samples"] == {
        "corrupt_image": 2,
        "empty_image": 2,
        "image_outside_root": 1,
        "missing_image": 1,
    }
    preds = _lines(r.run_dir / "predictions.jsonl")
    assert len(preds) == 10 and sum(p["status"] == "skipped" for p in preds) == 6
    assert r.results["task"]["n_scored"] == 4
    with pytest.raises(DataError, match="missing_image|empty|corrupt|outside"):
        _evaluate("counting", task, plugins, tmp_path / "runs2", cache=False, on_bad_sample="stop")


def test_missing_weights_report_skipped(tiny_task, tmp_path, plugins):
    r = _evaluate("missing", tiny_task, plugins, tmp_path / "runs")
    assert r.status == "skipped"
    data = json.loads((r.run_dir / "results.json").read_text())
    assert (
        data["status"] == "skipped" and "org/model" in data["reason"] and "pretrained=PATH" in data["reason"]
    )


def test_errors_before_work(tiny_task, tmp_path, plugins):
    with pytest.raises(UnknownNameError, match="did you mean 'counting'"):
        evaluate("countin", tiny_task, plugins=plugins, output_dir=tmp_path)
    with pytest.raises(ArgError, match="takes no arguments"):
        evaluate("counting", tiny_task, plugins=plugins, model_args="k=3", output_dir=tmp_path)
    with pytest.raises(ArgError, match="did you mean 'k'"):
        evaluate("prior", tiny_task, plugins=plugins, model_args="kk=3", output_dir=tmp_path)
    with pytest.raises(ArgError, match="invalid value 'many' for 'k'"):
        evaluate("prior", tiny_task, plugins=plugins, model_args="k=many", output_dir=tmp_path)
    with pytest.raises(UnknownNameError, match="unknown metric 'exact_mach'"):
        evaluate("counting", tiny_task, plugins=plugins, metrics=["exact_mach"], output_dir=tmp_path)
    with pytest.raises(VlmbenchError, match="cannot answer 'rank' requests"):
        rank_task = write_task(
            tmp_path / "rk",
            [{"image_id": "a", "path": "a.jpg", "question": "Q?", "answer": "red", "difficulty": 0}],
            {"request_type": "rank"},
        )
        evaluate("counting", rank_task, plugins=plugins, output_dir=tmp_path)


def test_prior_generate_and_rank(tmp_path, plugins):
    images = make_images(tmp_path / "t" / "images", 8)
    rows = []
    for rel, colour in images:
        stem = Path(rel).stem
        rows.append(sample_row(stem, rel, "What material is the frame?", "wood", 1))
        rows.append(sample_row(stem, rel, "Is it foldable?", "no" if colour != "red" else "yes", 0))
    gen = write_task(tmp_path / "t", rows)
    r = _evaluate("prior", gen, plugins, tmp_path / "g")
    preds = _lines(r.run_dir / "predictions.jsonl")
    # leave-one-image-out: the material question is answered "wood" from the other images' questions
    assert all(p["answer"] == "wood" for p in preds if "material" in p["question"])
    assert all(p["answer"] == "no" for p in preds if "foldable" in p["question"])
    rank = write_task(tmp_path / "t", rows, {"request_type": "rank"}, name="tiny_rank")
    r = _evaluate("prior", rank, plugins, tmp_path / "r")
    preds = _lines(r.run_dir / "predictions.jsonl")
    assert {p["answer"] for p in preds if "material" in p["question"]} == {"wood"}
    assert preds[0]["top_candidates"][0][0] == "wood"
    assert r.results["metrics"]["exact_match"]["value"] == pytest.approx(14 / 16)


def test_prior_with_train_split(tmp_path, plugins):
    make_images(tmp_path / "t" / "images", 2)
    rows = [
        {
            "path": "00/img000.jpg",
            "question": "What colour is the lamp?",
            "answer": "black",
            "split": "train",
        },
        {
            "path": "00/img000.jpg",
            "question": "What colour is the lamp shade?",
            "answer": "black",
            "split": "train",
        },
        {
            "path": "01/img001.jpg",
            "question": "What colour is the lamp base?",
            "answer": "white",
            "split": "test",
        },
    ]
    spec = {
        "split": "test",
        "train_split": "train",
        "dataset": {
            "path": "data.csv",
            "image_root": "images",
            "columns": {"split": "split", "image_id": None, "difficulty": None},
        },
    }
    task = write_task(tmp_path / "t", rows, spec)
    r = _evaluate("prior", task, plugins, tmp_path / "r")
    assert [p["answer"] for p in _lines(r.run_dir / "predictions.jsonl")] == ["black"]
    assert r.results["by_difficulty"]["unknown"]["n"] == 1
