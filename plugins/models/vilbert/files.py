"""The files a ViLBERT run needs — weights, config, vocabulary, answer list, and the region detector,
grid backbone or precomputed features — found from the model's arguments, with what is missing and how
to provide each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .detector.loading import DetectorFiles, find_detector_files

WEIGHT_NAMES = ("multi_task_model.safetensors", "multi_task_model.bin")
CONFIG_NAMES = ("bert_base_6layer_6conect.json", "vilbert_config.json")
VOCAB_NAMES = ("vocab.txt",)
ANSWER_NAMES = ("trainval_label2ans.pkl", "trainval_label2ans.json", "answers.json", "answers.txt")

#: Where each file comes from (public sources), as a missing-file message says it.
SOURCES = {
    "weights": "https://dl.fbaipublicfiles.com/vilbert-multi-task/multi_task_model.bin",
    "config": "config/bert_base_6layer_6conect.json of github.com/facebookresearch/vilbert-multi-task",
    "vocab": "vocab.txt of the Hugging Face model google-bert/bert-base-uncased",
    "answers": "datasets/VQA/cache/trainval_label2ans.pkl in https://dl.fbaipublicfiles.com/vilbert-multi-task/"
    "datasets.tar.gz",
    "backbone": "torchvision's ImageNet weights, e.g. https://download.pytorch.org/models/resnet152-394f9c45.pth",
}


def backbone_names(arch: str) -> tuple[str, ...]:
    """File names of a torchvision backbone looked up in the checkpoint folder."""
    return (f"{arch}.safetensors", f"{arch}.pth")


@dataclass(frozen=True)
class Files:
    """Where each file was found; ``missing`` says, per file that was not, how to provide it."""

    weights: Path | None
    config: Path | None
    vocab: Path | None
    answers: Path | None
    backbone: Path | None
    features: Path | None
    missing: tuple[str, ...]
    detector: DetectorFiles | None = None  # features=detector


def _first_file(folder: Path, names: Sequence[str]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def find_files(v: dict[str, Any]) -> Files:
    """Where each file the arguments ``v`` point to (or imply) is; what is missing and how to provide it."""
    missing: list[str] = []
    weights = folder = None
    if not v["pretrained"]:
        missing.append(
            f"the checkpoint ({' or '.join(WEIGHT_NAMES[::-1])} of the 12-in-1 release): pass "
            "--model-args pretrained=PATH, a folder holding it with the config JSON, vocab.txt and "
            "trainval_label2ans.pkl"
        )
    else:
        given = Path(v["pretrained"]).expanduser()
        if given.is_file():
            weights, folder = given, given.parent
        elif given.is_dir():
            folder = given
            weights = _first_file(folder, WEIGHT_NAMES)
            if weights is None:
                missing.append(
                    f"{' or '.join(WEIGHT_NAMES[::-1])} in {folder} (the 12-in-1 checkpoint, from "
                    f"{SOURCES['weights']}; or give the weights file itself as pretrained=FILE)"
                )
        else:
            missing.append(
                f"pretrained={given} does not exist: pass --model-args pretrained=PATH, a folder holding "
                f"{WEIGHT_NAMES[1]}, the config JSON, vocab.txt and trainval_label2ans.pkl"
            )
    config = _first_file(folder, CONFIG_NAMES) if folder else None
    if v["config"]:
        config = Path(v["config"]).expanduser()
        if not config.is_file():
            missing.append(f"config={config} does not exist (the ViLBERT config JSON)")
            config = None
    vocab = _named_or_found(
        v, "vocab", folder, VOCAB_NAMES, f"the bert-base-uncased WordPiece vocabulary, from {SOURCES['vocab']}",
        missing,
    )  # fmt: skip
    answers = _named_or_found(
        v, "answers", folder, ANSWER_NAMES, f"the VQA answer list in the head's row order, from {SOURCES['answers']}",
        missing,
    )  # fmt: skip
    backbone = features = detector = None
    if v["features"] == "detector":
        detector = find_detector_files(v["detector"], v["detector_config"])
        missing.extend(detector.missing)
    elif v["features"] == "grid":
        # In the folder: <arch>.safetensors, <arch>.pth or torchvision's own file name <arch>-<hash>.pth.
        names = (*backbone_names(v["backbone"]), *sorted(p.name for p in folder.glob(f"{v['backbone']}-*.pth"))) if folder else ()  # fmt: skip
        backbone = _named_or_found(
            v, "backbone_weights", folder, names,
            f"torchvision {v['backbone']} weights for features=grid, from {SOURCES['backbone']}", missing,
        )  # fmt: skip
    else:
        features = Path(v["features_path"]).expanduser()
        if not features.exists():
            missing.append(
                f"features_path={features} does not exist (an LMDB or a folder of .npz/.npy files)"
            )
            features = None
    return Files(weights, config, vocab, answers, backbone, features, tuple(missing), detector)


def _named_or_found(
    v: dict[str, Any], arg: str, folder: Path | None, names: Sequence[str], what: str, missing: list[str]
) -> Path | None:
    given = v[arg]
    if given:
        path = Path(given).expanduser()
        if path.is_file() or (arg == "vocab" and path.is_dir()):
            return path
        missing.append(f"{arg}={path} does not exist ({what})")
        return None
    if names and folder is None:
        return None  # the missing checkpoint folder is reported already, with what it should hold
    found = _first_file(folder, names) if folder else None
    if found is None:
        looked = f"{' or '.join(names)} in {folder}, or " if names and folder else ""
        missing.append(f"{what}: {looked}--model-args {arg}=PATH")
    return found
