"""The region detector as ViLBERT's default features: ``vlmbench run -m vilbert`` with tiny random
release and detector folders, the feature cache (filled by a run, reused by the next, written ahead of
time by ``vlmbench vilbert-features`` and resumed after an interruption), and what results and the
leaderboard say of the feature source."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vlmbench.analysis.leaderboard import collect, to_markdown
from vlmbench.cli import cli
from vlmbench.evaluation.runner import evaluate
from vlmbench.plugin.loading import load_plugins
from vlmbench_plugins.models.vilbert.detector import source as detector_source
from vlmbench_plugins.models.vilbert.detector.extraction import RegionExtractor
from vlmbench_plugins.models.vilbert.detector.loading import find_detector_files, load_detector

from .plugin_assets import ABO_IMAGES, TINY_DETECTOR_YAML, abo_rows, build_detector, build_release
from vlmbench_testing import run_cli, start_cli, stop, wait_until

SIZES = "min_size=96,max_size=160"  # small images keep the tiny detector fast


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    load_plugins().call_each("register_commands", cli=cli)  # as `vlmbench` does: adds vilbert-features
    root = tmp_path_factory.mktemp("vilbert_detector")
    return {"release": build_release(root / "release"), "detector": build_detector(root / "detector")}


def _args(assets, cache: Path, extra: str = "") -> str:
    args = f"pretrained={assets['release']},detector={assets['detector']},feature_cache={cache},{SIZES}"
    return f"{args},{extra}" if extra else args


def _images(limit: int) -> list[str]:
    return list(dict.fromkeys(row["path"] for row in abo_rows()[:limit]))


@pytest.mark.slow(seconds=12)
def test_run_extracts_caches_and_reuses_region_features(assets, tmp_path, monkeypatch):
    cache = tmp_path / "features"
    first = evaluate("vilbert", "abo_sample", model_args=_args(assets, cache), limit=4, num_workers=0,
                     cache=False, progress=False, metrics=["exact_match"], output_dir=tmp_path / "runs")  # fmt: skip
    assert first.status == "ok" and first.results["task"]["n_scored"] == 4
    model = first.results["model"]
    assert model["feature_source"] == "region detector" and model["faithful_features"] is False
    assert model["feature_extractor"].startswith("region detector at a config other than the released")
    assert "96/160 px" in model["feature_extractor"]
    assert (
        first.results["notes"][0]
        == "image features: region detector, not at the released X-152 config and image scale"
    )
    table = to_markdown(collect(tmp_path / "runs"))
    assert "image features: region detector" in table  # a numbered footnote of the leaderboard
    detector = model["identity"]["features"]["detector"]
    assert detector["config"]["conv_body"] == "R-50-FPN" and detector["extraction"]["min_size"] == 96

    # one file per image, holding what the detector gives for that image on its own
    entries = sorted(cache.rglob("*.npz"))
    assert len(entries) == len(_images(4)) == 1
    extractor = RegionExtractor(
        load_detector(find_detector_files(str(assets["detector"]))), min_size=96, max_size=160
    )
    found = extractor.detect(Image.open(ABO_IMAGES / _images(4)[0]).convert("RGB"))
    stored = [dict(np.load(e)) for e in entries]
    match = [s for s in stored if np.array_equal(s["features"], found.features.numpy())]
    assert len(match) == 1 and np.array_equal(match[0]["boxes"], found.boxes.numpy())
    assert int(match[0]["num_boxes"]) == found.num_boxes
    assert found.features.shape == (100, 2048) and int(match[0]["image_width"]) == 256

    # the next run answers from the cached features: the detector is never built
    def no_detector(*args, **kwargs):
        raise AssertionError("the detector was loaded although every image is cached")

    monkeypatch.setattr(detector_source, "load_detector", no_detector)
    again = evaluate("vilbert", "abo_sample", model_args=_args(assets, cache), limit=4, num_workers=0,
                     cache=False, progress=False, metrics=["exact_match"], output_dir=tmp_path / "runs2")  # fmt: skip
    assert again.status == "ok"
    answers = [r["raw"] for r in _predictions(first.run_dir)]
    assert [r["raw"] for r in _predictions(again.run_dir)] == answers


def _predictions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.slow(seconds=8)
def test_features_command_extracts_ahead_and_resumes(assets, tmp_path, monkeypatch):
    cache = tmp_path / "features"
    args = ["vilbert-features", "-t", "abo_sample", "--limit", "8", "-q", "-a",
            f"vilbert:detector={assets['detector']},feature_cache={cache},{SIZES}"]  # fmt: skip
    assert len(_images(8)) == 2
    original = RegionExtractor.detect_prepared
    calls = []

    def dies_on_the_second(self, item):
        calls.append(item)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed in the middle of an image
        return original(self, item)

    monkeypatch.setattr(RegionExtractor, "detect_prepared", dies_on_the_second)
    killed = CliRunner().invoke(cli, args)
    assert killed.exit_code != 0 and len(calls) == 2
    assert len(list(cache.rglob("*.npz"))) == 1  # the finished image only, no partial file
    monkeypatch.setattr(RegionExtractor, "detect_prepared", original)
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 images: 1 extracted, 1 already cached, 0 unreadable" in result.output
    assert len(list(cache.rglob("*.npz"))) == 2

    # a run with the same detector finds them all
    monkeypatch.setattr(detector_source, "load_detector", lambda *a, **k: pytest.fail("detector loaded"))
    done = evaluate("vilbert", "abo_sample", model_args=_args(assets, cache), limit=8, num_workers=0,
                    cache=False, progress=False, metrics=["exact_match"], output_dir=tmp_path / "runs")  # fmt: skip
    assert done.status == "ok" and done.results["task"]["n_scored"] == 8


def test_user_errors_are_one_line(assets, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["vilbert-features", "-t", "abo_sample", "-a", f"feature_cache={tmp_path}"])
    assert result.exit_code == 2 and "detector=DIR" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"model": {}}, bad / "detectron_model.pth")
    (bad / "detectron_config.yaml").write_text(TINY_DETECTOR_YAML.replace("R-50-FPN", "R-50-C4"))
    result = runner.invoke(cli, ["run", "-q", "--no-cache", "-m", "vilbert", "-t", "abo_sample", "--limit", "2",
                                 "-o", str(tmp_path / "runs"), "-a",
                                 f"pretrained={assets['release']},detector={bad}"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "Error:" in result.stderr and "CONV_BODY" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("predictions.jsonl"))


@pytest.mark.slow(seconds=15)
def test_features_command_killed_by_sigkill_resumes_with_whole_files(assets, tmp_path):
    """A real process, killed with SIGKILL once some images are cached: the rerun keeps those, extracts
    the rest, and no temporary file of the killed writer stays behind."""
    cache = tmp_path / "features"
    args = ["vilbert-features", "-t", "abo_sample", "-q", "-a",
            f"vilbert:detector={assets['detector']},feature_cache={cache},{SIZES}"]  # fmt: skip
    entries = lambda: list(cache.rglob("[!.]*.npz"))  # noqa: E731
    total = len(_images(10_000))
    proc = start_cli(args, stderr=tmp_path / "stderr.txt")
    assert wait_until(lambda: len(entries()) >= 2, proc), (tmp_path / "stderr.txt").read_text()
    assert stop(proc, signal.SIGKILL) == -signal.SIGKILL
    done_before = len(entries())
    assert 2 <= done_before < total
    orphan = entries()[0].parent / f".{'0' * 64}.{2**22 + 1}.tmp.npz"  # as a killed writer leaves it
    orphan.write_bytes(b"partial")
    rerun = run_cli(args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{total} images: {total - done_before} extracted, {done_before} already cached" in rerun.stdout
    assert len(entries()) == total and not list(cache.rglob(".*.npz"))
