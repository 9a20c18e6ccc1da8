"""The ``vilbert`` model plugin end to end: a tiny random ViLBERT release folder, the grid extractor
with random ResNet weights, ``vlmbench run`` on abo_sample (generate) and on a rank task."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from vlmbench.cli import cli
from vlmbench.errors import ArgError, VlmbenchError
from vlmbench.evaluation.runner import evaluate
from vlmbench.plugin.loading import load_plugins, resolve_task
from vlmbench.tasks.normalize import vqa_normalize
from vlmbench_plugins.models.vilbert import plugin as vilbert_plugin
from vlmbench_plugins.models.vilbert.config import VilbertConfig
from vlmbench_plugins.models.vilbert.feature_sources import grid_shape
from vlmbench_plugins.models.vilbert.features import (
    FAITHFUL_LABEL,
    UNKNOWN_SOURCE_LABEL,
    save_regions_npz,
)
from vlmbench_plugins.models.vilbert.grid_features import (
    ResNetRegionExtractor,
)
from vlmbench_plugins.models.vilbert.inference import (
    AnswerVocabulary,
    answer_logits,
    predict_answers,
    read_answer_file,
    restricted_answers,
)
from vlmbench_plugins.models.vilbert.loading import load_vilbert
from vlmbench_plugins.models.vilbert.modeling import VilbertForPreTraining
from vlmbench_plugins.models.vilbert.tokenization import QuestionTokenizer

from .plugin_assets import ABO_CSV, ABO_IMAGES, abo_rows, build_backbone, build_release

GRID = "features=grid,backbone=resnet50,min_size=32,max_size=48,num_regions=16"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vilbert")
    return {
        "release": build_release(root / "release", "safetensors"),
        "release_bin": build_release(root / "release_bin", "bin"),
        "backbone": build_backbone(root / "resnet50.pth"),
    }


def _grid_args(assets, release: str = "release", extra: str = "") -> str:
    args = f"pretrained={assets[release]},backbone_weights={assets['backbone']},{GRID}"
    return f"{args},{extra}" if extra else args


def _run(args: list[str]):
    return CliRunner().invoke(cli, ["run", "-q", "--no-cache", *args], catch_exceptions=False)


def _results(output_dir: Path) -> tuple[dict, list[dict]]:
    (results,) = list(output_dir.rglob("results.json"))
    predictions = results.with_name("predictions.jsonl")
    rows = [json.loads(line) for line in predictions.read_text().splitlines()] if predictions.exists() else []
    return json.loads(results.read_text()), rows


def _direct_logits(
    assets, release: str, questions: list[str], images: list[str]
) -> tuple[torch.Tensor, AnswerVocabulary]:
    """The same computation without the harness: modules called one after the other."""
    folder = assets[release]
    weights = next(folder.glob("multi_task_model.*"))
    model = load_vilbert(weights, config=folder / "bert_base_6layer_6conect.json")
    extractor = ResNetRegionExtractor(
        assets["backbone"], arch="resnet50", grid=(4, 4), min_size=32, max_size=48
    )
    regions = extractor.extract([Image.open(ABO_IMAGES / path) for path in images])
    logits = answer_logits(model, QuestionTokenizer(folder / "vocab.txt")(questions), regions)
    vocab = AnswerVocabulary.from_file(folder / "trainval_label2ans.json", normalize=vqa_normalize)
    return logits, vocab


def test_generate_on_abo_sample(assets, tmp_path):
    out = tmp_path / "runs"
    result = _run(["-m", "vilbert", "-t", "abo_sample", "--limit", "8", "-b", "4", "-o", str(out),
                   "--model-args", _grid_args(assets)])  # fmt: skip
    assert result.exit_code == 0, result.output
    results, rows = _results(out)
    assert results["status"] == "ok" and results["task"]["n_scored"] == 8
    model = results["model"]

    # the approximation is stated in the results
    assert model["feature_extractor"] == (
        "approximation: torchvision resnet50 C5 features RoIAlign-pooled over 4x4 grid cells, "
        "not the VG X-152 detector"
    )
    assert model["faithful_features"] is False and model["feature_source"] == "grid approximation"
    assert results["notes"][0].startswith("image features: grid approximation")  # a leaderboard footnote
    assert model["identity"]["features"]["label"] == model["feature_extractor"]

    # share of references the head cannot produce, computed here from the data and the answer list
    samples = abo_rows()[:8]
    answers = {
        vqa_normalize(a) for a in json.loads((assets["release"] / "trainval_label2ans.json").read_text())
    }
    outside = sum(vqa_normalize(s["answer"]) not in answers for s in samples) / 8
    assert 0 < outside < 1
    assert model["vocabulary"] == {"size": 3129, "reference_outside_share": outside}

    # provenance: the weights file's hash, the exact parameter count, the checkpoint and config used
    weights = assets["release"] / "multi_task_model.safetensors"
    assert model["identity"]["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert model["checkpoint"] == str(weights)
    assert model["config"].endswith("bert_base_6layer_6conect.json")
    net = load_vilbert(weights)
    assert model["parameters"] == sum(p.numel() for p in net.parameters())

    # the harness (worker collate, sorted batches of 4) answers exactly as the modules called directly
    logits, vocab = _direct_logits(
        assets, "release", [s["question"] for s in samples], [s["path"] for s in samples]
    )
    expected = predict_answers(logits, vocab)
    assert [r["raw"] for r in rows] == expected
    assert len(set(expected)) > 1  # answers depend on the input, so a mix-up of requests would show


def test_rank_task(assets, tmp_path):
    task_yaml = tmp_path / "abo_rank.yaml"
    task_yaml.write_text(yaml.safe_dump({
        "task": "abo_rank", "version": 1,
        "dataset": {"path": str(ABO_CSV), "image_root": str(ABO_IMAGES)},
        "request_type": "rank",
        "candidates": {"source": "task_answers"},
        "metrics": ["exact_match"],
    }))  # fmt: skip
    out = tmp_path / "runs"
    # .bin weights, the answer list as a pickle, and collate in the main process
    args = _grid_args(assets, "release_bin", f"answers={assets['release_bin'] / 'answers.pkl'}")
    result = _run(["-m", "vilbert", "-t", str(task_yaml), "--limit", "4", "--num-workers", "0", "-o", str(out),
                   "--model-args", args])  # fmt: skip
    assert result.exit_code == 0, result.output
    results, rows = _results(out)
    assert results["status"] == "ok" and results["task"]["request_type"] == "rank"
    assert results["model"]["answers"].endswith("answers.pkl")
    assert 0 < results["model"]["vocabulary"]["reference_outside_share"] < 1

    task = resolve_task(task_yaml, load_plugins())
    samples = task.samples[:4]
    candidates = [task.candidates_for(s) for s in samples]
    logits, vocab = _direct_logits(assets, "release_bin", [s.question for s in samples],
                                   [s.image for s in samples])  # fmt: skip
    assert [r["raw"] for r in rows] == restricted_answers(logits, vocab, candidates)
    for row in rows:
        for candidate, score in row["top_candidates"]:
            if candidate in vocab:
                assert score > vilbert_plugin.OUT_OF_VOCABULARY_FLOOR
            else:  # outside the answer list: below every logit, and still valid JSON
                assert score <= vilbert_plugin.OUT_OF_VOCABULARY_FLOOR


class _RunsAShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_answer_pickle_is_refused(assets, tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "trainval_label2ans.pkl"
    hostile.write_bytes(pickle.dumps(["yes", _RunsAShellCommand(marker)]))
    with pytest.raises(pickle.UnpicklingError, match="only lists or dicts of strings"):
        read_answer_file(hostile)
    entry = load_plugins().models.get("vilbert")
    model = vilbert_plugin.VilbertModel.create(entry, {
        "pretrained": str(assets["release"]), "answers": str(hostile),
        "features": "grid", "backbone_weights": str(assets["backbone"]), "backbone": "resnet50",
    })  # fmt: skip
    with pytest.raises(VlmbenchError, match="refusing to load"):
        model.load()
    assert not marker.exists()
    # plain data is still checked: only strings (or answer -> row maps) are accepted
    numbers = tmp_path / "numbers.pkl"
    numbers.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="list of answer strings"):
        read_answer_file(numbers)
    label2ans = tmp_path / "ans2label.pkl"
    label2ans.write_bytes(pickle.dumps({"yes": 1, "no": 0}))
    assert read_answer_file(label2ans) == ["no", "yes"]


def test_missing_checkpoint_is_reported_as_skipped(tmp_path):
    out = tmp_path / "runs"
    result = _run(["-m", "vilbert", "-t", "abo_sample", "--limit", "2", "-o", str(out)])
    assert result.exit_code == 4, result.output  # the only model was skipped: nothing was evaluated
    assert "vilbert: skipped" in result.stderr
    results, rows = _results(out)
    assert results["status"] == "skipped" and rows == []
    assert "--model-args pretrained=PATH" in results["reason"]
    assert "multi_task_model.bin" in results["reason"]
    assert results["model"]["feature_extractor"].startswith("region detector:")  # the default
    assert results["model"]["feature_source"] == "region detector"

    # A folder that was named must hold everything: one Error line before any model work.
    absent = tmp_path / "nowhere"
    out2 = tmp_path / "runs2"
    result = _run(["-m", "vilbert", "-t", "abo_sample", "--limit", "2", "-o", str(out2),
                   "--model-args", f"pretrained={absent}"])  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("Error:")
        and f"pretrained={absent} does not exist" in lines[0]
    )
    assert not out2.exists() or not any(out2.rglob("results.json"))


def _model(**args):
    entry = load_plugins().models.get("vilbert")
    return vilbert_plugin.VilbertModel.create(entry, {k: str(v) for k, v in args.items()})


def test_each_missing_file_is_named(assets, tmp_path):
    folder = tmp_path / "only_weights"
    folder.mkdir()
    shutil.copy(assets["release"] / "multi_task_model.safetensors", folder)
    with pytest.raises(ArgError) as caught:  # when the arguments are checked, before any model work
        _model(pretrained=folder)
    message = str(caught.value)
    for what in ("vocab.txt", "--model-args vocab=PATH", "trainval_label2ans.pkl", "--model-args answers=PATH",
                 "--model-args detector=DIR", "bert-base-uncased", "datasets.tar.gz"):  # fmt: skip
        assert what in message, what
    assert "3 file(s) missing" in message
    assert "multi_task_model" not in message.split("missing", 1)[1]  # the weights were found
    # Everything in the folder, the grid backbone under torchvision's own file name: the folder is enough.
    for name in ("vocab.txt", "trainval_label2ans.json"):
        shutil.copy(assets["release"] / name, folder)
    shutil.copy(assets["backbone"], folder / "resnet50-0676ba61.pth")
    model = _model(pretrained=folder, features="grid", backbone="resnet50")
    assert model._files().backbone == folder / "resnet50-0676ba61.pth"
    assert model.answer_vocabulary() is not None


def test_argument_checks():
    with pytest.raises(ArgError, match="features_path"):
        _model(features="precomputed")
    with pytest.raises(ArgError, match="num_regions"):
        _model(num_regions=0)
    with pytest.raises(ArgError, match="task_id"):
        _model(task_id=20)
    with pytest.raises(ArgError, match="must be one of"):
        _model(features="boxes")
    with pytest.raises(ArgError, match="backbone_weights is only read with features=grid"):
        _model(backbone_weights="resnet.pth")
    with pytest.raises(ArgError, match="detector is only read with features=detector"):
        _model(features="grid", detector="det")
    with pytest.raises(ArgError, match="unknown argument"):
        _model(checkpoint="x")


def test_grid_shape_is_close_to_square():
    assert grid_shape(100) == (10, 10)
    assert grid_shape(36) == (6, 6)
    assert grid_shape(12) == (4, 3)
    assert grid_shape(7) == (7, 1)


def test_fingerprint_follows_file_contents(assets, tmp_path):
    backbone = dict(features="grid", backbone_weights=assets["backbone"], backbone="resnet50")
    first = _model(pretrained=assets["release"], **backbone)
    moved = shutil.copytree(assets["release"], tmp_path / "moved")
    assert _model(pretrained=moved, **backbone).fingerprint() == first.fingerprint()  # same files elsewhere
    answers = json.loads((moved / "trainval_label2ans.json").read_text())
    answers[-1], answers[-2] = answers[-2], answers[-1]
    (moved / "trainval_label2ans.json").write_text(json.dumps(answers))
    assert _model(pretrained=moved, **backbone).fingerprint() != first.fingerprint()
    assert _model(pretrained=assets["release"], task_id=2, **backbone).fingerprint() != first.fingerprint()
    weights = assets["release"] / "multi_task_model.safetensors"
    assert vilbert_plugin.file_sha256(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_precomputed_features(assets, tmp_path):
    samples = abo_rows()[:4]
    features = tmp_path / "features"
    features.mkdir()
    rng = np.random.default_rng(0)
    for image_id in {s["image_id"] for s in samples}:
        boxes = np.array([[0, 0, 100, 80], [40, 30, 200, 256], [10, 10, 250, 250]], dtype=np.float32)
        save_regions_npz(features / f"{image_id}.npz", rng.random((3, 2048), dtype=np.float32), boxes, 256, 256,
                         source="approximation: test features")  # fmt: skip
    base = {"pretrained": str(assets["release"]), "features": "precomputed", "features_path": str(features)}
    result = evaluate("vilbert", "abo_sample", model_args=base, limit=4, cache=False, progress=False,
                      output_dir=tmp_path / "runs")  # fmt: skip
    assert result.status == "ok" and result.results["task"]["n_scored"] == 4
    model = result.results["model"]
    assert model["feature_extractor"] == UNKNOWN_SOURCE_LABEL and model["faithful_features"] is False
    assert model["feature_sources_seen"] == ["approximation: test features"]  # what the files say
    assert model["identity"]["features"]["path"] == str(features.resolve())
    assert "backbone_sha256" not in model["identity"]["features"]

    faithful = _model(**base, features_faithful="true")
    assert faithful.describe()["feature_extractor"] == FAITHFUL_LABEL
    assert faithful.fingerprint() != _model(**base).fingerprint()

    (features / f"{samples[0]['image_id']}.npz").unlink()
    lost = sum(s["image_id"] == samples[0]["image_id"] for s in samples)
    result = evaluate("vilbert", "abo_sample", model_args=base, limit=4, cache=False, progress=False,
                      num_workers=0, output_dir=tmp_path / "runs2")  # fmt: skip
    assert result.results["skipped_samples"] == {"missing_features": lost}
    assert "no precomputed features for image" in result.results["skipped_sample_examples"][0]


def test_registration_stays_torch_free():
    code = "import sys, vlmbench_plugins.models; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0
    entry = load_plugins().models.get("vilbert")
    assert entry.request_types == ("generate", "rank") and entry.default_checkpoint == "multi_task_model.bin"


def test_describe_without_loading(assets, tmp_path):
    backbone = dict(features="grid", backbone_weights=assets["backbone"], backbone="resnet50")
    loaded = _model(pretrained=assets["release"], **backbone)
    loaded.load()
    described = _model(pretrained=assets["release"], **backbone).describe()  # weights never read
    assert described["parameters"] == loaded.describe()["parameters"]
    assert described["config"].endswith("bert_base_6layer_6conect.json")

    folder = shutil.copytree(assets["release"], tmp_path / "metadata_config")
    (folder / "bert_base_6layer_6conect.json").unlink()
    from_metadata = _model(pretrained=folder, **backbone)
    assert from_metadata.describe()["config"] == "stored in the safetensors metadata"
    from_metadata.load()  # the config stored with the weights builds the same model

    # a .bin file carries no config: the base config applies, the size of the released checkpoint
    base = tmp_path / "base"
    base.mkdir()
    for name in ("multi_task_model.bin", "vocab.txt", "trainval_label2ans.json"):
        shutil.copy(assets["release_bin"] / name, base)
    described = _model(pretrained=base, **backbone).describe()
    assert described["config"] == "base config (bert_base_6layer_6conect)"
    assert described["parameters"] == 268_028_859
    assert load_plugins().models.get("vilbert").parameters == "268M"

    with pytest.raises(ArgError, match="config=.*does not exist"):  # before any model work
        _model(pretrained=assets["release"], config=tmp_path / "absent.json", **backbone)


def test_checkpoints_that_cannot_answer_are_errors(assets, tmp_path):
    backbone = dict(features="grid", backbone_weights=assets["backbone"], backbone="resnet50")
    folder = shutil.copytree(assets["release"], tmp_path / "pretraining")
    (folder / "multi_task_model.safetensors").unlink()
    config = json.loads((folder / "bert_base_6layer_6conect.json").read_text())
    torch.save(
        VilbertForPreTraining(VilbertConfig.from_dict(config)).state_dict(), folder / "multi_task_model.bin"
    )
    with pytest.raises(VlmbenchError, match="pretrained_model.bin"):
        _model(pretrained=folder, **backbone).load()

    short = tmp_path / "three.json"
    short.write_text(json.dumps(["yes", "no", "red"]))
    with pytest.raises(VlmbenchError, match="has 3 answers but the VQA head"):
        _model(pretrained=assets["release"], answers=short, **backbone).load()


def test_backbone_runs_once_per_image(assets, tmp_path, monkeypatch):
    seen: list[tuple[int, ...]] = []
    original = ResNetRegionExtractor.extract_prepared

    def counting(self, items):
        seen.extend(tuple(item.pixels.shape) for item in items)
        return original(self, items)

    monkeypatch.setattr(ResNetRegionExtractor, "extract_prepared", counting)
    result = evaluate("vilbert", "abo_sample", model_args=_grid_args(assets), limit=8, batch_size=3,
                      num_workers=0, cache=False, progress=False, output_dir=tmp_path)  # fmt: skip
    assert result.status == "ok" and result.results["task"]["n_scored"] == 8
    images = {s["path"] for s in abo_rows()[:8]}
    assert len(images) == 2 and len(seen) == 2  # eight questions about two images
