"""Hostile and broken model files through `vlmbench run`, with default DataLoader workers.

Every case ends without a traceback: what is missing or broken makes the model skipped with its reason
(exit 0, like a checkpoint that is not there); a pickle that would run code, a checkpoint of another
family and an unreadable ViLBERT feature file are one ``Error:`` line (exit 2). Nothing is unpickled
beyond tensors and arrays, and no feature file outside ``features_path`` is read.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmbench_testing import REPO, invoke_cli, run_cli, write_task

GROUP = "Hostile files"
RUN = ["--limit", "2", "--metrics", "exact_match", "--no-cache", "-q"]


class _RunsACommand:
    """Unpickling this runs a shell command (what a hostile weights file does)."""

    def __init__(self, marker: Path, call=os.system):
        self.marker, self.call = marker, call

    def __reduce__(self):
        return (self.call, (f"touch {self.marker}",))


def _copy(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*drop) if drop else None)
    return dst


def _run(out: Path, *args: str):
    # In this process: the subject is what the command does with a hostile folder (the same checks,
    # messages and exit codes as the console script), not the process.
    return invoke_cli(["run", *args, "-t", "abo_sample", "-o", str(out), *RUN])


def _clean(res, code: int) -> None:
    assert res.returncode == code, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]


def _error(res) -> str:
    lines = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, res.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoint) -> dict[str, Path]:
    return {name: tiny_checkpoint(name) for name in ("blip", "qwen2.5-vl", "smolvlm")}


@pytest.mark.slow
def test_broken_checkpoint_folders_are_skipped_with_their_reason(checkpoints, tmp_path, reliability):
    blip, qwen, smol = checkpoints["blip"], checkpoints["qwen2.5-vl"], checkpoints["smolvlm"]
    bad: dict[str, tuple[str, Path]] = {}  # fault -> (model, folder)

    def folder(name: str, model: str, base: Path | None = None, drop: tuple[str, ...] = ()) -> Path:
        path = _copy(base, tmp_path / name, drop) if base else tmp_path / name
        path.mkdir(exist_ok=True)
        bad[name.replace("-", " ")] = (model, path)
        return path

    folder("empty-folder", "qwen2.5-vl")
    (folder("config-not-json", "smolvlm", smol) / "config.json").write_text("{model_type: idefics3")
    (folder("config-a-json-list", "blip", blip) / "config.json").write_text("[1, 2]")
    (folder("config-not-utf8", "qwen2.5-vl", qwen) / "config.json").write_bytes(b'{"model_type": "\xff"}')
    (folder("config-nested-deeply", "smolvlm", smol) / "config.json").write_text("[" * 100_000)
    weights = folder("truncated-safetensors", "blip", blip) / "model.safetensors"
    weights.write_bytes((blip / "model.safetensors").read_bytes()[:1000])
    (folder("random-bytes-safetensors", "qwen2.5-vl", qwen) / "model.safetensors").write_bytes(
        os.urandom(4096)
    )
    (folder("garbage-tokenizer", "smolvlm", smol) / "tokenizer.json").write_text("not a tokenizer")
    empty_bin = folder("zero-byte-pickle-weights", "blip", blip, drop=("model.safetensors",))
    (empty_bin / "pytorch_model.bin").write_bytes(b"")

    # Three models per run: a skipped model does not stop the others.
    runs: list[list[str]] = []
    groups: dict[str, list[Path]] = {}
    for model, path in bad.values():
        groups.setdefault(model, []).append(path)
    for i in range(max(len(g) for g in groups.values())):
        args = []
        for model, paths in groups.items():
            if i < len(paths):
                args += ["-m", model, "-a", f"{model}:pretrained={paths[i]}"]
        runs.append(args)
    results = [_run(tmp_path / f"runs{i}", *args) for i, args in enumerate(runs)]
    reasons = {}
    for args, res in zip(runs, results, strict=True):
        _clean(res, 4)  # every model of these runs is skipped: nothing was evaluated
        for model in args[1::4]:
            line = next(
                x for x in res.stderr.splitlines() if x.startswith(f"{model}[") and "]: skipped:" in x
            )
            reasons[args[args.index(model) + 2].split("=", 1)[1]] = line
    for fault, (_, path) in bad.items():
        assert str(path) in reasons[str(path)], (fault, reasons[str(path)])
        assert "pretrained=PATH" in reasons[str(path)], (fault, reasons[str(path)])
    results_files = [json.loads(p.read_text()) for p in tmp_path.glob("runs*/*/*/results.json")]
    assert len(results_files) == len(bad) and all(r["status"] == "skipped" for r in results_files)
    reliability.record_each(
        GROUP, bad, "model skipped with the reason (exit 4 when no model ran)", prefix="checkpoint folder: "
    )


@pytest.mark.slow
def test_hostile_and_foreign_checkpoints_are_refused(checkpoints, tmp_path, reliability):
    marker = tmp_path / "executed"
    blip = checkpoints["blip"]
    evil = _copy(blip, tmp_path / "blip-evil-pickle", drop=("model.safetensors",))
    state = {k: v for k, v in torch.nn.Linear(2, 2).state_dict().items()}
    torch.save({**state, "payload": _RunsACommand(marker)}, evil / "pytorch_model.bin")
    cases = {
        "pickle weights that would run a command": (
            ["-m", "blip", "-a", f"pretrained={evil}"],
            "posix.system",
        ),
        "a BLIP folder given to qwen2.5-vl": (["-m", "qwen2.5-vl", "-a", f"pretrained={blip}"], "'blip'"),
        "a BLIP folder given to smolvlm": (["-m", "smolvlm", "-a", f"pretrained={blip}"], "'blip'"),
    }
    results = {name: _run(tmp_path / args[1], *args) for name, (args, _) in cases.items()}
    for name, res in results.items():
        _clean(res, 2)
        line = _error(res)
        assert cases[name][1] in line, (name, line)
    assert "refusing to load" in _error(results["pickle weights that would run a command"])
    assert not marker.exists()
    reliability.record_each(GROUP, cases, "one Error: line before any answer, exit 2; nothing executed")


def test_refusals_of_other_hostile_checkpoints(checkpoints, tmp_path, reliability):
    """More of the same classes, in process (each CLI run loads torch and transformers afresh)."""
    from vlmbench.errors import AssetMissingError, VlmbenchError

    from .conftest import create_model

    blip = checkpoints["blip"]
    marker = tmp_path / "executed"
    exec_pickle = _copy(blip, tmp_path / "exec", drop=("model.safetensors",))
    torch.save({"w": _RunsACommand(marker, call=exec)}, exec_pickle / "pytorch_model.bin")
    plain_pickle = _copy(blip, tmp_path / "plain-pickle", drop=("model.safetensors",))
    (plain_pickle / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _RunsACommand(marker)}))
    unknown = _copy(blip, tmp_path / "unknown-type")
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "evil"}))
    untyped = _copy(blip, tmp_path / "untyped")
    (untyped / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "model_type"}))
    config_folder = _copy(blip, tmp_path / "config-folder")
    (config_folder / "config.json").unlink()
    (config_folder / "config.json").mkdir()
    cases = {
        "pickle weights importing builtins.exec": (exec_pickle, VlmbenchError, "refusing to load"),
        "plain pickle (not a torch file) as weights": (plain_pickle, VlmbenchError, "refusing to load"),
        "config of an unknown model type": (unknown, VlmbenchError, "'evil'"),
        "config without a model type": (untyped, VlmbenchError, "None"),
        "config.json that is a folder": (config_folder, AssetMissingError, "cannot be read"),
    }
    for path, error, text in cases.values():
        model = create_model("blip", pretrained=path)
        with pytest.raises(error, match=text):
            model.load()
        assert not marker.exists()
    reliability.record_each(
        GROUP, cases, "refused or skipped with a clear reason", prefix="checkpoint folder: "
    )


# -- ViLBERT region features ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vilbert_release(tmp_path_factory) -> Path:
    from vilbert.plugin_assets import build_release

    return build_release(tmp_path_factory.mktemp("vilbert") / "release")


def _features(folder: Path, image_ids) -> Path:
    from vlmbench_plugins.models.vilbert.features import save_regions_npz

    folder.mkdir(parents=True, exist_ok=True)
    boxes = np.array([[0, 0, 100, 80], [40, 30, 200, 256]], dtype=np.float32)
    for i, image_id in enumerate(image_ids):
        features = np.random.default_rng(i).random((2, 2048), dtype=np.float32)
        save_regions_npz(folder / f"{image_id}.npz", features, boxes, 256, 256, source="test features")
    return folder


def _abo_ids() -> list[str]:
    from vilbert.plugin_assets import abo_rows

    return sorted({r["image_id"] for r in abo_rows()})


@pytest.mark.slow
def test_hostile_feature_file_is_refused(vilbert_release, tmp_path, reliability):
    marker = tmp_path / "executed"
    features = _features(tmp_path / "features", _abo_ids())
    for path in features.glob("*.npz"):  # every image: whichever the run reads first
        path.unlink()
        np.save(path.with_suffix(".npy"), np.array({"features": _RunsACommand(marker)}, dtype=object))
    args = f"pretrained={vilbert_release},features=precomputed,features_path={features}"
    res = _run(tmp_path / "runs", "-m", "vilbert", "-a", args)
    _clean(res, 4)  # every sample's features were refused: nothing was evaluated
    (results,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("results.json")]
    assert set(results["skipped_samples"]) == {"unreadable_features"}
    line = results["skipped_sample_examples"][0]
    assert "region features" in line and ".npy" in line and "posix.system" in line
    assert not marker.exists()
    reliability.record(GROUP, "ViLBERT .npy feature file whose pickle would run a command", 1,
                       "refused: its samples skipped as unreadable_features, naming the file; nothing executed")  # fmt: skip


@pytest.mark.slow
def test_feature_ids_cannot_leave_the_features_folder(vilbert_release, tmp_path, reliability):
    features = _features(tmp_path / "features", ["inside"])
    _features(tmp_path, ["outside"])  # a valid file, one level up: it must not be read
    abo = REPO / "tasks" / "abo_sample"
    image = next((abo / "images").rglob("*.jpg")).relative_to(abo / "images")
    rows = [{"image_id": "../outside", "path": str(image), "question": "What colour is it?", "answer": "red",
             "difficulty": 0}]  # fmt: skip
    task = write_task(
        tmp_path / "task", rows, extra={"dataset": {"path": "data.csv", "image_root": str(abo / "images")}}
    )
    args = f"pretrained={vilbert_release},features=precomputed,features_path={features}"
    res = run_cli(["run", "-m", "vilbert", "-a", args, "-t", str(task), "-o", str(tmp_path / "runs"), *RUN],
                  timeout=300)  # fmt: skip
    _clean(res, 4)  # its only sample was skipped
    (results,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("results.json")]
    assert results["skipped_samples"] == {"missing_features": 1}
    assert "no precomputed features for image '../outside'" in results["skipped_sample_examples"][0]
    reliability.record(GROUP, "ViLBERT feature id ../x escaping features_path", 1,
                       "not read: the sample is skipped as missing_features (no features for that id)")  # fmt: skip


def test_feature_files_that_cannot_be_read(tmp_path, reliability):
    """The reader's side of the same classes, in process."""
    from vlmbench.errors import SampleError
    from vlmbench_plugins.models.vilbert.features import NumpyFeatureReader

    folder = _features(tmp_path / "features", ["good", "no-keys"])
    np.savez(folder / "no-keys.npz", something=np.zeros(3))
    np.save(folder / "floats.npy", np.zeros((2, 2048), dtype=np.float32))
    good = (folder / "good.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(good[: len(good) // 2])
    (folder / "garbage.npz").write_bytes(os.urandom(512))
    np.save(folder / "list.npy", np.array([1, 2], dtype=object), allow_pickle=True)
    (folder / "empty.npy").write_bytes(b"")
    _features(tmp_path, ["secret"])
    (folder / "link.npz").symlink_to(tmp_path / "secret.npz")
    reader = NumpyFeatureReader(folder)
    assert reader["good"].num_regions == 3
    broken = ["no-keys", "floats", "truncated", "garbage", "list", "empty"]
    for image_id in broken:
        with pytest.raises(SampleError, match=f"{image_id}.np[yz]"):
            reader[image_id]
    for image_id in ("../secret", str(tmp_path / "secret"), "link"):  # up, absolute, a link out
        assert image_id not in reader
        with pytest.raises(KeyError):
            reader[image_id]
    reliability.record(GROUP, "ViLBERT feature files: missing keys, plain arrays, truncated, garbage, empty",
                       len(broken), "one error naming the file")  # fmt: skip
    reliability.record(GROUP, "ViLBERT feature ids going up, absolute, or through a link out of the folder",
                       3, "treated as absent; nothing outside features_path is read")  # fmt: skip
