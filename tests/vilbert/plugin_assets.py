"""Builds tiny ViLBERT release folders (random weights) for the plugin tests."""

from __future__ import annotations

import csv
import json
import pickle
import re
from pathlib import Path

import torch

from vlmbench_plugins.models.vilbert.config import NUM_VQA_ANSWERS
from vlmbench_plugins.models.vilbert.loading import save_safetensors
from vlmbench_plugins.models.vilbert.modeling import VilbertForVLTasks

from .conftest import small_config
from vlmbench_testing import SAMPLE_TASK

ABO_CSV = SAMPLE_TASK / "abo_sample.csv"
ABO_IMAGES = SAMPLE_TASK / "images"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def abo_rows() -> list[dict]:
    with open(ABO_CSV, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def vocab_tokens() -> list[str]:
    """The special tokens, punctuation and every word of the sample questions (uncased)."""
    words = sorted({w for row in abo_rows() for w in re.findall(r"[a-z0-9]+", row["question"].lower())})
    return [*SPECIAL_TOKENS, "?", ",", "'", "-", ".", *words]


def answer_list() -> list[str]:
    """3129 answers (the VQA head's size): every other answer of the sample task, then fillers, so
    that some references are in the vocabulary and some are not."""
    known = sorted({row["answer"].strip().lower() for row in abo_rows()})[::2]
    return known + [f"filler{i}" for i in range(NUM_VQA_ANSWERS - len(known))]


def build_release(folder: Path, weights_format: str = "safetensors", seed: int = 1) -> Path:
    """A folder laid out like the 12-in-1 release: weights, config JSON, vocab.txt and answer lists
    (trainval_label2ans.json and answers.pkl)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = vocab_tokens()
    # 2048-d regions as the checkpoints expect; a wider fusion so that answers differ between images
    config = small_config(
        vocab_size=len(tokens), v_feature_size=2048, bi_hidden_size=32, initializer_range=0.05
    )
    torch.manual_seed(seed)
    model = VilbertForVLTasks(config).eval()
    if weights_format == "safetensors":
        save_safetensors(model, folder / "multi_task_model.safetensors")
    else:
        torch.save(model.state_dict(), folder / "multi_task_model.bin")
    (folder / "bert_base_6layer_6conect.json").write_text(config.to_json_string(), encoding="utf-8")
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    answers = answer_list()
    (folder / "trainval_label2ans.json").write_text(json.dumps(answers), encoding="utf-8")
    (folder / "answers.pkl").write_bytes(pickle.dumps(answers))
    return folder


def build_backbone(path: Path, seed: int = 0) -> Path:
    """Random torchvision resnet50 weights saved as a plain state dict (read back weights-only)."""
    import torchvision

    torch.manual_seed(seed)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


# A region detector at a tiny config: the released yaml's structure (FPN, RPN, MLP head of 2048, the
# width ViLBERT reads) with an R-50 body a few channels wide and five classes.
TINY_DETECTOR_YAML = """\
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  BACKBONE:
    CONV_BODY: "R-50-FPN"
    OUT_CHANNELS: 8
  RPN:
    USE_FPN: True
    ANCHOR_STRIDE: (4, 8, 16, 32, 64)
    PRE_NMS_TOP_N_TEST: 1000
    POST_NMS_TOP_N_TEST: 1000
    FPN_POST_NMS_TOP_N_TEST: 1000
  ROI_HEADS:
    USE_FPN: True
  ROI_BOX_HEAD:
    POOLER_RESOLUTION: 7
    POOLER_SCALES: (0.25, 0.125, 0.0625, 0.03125)
    POOLER_SAMPLING_RATIO: 2
    FEATURE_EXTRACTOR: "FPN2MLPFeatureExtractor"
    RETURN_FC_FEATS: True
    PREDICTOR: "FPNPredictor"
    MLP_HEAD_DIM: 2048
    NUM_CLASSES: 5
  RESNETS:
    STRIDE_IN_1X1: False
    NUM_GROUPS: 1
    WIDTH_PER_GROUP: 4
    STEM_OUT_CHANNELS: 4
    RES2_OUT_CHANNELS: 8
SOLVER:
  BASE_LR: 0.01
"""


def build_detector(folder: Path, seed: int = 0) -> Path:
    """detectron_model.pth (random weights under "model", as the release stores them) and
    detectron_config.yaml at the tiny config."""
    from vlmbench_plugins.models.vilbert.detector.config import DetectorConfig
    from vlmbench_plugins.models.vilbert.detector.model import RegionDetector

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "detectron_config.yaml").write_text(TINY_DETECTOR_YAML, encoding="utf-8")
    torch.manual_seed(seed)
    model = RegionDetector(DetectorConfig.from_yaml(folder / "detectron_config.yaml"))
    torch.save({"model": model.state_dict(), "iteration": 1}, folder / "detectron_model.pth")
    return folder
